"""The report for people reading a terminal: an aligned table, then details.

Layout::

    RETENTION DRY RUN (nothing was changed)
    now     2025-06-01T12:00:00+00:00
    run id  r-42
    config  policies.toml (sha256 3f9a0c1d2e4b)

    rule              action  table               due  protected  would touch  unchanged  remaining  cascaded  oldest clock  status
    ----------------  ------  ----------------  -----  ---------  -----------  ---------  ---------  --------  ------------  ------
    access-logs-180d  delete  shop.access_logs  1,200         45        1,155          0          0         0  2024-11-02    ok

    access-logs-180d
      basis      Server logs kept 180 days for security
      cutoff     2024-12-03T12:00:00+00:00 (due: clock at or before it)
      protected  45: hold litigation 12, floor ecommerce-law-3y 33
      forecast   next 7d 10, 30d 45, 90d 120, 365d 800

    totals: 1 rule, 1,200 due, 45 protected, 1,155 would touch, 0 cascaded
    exit 0: success (dry run: nothing was changed)

Columns are aligned by display width (East Asian wide characters count two
cells), so names in any script line up.  No colour: the output is often piped
into a file or an e-mail.

The phrase helpers (``exit_summary``, ``describe_*``) are shared with the
markdown renderer so both say the same thing in the same words.
"""

from __future__ import annotations

import re

import unicodedata

from retention.log import mask_text
from retention.report.model import FORECAST_WINDOWS, Report, RuleOutcome

STATUS_LABEL = {"ok": "ok", "failed": "FAILED", "guard_tripped": "GUARD TRIPPED", "incomplete": "INCOMPLETE",
                "interrupted": "INTERRUPTED", "plan_drifted": "PLAN DRIFTED",
                "check_failed": "CHECK FAILED"}


# -- width-aware alignment ---------------------------------------------------

def display_width(s: str) -> int:
    """Terminal cells ``s`` occupies: wide/fullwidth characters take two, combining marks none."""
    width = 0
    for ch in s:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf", "Cc"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def pad(s: str, width: int, *, right: bool = False) -> str:
    """``s`` padded with spaces to ``width`` display cells (right-aligned if ``right``)."""
    fill = " " * max(0, width - display_width(s))
    return fill + s if right else s + fill


def format_table(header: list[str], rows: list[list[str]], numeric: frozenset[int] | set[int] = frozenset(),
                 gap: str = "  ") -> list[str]:
    """Lines of an aligned table with a dashed rule under the header.

    Columns whose index is in ``numeric`` are right-aligned.  Trailing spaces
    are stripped so the output diffs cleanly.
    """
    widths = [max(display_width(cell) for cell in column) for column in zip(header, *rows)]
    lines = []
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [pad(cell, widths[i], right=i in numeric) for i, cell in enumerate(row)]
        lines.append(gap.join(cells).rstrip())
    return lines


# -- phrases shared with the markdown renderer -------------------------------

def count(n: int) -> str:
    """A row count for people: thousands separated."""
    return f"{n:,}"


def touch_label(report: Report) -> str:
    """'would touch' in a dry run, 'touched' in a run."""
    return "would touch" if report.dry_run else "touched"


def status_label(rule: RuleOutcome) -> str:
    """The status column: ok, FAILED, GUARD TRIPPED."""
    return STATUS_LABEL.get(rule.status, rule.status)


def oldest_date(rule: RuleOutcome) -> str:
    """The oldest clock as a date (the time of day adds nothing at retention scale)."""
    return rule.oldest_clock.date().isoformat() if rule.oldest_clock else "-"


def short_sha(sha256: str) -> str:
    """The first 12 hex digits, enough to tell policy files apart."""
    return sha256[:12] if sha256 else "-"


def describe_cutoff(rule: RuleOutcome) -> str:
    """'2025-05-02T00:00:00+00:00 (due: clock at or before it)', or why there is none."""
    if rule.cutoff is None:
        return "none: the period reaches past an end of the calendar"
    return f"{rule.cutoff.isoformat()} (due: clock at or before it)"


def describe_protection(rule: RuleOutcome) -> str | None:
    """'20: hold litigation 12, floor ecommerce-law-3y 8', or None when nothing was protected."""
    if not rule.protected:
        return None
    parts = [f"{p.kind} {p.name} {count(p.rows)}" for p in rule.protected]
    return f"{count(rule.protected_total)}: " + ", ".join(parts)


def describe_cascade(c) -> str:
    """'shop.order_items: delete 40 (via order_items.order_id -> orders)'."""
    via = f" (via {c.via})" if c.via else ""
    return f"{c.table}: {c.action} {count(c.rows)}{via}"


