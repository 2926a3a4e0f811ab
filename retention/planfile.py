"""Reviewed plans as data: written by ``retention plan --out plan.json``, applied by ``run --plan``.

The plan is the ``plan`` object of a dry run's JSON report (so the file a
reviewer reads is the file that is applied)::

    {"format": "retention-plan", "version": 1,
     "policy": {"path": "policies.toml", "sha256": "..."},
     "now": "2026-06-15T12:00:00+00:00", "only": [],
     "rules": [{"rule": "logs-purge", "action": "delete", "table": "shop.logs",
                "predicate_sha256": "...",            # SHA-256 of the rule's compiled work predicate
                "inputs": {"cutoff_1": "2026-06-14 12:00:00", ...},   # its bound parameters
                "due": 120, "protected": 20, "touch": 100, "guard": "ok"}]}

Applying it runs the same rules at the same ``now`` and touches at most
``touch`` rows per rule.  A different policy file (by SHA-256), a rule whose
predicate no longer compiles to the same SQL and inputs, or a ``--now`` that
differs is refused (exit 2).  A rule with more rows to touch now than the plan
counted, beyond ``--max-drift`` (rows, or a percentage of the plan's count;
default 0), is refused (``status: plan_drifted``, exit 3) and touches nothing.

The plan also lists the open erasure requests (``"requests"``: reference,
keyed hash of the subject, and, in a simulated plan, the rows the erasure
would change).  Applying it fulfils exactly those: a request filed since is
left for the next plan, one whose subject differs or whose erasure would
change more rows than counted (beyond the drift) is rolled back and drifts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from retention.errors import ConfigError
from retention.plan import RulePlan
from retention.report.model import RuleOutcome

FORMAT = "retention-plan"
VERSION = 1


def predicate(plan: RulePlan, dialect) -> tuple[str, dict]:
    """SHA-256 of the rule's compiled work predicate, and its bound inputs (as text)."""
    compiled = plan.work.compile(dialect=dialect)
    inputs = {k: (v.isoformat() if isinstance(v, datetime) else str(v)) for k, v in compiled.params.items()}
    return hashlib.sha256(str(compiled).encode("utf-8")).hexdigest(), inputs


def document(report, plans: list[RulePlan], dialects: dict, only: list[str] | None) -> dict:
    """The plan a dry run's report carries (see the module docstring)."""
    by_name = {p.rule.name: p for p in plans}
    rules = []
    for out in report.rules:
        p = by_name.get(out.rule)
        sha, inputs = predicate(p, dialects[p.table.db]) if p is not None else (None, {})
        rules.append({"rule": out.rule, "action": out.action, "table": out.table, "predicate_sha256": sha,
                      "inputs": inputs, "due": out.due, "protected": out.protected_total,
                      "touch": out.guard.rows if out.status == "guard_tripped" else out.touch,
                      "guard": out.guard.state, "status": out.status})
    # the open requests a run of this plan fulfils (none when --only limits it to rules); their rows
    # are known only when the plan was simulated
    requests = [] if only else [
        {"request": r["request"], "subject": r["subject"], "subject_hash": r["subject_hash"],
         "rows": sum(r["erased"].values()) if report.simulated else None}
        for r in report.requests if r.get("open") and r["subject_hash"]]
    return {"format": FORMAT, "version": VERSION,
            "policy": {"path": report.config_path, "sha256": report.config_sha256},
            "now": report.now.isoformat(), "only": list(only or []), "rules": rules, "requests": requests}


@dataclass(frozen=True)
class Drift:
    rows: int = 0
    percent: float | None = None

    def allows(self, planned: int, now: int) -> bool:
        extra = now - planned
        if self.percent is not None:
            return extra <= planned * self.percent / 100
        return extra <= self.rows


