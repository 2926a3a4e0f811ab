"""The retention schedule: the policy file as a document for people (``retention schedule``).

A privacy officer, an auditor or a regulator asks "what do you keep, how
long, why, and what happens then?".  The answer is already in
``policies.toml``; this module writes it out as tables, in the order the
file gives: the periods (rules), the minimum periods the law sets (floors),
what holds data back (holds), how erasure requests are answered and who is
told, what happens to related records, and how long backups keep erased
data.  It reads the policy file only, never a database: a schedule can be
written where the database's credentials are not at hand.

One model (:class:`Schedule`), two renderers: markdown and HTML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from retention.config import Config, Condition, RuleConfig
from retention.durations import Duration
from retention.log import mask_text

FORMATS = ("markdown", "html")


@dataclass
class Section:
    """One table of the schedule: a title, what it means, the rows (plain text cells)."""

    title: str
    intro: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    #: a line after the table
    outro: str = ""


@dataclass
class Schedule:
    config_path: str
    config_sha256: str
    timezone: str
    generated: datetime
    sections: list[Section]


# -- phrases -----------------------------------------------------------------

def _period(length: Duration, clock: str) -> str:
    """'180d after created_at', or 'from closed_at' for a period of zero."""
    if not (length.months or length.days or length.seconds):
        return f"from {clock} (as soon as it is set)"
    return f"{length} after {clock}"


def _value(v) -> str:
    """A policy value as the file writes it (booleans lowercase)."""
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _condition(column: str, c: Condition) -> list[str]:
    parts = []
    for name, op in (("eq", "="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">=")):
        value = getattr(c, name)
        if value is not None:
            parts.append(f"{column} {op} {_value(value)}")
    if c.is_null is not None:
        parts.append(f"{column} is {'' if c.is_null else 'not '}empty")
    if c.in_ is not None:
        parts.append(f"{column} in ({', '.join(map(_value, c.in_))})")
    if c.not_in is not None:
        parts.append(f"{column} not in ({', '.join(map(_value, c.not_in))})")
    return parts


def _where(where: dict[str, Condition], where_sql: str | None = None) -> str:
    """'where status = closed', or '' when every row counts."""
    parts = [p for column, c in where.items() for p in _condition(column, c)]
    if where_sql:
        parts.append(f"SQL: {' '.join(where_sql.split())}")
    return ("where " + " and ".join(parts)) if parts else ""


def _strategy(spec: str | dict) -> str:
    """'hash', 'mask (keep_last 4)', 'constant (value deleted user)'."""
    if isinstance(spec, str):
        return spec
    params = ", ".join(f"{k} {v}" for k, v in spec.items() if k != "strategy")
    return spec.get("strategy", "?") + (f" ({params})" if params else "")


def _then(rule: RuleConfig) -> str:
    if rule.action == "delete":
        return "deleted"
    if rule.action == "restrict":
        return f"restricted: kept, beyond use ({rule.restrict_column} set)"
    columns = "; ".join(f"{c}: {_strategy(s)}" for c, s in rule.columns.items())
    check = (f"; every combination of {', '.join(rule.check.quasi_identifiers)} shared by at least "
             f"{rule.check.k} rows (checked after each run)") if rule.check else ""
    return f"anonymized ({columns}){check}"


def _data(table: str, columns: list[str] | None = None, where: str = "") -> str:
    text = table + (f": {', '.join(columns)}" if columns else "")
    return text + (f"; {where}" if where else "")


_PARENT = {"delete": "deleted with its parent", "detach": "kept; its link to the parent is cleared",
           "block": "its parent is kept while it exists"}

_KEEPS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def _rotation(b) -> str:
    parts = [f"{k} {getattr(b, f'keep_{k}')}" for k in _KEEPS if getattr(b, f"keep_{k}") is not None]
    parts += [f"all within {getattr(b, f'keep_within{s}')}" + (f" ({s[1:]})" if s else "")
              for s in ("", "_hourly", "_daily", "_weekly", "_monthly", "_yearly")
              if getattr(b, f"keep_within{s}") is not None]
    if b.keep_tags:
        parts.append("tagged " + " or ".join("+".join(t) for t in b.keep_tags))
    if b.max_age is not None:
        parts.append(f"none older than {b.max_age}")
    return "keep " + ", ".join(parts) if parts else "no rotation rules"


# -- the model ---------------------------------------------------------------

def build(config: Config, *, now: datetime, only: list[str] | None = None) -> Schedule:
    """The schedule of ``config``'s policy file (``only``: just these rules)."""
    m = config.model
    rules = [r for r in m.rules if not only or r.name in only]
    sections = [Section(
        "Retention periods",
        "What is kept, how long, and what happens then. A legal hold keeps data past any period; a "
        "statutory minimum (below) keeps it at least as long as it says: hold > minimum > period.",
        ["data", "kept until", "then", "basis", "rule"],
        [[_data(r.table, list(r.columns) if r.action == "anonymize" else None, _where(r.where, r.where_sql)),
          _period(r.after, r.clock), _then(r), r.basis or "-",
          r.name + ("" if r.enabled else " (disabled: not enforced)")] for r in rules])]
    if m.floors:
        sections.append(Section(
            "Minimum retention",
            "Records a law requires to be kept: no rule, request or cascade deletes or anonymizes them before "
            "the end of the period (only the columns listed, where a floor lists columns).",
            ["data", "kept at least", "basis", "floor"],
            [[_data(f.table, f.columns, _where(f.where)), _period(f.keep, f.clock), f.basis or "-", f.name]
             for f in m.floors]))
    if m.holds:
        sections.append(Section(
            "Legal holds",
            "While a subject is held, none of their data in any table is deleted or anonymized, whatever its "
            "period.",
            ["hold", "register", "held", "basis"],
            [[h.name, f"{h.table} ({h.subject} in {h.subject_column})",
              _where(h.active_where).replace("where ", "while ", 1) or "while the register lists them",
              h.basis or "-"] for h in m.holds]))
    if m.requests:
        recipients = ", ".join(r.name for r in m.recipients)
        sections.append(Section(
            "Erasure requests",
            "Requests to erase a person's data, and the deadline each is answered within. Data a hold or a "
            "minimum protects is kept, and the answer says until when.",
            ["request", "answered within", "then", "queue"],
            [[q.name, f"{q.deadline} of receipt ({q.received_column})",
              ("all of the subject's data deleted" if q.action == "delete" else "the subject's data anonymized")
              + (f"; {', '.join(q.keep)} kept as is" if q.keep else ""),
              f"{q.table} ({q.subject} in {q.subject_column})"] for q in m.requests],
            outro=(f"Each erasure is passed on to: {recipients}." if recipients
                   else "No recipients are told of erasures ([[recipients]] lists none).")))
    if m.tables:
        rows = []
        for table, t in m.tables.items():
            if isinstance(t.on_parent_delete, dict):
                rows += [[table, f"via {fk}: {_PARENT[action]}"] for fk, action in t.on_parent_delete.items()]
            elif "on_parent_delete" in t.model_fields_set:
                rows.append([table, _PARENT[t.on_parent_delete]])
        if rows:
            sections.append(Section(
                "Related records",
                "When a row is deleted, the rows of other tables that refer to it. Tables not listed keep their "
                "parent (it is reported, never deleted silently).",
                ["table", "when the row it refers to is deleted"], rows))
    if m.backups:
        sections.append(Section(
            "Backups",
            "Erased data stays in the backups taken before the erasure until they are rotated out.",
            ["backup set", "location", "rotation", "erased data gone"],
            [[b.name, mask_text(b.location), _rotation(b),
              f"within {b.max_age} of the erasure" if b.max_age is not None
              else "no date can be promised (the set has no max_age)"] for b in m.backups]))
    return Schedule(config.path, config.sha256, m.settings.timezone, now, sections)