def describe_partition(p) -> str:
    """'shop.events_2025_03: dropped (1,200 rows)', with why a partition was kept."""
    return f"{p.partition}: {p.status} ({count(p.rows)} rows)" + (f"; {clean(p.reason)}" if p.reason else "")


def describe_not_done(rule: RuleOutcome) -> str | None:
    """'3: cancelled by the database 2 (...), ...', or None when the rule finished its work."""
    if not rule.not_done:
        return None
    return f"{count(rule.not_done_total)}: " + "; ".join(f"{n.reason} {count(n.rows)} ({n.detail})"
                                                          for n in rule.not_done)


def describe_forecast(rule: RuleOutcome) -> str | None:
    """'next 7d 10, 30d 45, 90d 120, 365d 800', or None when no window has rows."""
    if not any(rule.forecast.values()):
        return None
    keys = [k for k in FORECAST_WINDOWS if k in rule.forecast]
    keys += [k for k in rule.forecast if k not in FORECAST_WINDOWS]
    return "next " + ", ".join(f"{k} {count(rule.forecast[k])}" for k in keys)


def describe_check(rule: RuleOutcome) -> str | None:
    """The k-anonymity check's verdict: smallest class against k, over which columns and rows."""
    c = rule.check
    if not c:
        return None
    over = f"k = {c['k']} over {', '.join(c['quasi_identifiers'])}"
    if not c["evaluated"]:
        from retention.execute.kanonymity import NOT_JUDGED
        return f"{over}: not judged ({NOT_JUDGED.get(c.get('not_judged') or '', 'not evaluated')})"
    if c["smallest_class"] is None:
        return f"{over}: passed, no anonymized rows yet"
    verdict = "passed" if c["passed"] else "FAILED"
    return (f"{over}: {verdict}, smallest class {count(c['smallest_class'])} "
            f"({count(c['rows'])} rows in {count(c['classes'])} classes)")


def guard_rows(rule: RuleOutcome) -> int:
    """Rows the guard weighed: what the rule touches, or would have had it not tripped."""
    return rule.guard.rows


def describe_guard(rule: RuleOutcome) -> str | None:
    """The guard's verdict with its limits and the table size, when it tripped."""
    g = rule.guard
    if g.state == "ok" and rule.status != "guard_tripped":
        return None
    rows = guard_rows(rule)
    share = f" ({rows / g.table_rows:.1%})" if g.table_rows else ""
    limits = []
    if g.max_rows is not None:
        limits.append(f"max_rows {count(g.max_rows)}")
    if g.max_fraction is not None:
        limits.append(f"max_fraction {g.max_fraction:g}")
    limit_text = ", ".join(limits) or "no limits recorded"
    verdict = ("tripped, allowed by --allow-large" if g.state == "allowed"
               else "TRIPPED, nothing touched")
    return (f"{verdict}: {count(rows)} of {count(g.table_rows)} rows in the table{share}; "
            f"limits: {limit_text}")


def exit_summary(report: Report) -> str:
    """What the exit code means, in one line an operator can act on."""
    code = report.exit_code
    failed = [r.rule for r in report.rules if r.status == "failed"]
    incomplete = [r.rule for r in report.rules if r.status == "incomplete"]
    tripped = [r.rule for r in report.rules if r.status == "guard_tripped"]
    parts = []
    if report.interrupted:
        parts.append(f"stopped by {report.interrupted}; the batch under way finished or was rolled back"
                     + (f"; not run: {', '.join(report.skipped)}" if report.skipped else ""))
    parts.extend(clean(e) for e in report.errors)
    if failed:
        parts.append(f"{_n(len(failed), 'rule')} failed ({', '.join(failed)})")
    if incomplete:
        parts.append(f"{_n(len(incomplete), 'rule')} incomplete ({', '.join(incomplete)}): "
                     "rows not done, see 'not done'")
    checks = [r.rule for r in report.rules if r.status == "check_failed"]
    if checks:
        parts.append(f"k-anonymity check failed on {', '.join(checks)}: a class of anonymized rows is smaller "
                     "than k, see 'k-anonymity'")
    drifted = [r.rule for r in report.rules if r.status == "plan_drifted"]
    if drifted:
        parts.append(f"more to touch than the reviewed plan counted on {', '.join(drifted)}: "
                     "nothing touched there; review a new plan")
    if tripped:
        parts.append(f"guard tripped on {', '.join(tripped)}: "
                     "re-run with --allow-large if this is intended")
    rq = report.requests_summary()
    if rq["incomplete"]:
        parts.append(f"{rq['incomplete']} erasure request(s) incomplete: the database kept rows, see 'not done'")
    if rq["plan_drifted"]:
        parts.append(f"{rq['plan_drifted']} erasure request(s) not as the reviewed plan listed them: nothing "
                     "erased for them; review a new plan")
    if not parts:
        parts.append("success" + (" (dry run: nothing was changed)" if report.dry_run else ""))
    if rq["skipped"]:
        parts.append(f"{rq['skipped']} erasure request(s) not fulfilled by this run (see why above)")
    if rq["overdue"] or rq["due_soon"]:
        parts.append(f"erasure requests: {rq['overdue']} overdue, {rq['due_soon']} due within 3 days")
    return f"exit {code}: " + "; ".join(parts)