def parse_drift(text: str | None) -> Drift:
    """``"10"`` (rows) or ``"5%"`` (of the plan's count); None is 0."""
    if text is None or text == "":
        return Drift()
    try:
        if text.endswith("%"):
            value = float(text[:-1])
            if value < 0:
                raise ValueError
            return Drift(percent=value)
        value = int(text)
        if value < 0:
            raise ValueError
        return Drift(rows=value)
    except ValueError:
        raise ConfigError(f"'{text}' is not a row count or a percentage (e.g. 10 or 5%)", where="--max-drift") \
            from None


@dataclass
class ReviewedPlan:
    path: str
    doc: dict
    sha256: str
    drift: Drift

    @property
    def now(self) -> datetime:
        return datetime.fromisoformat(self.doc["now"])

    @property
    def rules(self) -> dict[str, dict]:
        return {r["rule"]: r for r in self.doc["rules"]}

    @property
    def requests(self) -> dict[str, dict]:
        """The erasure requests the plan lists, by reference (``dsr#12``); a plan without any lists none."""
        return {r["request"]: r for r in self.doc.get("requests", [])}

    @property
    def only(self) -> list[str]:
        return [r["rule"] for r in self.doc["rules"]]

    def check_policy(self, config) -> None:
        if self.doc["policy"]["sha256"] != config.sha256:
            raise ConfigError(f"the policy file changed since the plan was made (plan: sha256 "
                              f"{self.doc['policy']['sha256'][:12]}…, now {config.sha256[:12]}…): make and review "
                              f"a new plan", file=self.path, where="--plan")

    def check_rules(self, plans: list[RulePlan], dialects: dict) -> None:
        """The same rules, compiling to the same SQL with the same inputs, or exit 2."""
        mine = self.rules
        names = [p.rule.name for p in plans]
        if sorted(names) != sorted(mine):
            raise ConfigError(f"the plan's rules ({', '.join(sorted(mine))}) are not the rules that would run now "
                              f"({', '.join(sorted(names))})", file=self.path, where="--plan")
        for p in plans:
            sha, inputs = predicate(p, dialects[p.table.db])
            if (sha, inputs) != (mine[p.rule.name]["predicate_sha256"], mine[p.rule.name]["inputs"]):
                raise ConfigError(f"rule '{p.rule.name}' no longer selects rows as the plan did (the schema or "
                                  f"the code changed since): make and review a new plan", file=self.path,
                                  where="--plan")

    def limit(self, plan: RulePlan, out: RuleOutcome) -> None:
        """Refuse the rule if it drifted beyond the allowance, else cap it at what the plan counted."""
        planned = int(self.rules[plan.rule.name]["touch"])
        if out.status != "ok":
            return
        if not self.drift.allows(planned, out.touch):
            out.status = "plan_drifted"
            out.error = (f"{out.touch} rows to touch now, the reviewed plan counted {planned} "
                         f"(beyond --max-drift): nothing touched; review a new plan")
            out.remaining, out.touch = out.touch, 0
            out.cascades = [type(c)(c.table, c.action, c.via, 0) for c in out.cascades]
            return
        out.guard.rows = min(out.guard.rows, planned)


def load(path: str, max_drift: str | None = None) -> ReviewedPlan:
    """Read and check a plan file's shape; raise ConfigError (exit 2) naming the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read the plan: {e.strerror}", file=path, where="--plan") from None
    try:
        doc = json.loads(raw)
        doc = doc.get("plan", doc) if isinstance(doc, dict) else doc     # a whole report, or its plan
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a retention plan (write one with `retention plan --out plan.json`)")
        if doc.get("version") != VERSION:
            raise ValueError(f"plan format version {doc.get('version')!r}; this release reads version {VERSION}")
        datetime.fromisoformat(doc["now"])
        for r in doc["rules"]:
            int(r["touch"]), str(r["rule"]), r["inputs"]     # noqa: B018 - shape check
        doc["policy"]["sha256"]    # noqa: B018
        for r in doc.get("requests", []):
            str(r["request"]), str(r["subject_hash"]), None if r["rows"] is None else int(r["rows"])  # noqa: B018
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"not a valid plan: {e}", file=path, where="--plan") from None
    return ReviewedPlan(path, doc, hashlib.sha256(raw).hexdigest(), parse_drift(max_drift))
