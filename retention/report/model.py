"""The report data model: what a plan found or a run did, per rule.

A dry-run and a run produce the same model; ``Report.dry_run`` tells which.
``Report.to_dict()`` is the JSON contract documented in the README
(``schema_version`` 1); add fields freely, never rename or drop one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

FORECAST_WINDOWS = ("7d", "30d", "90d", "365d")


@dataclass
class Protection:
    """Rows a rule would have touched but something protected.

    ``kind`` is ``hold`` (a legal hold), ``floor`` (a statutory minimum) or
    ``children`` (child rows whose ``on_parent_delete`` is ``block``; ``name``
    is then the child table).  Each protected row is counted once, under the
    first protector in precedence order: holds, then floors, then children.
    """

    kind: str
    name: str
    rows: int


@dataclass
class Cascade:
    """Rows in another table that a delete reaches through foreign keys."""

    table: str
    action: str          # delete | detach
    via: str             # "child_table.fk_column -> parent_table"
    rows: int


@dataclass
class NotDone:
    """Rows the rule needed to act on and could not, and why (never their values).

    ``reason`` is ``cancelled`` (a trigger or rule in the database made the
    delete or update do nothing: the rows are still there), ``unreadable`` (a
    stored value the job cannot read) or ``refused`` (a value the strategy
    cannot handle).  These rows are part of ``remaining``.
    """

    reason: str
    rows: int
    detail: str = ""


@dataclass
class PartitionOutcome:
    """A whole partition of the rule's table, detached (and dropped) instead of deleted row by row.

    ``status`` is ``would drop`` / ``would detach`` (dry run), ``dropped`` /
    ``detached`` (run; a detached partition is left as a table of that name),
    or ``kept`` (``reason`` says why: its rows went row by row).  ``rows`` is
    how many rows it held, all due and none protected; they count in ``touch``.
    """

    partition: str        # "shop.payments_2020_01"
    action: str           # drop | detach
    rows: int
    status: str
    reason: str = ""


@dataclass
class Guard:
    state: str = "ok"                 # ok | tripped | allowed (tripped, but --allow-large)
    max_rows: int | None = None
    max_fraction: float | None = None
    table_rows: int = 0
    rows: int = 0                     # rows the rule would touch, which the limits were checked against
    #: a shard: what the whole rule would touch, which the limits were checked against instead (rows is the shard's)
    rule_rows: int | None = None


@dataclass
class RuleOutcome:
    rule: str
    action: str
    table: str
    basis: str = ""
    status: str = "ok"                # ok | failed | guard_tripped | incomplete (see not_done) | check_failed
    due: int = 0                      # rows whose clock and conditions make them due
    protected: list[Protection] = field(default_factory=list)
    touch: int = 0                    # would touch (dry run) / touched (run); 0 when a guard trips
    unchanged: int = 0                # due and unprotected, but already done (restricted, marked, anonymized)
    remaining: int = 0                # needed the action but were not touched: the guard tripped or the rule failed
    cascades: list[Cascade] = field(default_factory=list)
    #: part of ``remaining``: rows the database or a strategy kept the rule from finishing
    not_done: list[NotDone] = field(default_factory=list)
    #: due rows whose clock the job cannot represent (-infinity, BC, year > 9999): not in oldest_clock
    unreadable_clocks: int = 0
    #: the instant each row's clock was compared with (``now - after``); None when the period
    #: reaches past an end of the calendar (then nothing, or every started clock, is due)
    cutoff: datetime | None = None
    oldest_clock: datetime | None = None
    forecast: dict[str, int] = field(default_factory=dict)
    guard: Guard = field(default_factory=Guard)
    kept_columns: list[str] = field(default_factory=list)   # anonymize: columns a floor kept
    batches: int = 0
    #: dry run only: earlier rules that change a table this rule reaches; in a run they act first,
    #: so this rule's numbers may come out lower (``--simulate`` gives the exact combined numbers)
    overlaps: list[str] = field(default_factory=list)
    error: str | None = None
    duration_seconds: float = 0.0
    statements: list[str] = field(default_factory=list)
    #: ``partitions = "drop" | "detach"``: whole partitions taken instead of their rows (part of ``touch``)
    partitions: list[PartitionOutcome] = field(default_factory=list)
    #: ``[rules.check]``: k, quasi_identifiers, evaluated, passed, smallest_class, classes, rows
    #: (retention.execute.kanonymity); not evaluated by a plain dry run.  None: the rule has no check
    check: dict | None = None

    @property
    def protected_total(self) -> int:
        return sum(p.rows for p in self.protected)

    @property
    def cascaded_total(self) -> int:
        return sum(c.rows for c in self.cascades)

    @property
    def not_done_total(self) -> int:
        return sum(n.rows for n in self.not_done)

    def add_not_done(self, reason: str, rows: int, detail: str) -> None:
        """Count ``rows`` under ``reason``; a rule with rows not done is ``incomplete``."""
        if rows <= 0:
            return
        for n in self.not_done:
            if n.reason == reason:
                n.rows += rows
                break
        else:
            self.not_done.append(NotDone(reason, rows, detail))
        if self.status == "ok":
            self.status = "incomplete"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["oldest_clock"] = self.oldest_clock.isoformat() if self.oldest_clock else None
        d["cutoff"] = self.cutoff.isoformat() if self.cutoff else None
        d["protected_total"] = self.protected_total
        d["cascaded_total"] = self.cascaded_total
        d["not_done_total"] = self.not_done_total
        return d


@dataclass
class Report:
    run_id: str
    dry_run: bool
    now: datetime
    config_path: str
    config_sha256: str
    rules: list[RuleOutcome] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    show_sql: bool = False
    simulated: bool = False           # dry run executed in a rolled-back transaction: exact run numbers
    #: the signal that stopped the run ("SIGTERM", "SIGINT"); the rules after the one it stopped are in skipped
    interrupted: str | None = None
    skipped: list[str] = field(default_factory=list)
    #: failures outside any one rule (the audit log could not be written, a database could not be reached)
    errors: list[str] = field(default_factory=list)
    #: the audit log's head after this run's last entry: (seq, SHA-256); see ``retention audit verify --head``
    audit_seq: int = 0
    audit_head: str | None = None
    #: dry runs: the plan ``retention run --plan`` can apply (retention.planfile); a run: the plan it applied
    plan: dict | None = None
    #: erasure requests (retention.requests.fulfil.describe): deadline, urgency, what was erased or protected
    requests: list[dict] = field(default_factory=list)
    #: ledger entries this run wrote (retention.ledger.LedgerEntry.to_dict)
    ledger: list[dict] = field(default_factory=list)
    #: a run's delivery round to the recipients (retention.recipients.Delivery.to_dict)
    notifications: dict | None = None
    #: ``"I/N"`` for shard I of N of a sharded run (retention.shards), None for a whole run
    shard: str | None = None

    def requests_summary(self) -> dict:
        """Counts over ``requests``: open, overdue, due within 3 days, done and partial."""
        return {"total": len(self.requests),
                "open": sum(r["status"] in ("pending", "partial") for r in self.requests),
                "overdue": sum(r["urgency"] == "overdue" for r in self.requests),
                "due_soon": sum(r["urgency"] == "due_soon" for r in self.requests),
                "partial": sum(r["status"] == "partial" for r in self.requests),
                "failed": sum(bool(r.get("error")) for r in self.requests),
                "incomplete": sum(bool(r.get("not_done")) for r in self.requests),
                "skipped": sum(bool(r.get("skipped")) for r in self.requests),
                "plan_drifted": sum(bool(r.get("plan_drifted")) for r in self.requests)}

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130 if self.interrupted == "SIGINT" else 143
        if self.errors or any(r.status in ("failed", "incomplete", "check_failed") for r in self.rules):
            return 1
        if any(r.get("not_done") for r in self.requests):      # the database kept rows a request erases
            return 1
        if any(r.status in ("guard_tripped", "plan_drifted") for r in self.rules) \
                or any(r.get("plan_drifted") for r in self.requests):
            return 3
        return 0

    def to_dict(self) -> dict:
        return {
            "schema_version": 1,
            "run_id": self.run_id,
            "mode": ("simulation" if self.simulated else "dry-run") if self.dry_run else "run",
            "dry_run": self.dry_run,
            "simulated": self.simulated,
            "now": self.now.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "config": {"path": self.config_path, "sha256": self.config_sha256},
            "rules": [r.to_dict() for r in self.rules],
            "totals": {
                "rules": len(self.rules),
                "failed": sum(r.status == "failed" for r in self.rules),
                "guard_tripped": sum(r.status == "guard_tripped" for r in self.rules),
                "incomplete": sum(r.status == "incomplete" for r in self.rules),
                "check_failed": sum(r.status == "check_failed" for r in self.rules),
                "due": sum(r.due for r in self.rules),
                "protected": sum(r.protected_total for r in self.rules),
                "touch": sum(r.touch for r in self.rules),
                "cascaded": sum(r.cascaded_total for r in self.rules),
            },
            "interrupted": self.interrupted,
            "skipped": list(self.skipped),
            "errors": list(self.errors),
            "audit": {"seq": self.audit_seq, "head": self.audit_head},
            "exit_code": self.exit_code,
            "plan": self.plan,
            "requests": {**self.requests_summary(), "items": list(self.requests), "ledger": list(self.ledger),
                         "notifications": self.notifications},
            "shard": self.shard,
        }