# -- renderers -----------------------------------------------------------------

def _lead(s: Schedule) -> list[tuple[str, str]]:
    return [("policy file", f"{s.config_path} (sha256 {s.config_sha256[:12]})"),
            ("time zone", s.timezone), ("as of", s.generated.date().isoformat())]


def render_markdown(s: Schedule) -> str:
    from retention.report.markdown import cell as md_cell, table
    from retention.report.text import clean

    def cell(text: str) -> str:      # credentials masked, control characters shown, pipes escaped
        return md_cell(clean(text))
    out = ["# Retention schedule", ""]
    out += [f"- **{k}:** {cell(v)}" for k, v in _lead(s)] + [""]
    for sec in s.sections:
        out += [f"## {sec.title}", "", cell(sec.intro), ""]
        out += table([cell(h) for h in sec.header], [[cell(c) for c in row] for row in sec.rows])
        out += ["", cell(sec.outro), ""] if sec.outro else [""]
    return "\n".join(out).rstrip("\n") + "\n"


def render_html(s: Schedule) -> str:
    from retention.report.html import esc, facts, page, table
    body = ["<h1>Retention schedule</h1>", facts([(k, esc(v)) for k, v in _lead(s)])]
    for sec in s.sections:
        body += [f"<h2>{esc(sec.title)}</h2>", f"<p>{esc(sec.intro)}</p>",
                 table([esc(h) for h in sec.header], [[esc(c) for c in row] for row in sec.rows])]
        if sec.outro:
            body.append(f"<p>{esc(sec.outro)}</p>")
    return page("Retention schedule", body)


def render(s: Schedule, fmt: str) -> str:
    """Render the schedule in one of :data:`FORMATS`."""
    if fmt == "html":
        return render_html(s)
    if fmt == "markdown":
        return render_markdown(s)
    raise ValueError(f"unknown schedule format '{fmt}' (choose from {', '.join(FORMATS)})")