def totals_summary(report: Report) -> str:
    """'totals: 3 rules, 120 due, 20 protected, 100 would touch, 40 cascaded'."""
    t = report.to_dict()["totals"]
    line = (f"totals: {_n(t['rules'], 'rule')}, {count(t['due'])} due, {count(t['protected'])} protected, "
            f"{count(t['touch'])} {touch_label(report)}, {count(t['cascaded'])} cascaded")
    extra = []
    if t["failed"]:
        extra.append(f"{t['failed']} failed")
    if t["guard_tripped"]:
        extra.append(f"{t['guard_tripped']} guard tripped")
    if t["incomplete"]:
        extra.append(f"{t['incomplete']} incomplete")
    if t["check_failed"]:
        extra.append(f"{t['check_failed']} check failed")
    return line + (f"; {', '.join(extra)}" if extra else "")


def _n(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean(text: str) -> str:
    """A free-text value (error, basis) safe to print: credentials masked, and control
    characters shown as ``\\xNN`` so no text can move the cursor or recolour a terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", mask_text(text))


# -- the renderer ------------------------------------------------------------

def summary_row(rule: RuleOutcome) -> list[str]:
    """One rule's cells, in :func:`summary_header` order."""
    return [rule.rule, rule.action, rule.table, count(rule.due), count(rule.protected_total),
            count(rule.touch), count(rule.unchanged), count(rule.remaining), count(rule.cascaded_total),
            oldest_date(rule), status_label(rule)]


def summary_header(report: Report) -> list[str]:
    """Column headers; the touch column's name depends on the mode."""
    return ["rule", "action", "table", "due", "protected", touch_label(report), "unchanged", "remaining",
            "cascaded", "oldest clock", "status"]


#: indices of the right-aligned (count) columns in :func:`summary_row`
NUMERIC_COLUMNS = {3, 4, 5, 6, 7, 8}


def rule_details(report: Report, rule: RuleOutcome) -> list[tuple[str, str]]:
    """(label, text) pairs worth printing for one rule; empty when all is routine (HTML shows them too)."""
    out: list[tuple[str, str]] = []
    if rule.basis:
        out.append(("basis", clean(rule.basis)))
    out.append(("cutoff", describe_cutoff(rule)))
    if (text := describe_protection(rule)):
        out.append(("protected", text))
    for c in rule.cascades:
        out.append(("cascade", describe_cascade(c)))
    for p in rule.partitions:
        out.append(("partition", describe_partition(p)))
    if (text := describe_not_done(rule)):
        out.append(("not done", text))
    if rule.unreadable_clocks:
        out.append(("clocks", f"{count(rule.unreadable_clocks)} due rows have a clock the job cannot represent "
                              "(-infinity, before year 1 or after 9999): not in the oldest clock"))
    if (text := describe_forecast(rule)):
        out.append(("forecast", text))
    if (text := describe_guard(rule)):
        out.append(("guard", text))
    if (text := describe_check(rule)):
        out.append(("k-anonymity", text))
    if rule.kept_columns:
        out.append(("kept", "columns a floor keeps: " + ", ".join(rule.kept_columns)))
    if rule.overlaps:
        out.append(("overlaps", "counted alone; run after " + ", ".join(rule.overlaps)
                    + ", which reach the same tables (--simulate gives the combined numbers)"))
    if not report.dry_run and rule.batches:
        out.append(("batches", f"{rule.batches} in {rule.duration_seconds:.1f}s"))
    if rule.error:
        out.append(("error", clean(rule.error)))
    return out


def render_text(report: Report) -> str:
    """Render ``report`` for a terminal; ends with a newline."""
    if report.simulated:
        mode = "RETENTION SIMULATION (run in a transaction that was rolled back: nothing was changed)"
    elif report.dry_run:
        mode = "RETENTION DRY RUN (nothing was changed)"
    else:
        mode = "RETENTION RUN"
    lines = [mode]
    head = [("now", report.now.isoformat()), ("run id", report.run_id),
            ("config", f"{report.config_path} (sha256 {short_sha(report.config_sha256)})")]
    if report.started_at and report.finished_at:
        seconds = (report.finished_at - report.started_at).total_seconds()
        head.append(("took", f"{seconds:.1f}s"))
    label_w = max(display_width(k) for k, _ in head)
    lines += [f"{pad(k, label_w)}  {v}" for k, v in head]
    lines.append("")

    if report.rules:
        lines += format_table(summary_header(report), [summary_row(r) for r in report.rules],
                              numeric=NUMERIC_COLUMNS)
    else:
        lines.append("no rules selected")

    for rule in report.rules:
        details = rule_details(report, rule)
        sql = rule.statements if report.show_sql else []
        if not details and not sql:
            continue
        lines += ["", rule.rule]
        width = max((display_width(k) for k, _ in details), default=0)
        for label, text in details:
            first, *rest = text.splitlines() or [""]
            lines.append(f"  {pad(label, width)}  {first}")
            lines += [f"  {' ' * width}  {more}" for more in rest]
        if sql:
            lines.append("  sql")
            for statement in sql:
                body = clean(statement).rstrip().rstrip(";") + ";"
                lines += [f"    {line}" for line in body.splitlines()]

    lines += render_requests(report)
    lines += ["", totals_summary(report), exit_summary(report)]
    return "\n".join(lines) + "\n"


_URGENCY = {"overdue": "OVERDUE", "due_soon": "DUE SOON"}


def render_requests(report: Report) -> list[str]:
    """The erasure requests, the ledger entries this run wrote, the recipients' delivery."""
    if not has_requests(report):
        return []
    lines = ["", requests_headline(report)]
    header, rows = requests_table(report)
    if rows:
        lines += format_table(header, rows, numeric=REQUESTS_NUMERIC)
    return lines + ["  " * (depth + 1) + note for depth, note in requests_notes(report)]


# -- the requests' phrases, shared with the markdown and HTML renderers ------

#: indices of the right-aligned columns in :func:`requests_table`
REQUESTS_NUMERIC = {4}


def has_requests(report: Report) -> bool:
    """Whether the report has anything to say of erasure requests, the ledger or the recipients."""
    return bool(report.requests or report.ledger or report.notifications)


def requests_headline(report: Report) -> str:
    """'erasure requests: 2 open, 1 overdue, 0 due within 3 days, 0 partial'."""
    rq = report.requests_summary()
    return (f"erasure requests: {rq['open']} open, {rq['overdue']} overdue, {rq['due_soon']} due within "
            f"3 days, {rq['partial']} partial")


def requests_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """The requests' header and rows: request, subject's keyed hash, received, deadline, days left, status."""
    rows = [[r["request"], r["subject_hash"] or "(gone)", r["received_at"][:10], r["deadline"][:10],
             "" if r["days_left"] is None else str(r["days_left"]), r["status"],
             _URGENCY.get(r["urgency"] or "", "")] for r in report.requests]
    return ["request", "subject", "received", "deadline", "days left", "status", ""], rows


def requests_notes(report: Report) -> list[tuple[int, str]]:
    """What each request erased, kept and skipped, the ledger entries, the delivery: (depth, line)."""
    notes: list[tuple[int, str]] = []
    add = notes.append
    for r in report.requests:
        if r["erased"]:
            verb = "would erase" if report.dry_run else "erased"
            add((0, f"{r['request']}: {verb} " + ", ".join(f"{t} {n}" for t, n in sorted(r["erased"].items()))))
        for p in r["protected"]:
            until = f" until {p['until'][:10]}" if p.get("until") else (" until released" if p["kind"] == "hold"
                                                                        else "")
            add((0, f"{r['request']}: {p['rows']} row(s) of {p['table']} kept by {p['kind']} "
                    f"'{p['name']}'{until}" + (f", {p['restricted']} restricted" if p.get("restricted") else "")))
        for n in r.get("not_done", ()):
            add((0, f"{r['request']}: {n['rows']} row(s) of {n['table']} not done: {n['why']}"))
        for table, n in sorted(r.get("registers", {}).items()):
            add((0, f"{r['request']}: {n} row(s) of the hold register {table} kept: the record of a legal "
                    f"process is never erased by a request"))
        for skipped in r.get("skipped", ()):
            add((0, f"{r['request']}: not fulfilled by this run: {skipped}"))
        if r.get("error"):
            add((0, f"{r['request']}: error: {clean(r['error'])}"))
    for e in report.ledger:
        gone = e["gone_by"][:10] if e["gone_by"] else f"no provable date ({e['gone_by_reason']})"
        add((0, f"ledger {e['id']}: {e['request']} {e['status']}, "
                f"{sum(e['tables'].values())} rows in {len(e['tables'])} table(s); gone from backups by {gone}"))
    if report.notifications:
        n = report.notifications
        if "would_send" in n:
            add((0, f"recipients: {n['would_send']} notification(s) a run would send; "
                    f"{n['pending']} waiting in the outbox"))
        else:
            add((0, f"recipients: {n['delivered']} delivered, {n['failed']} failed, {n['pending']} in the outbox"))
        notes += [(1, clean(err)) for err in n["errors"]]
    return notes
