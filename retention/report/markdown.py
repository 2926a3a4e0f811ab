"""The report as GitHub-flavoured markdown: for pull requests, tickets, wikis.

Same content as the text report: a summary table, totals and the meaning of
the exit code, then one section per rule.  Values are escaped so that a pipe
in a rule name or an error message cannot break a table.
"""

from __future__ import annotations

from retention.report.model import Report, RuleOutcome
from retention.report.text import (
    NUMERIC_COLUMNS,
    REQUESTS_NUMERIC,
    clean,
    count,
    describe_check,
    describe_cutoff,
    describe_forecast,
    describe_guard,
    describe_not_done,
    describe_partition,
    exit_summary,
    has_requests,
    oldest_date,
    requests_headline,
    requests_notes,
    requests_table,
    short_sha,
    status_label,
    summary_header,
    summary_row,
    totals_summary,
)


def cell(value: str) -> str:
    """``value`` safe inside a table cell: pipes escaped, line breaks as ``<br>``.

    Backslashes are doubled too: GFM splits a row at a pipe unless a
    backslash escapes it, so a value's own ``\\|`` must not read as an escape.
    """
    text = value.replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(line.strip() for line in text.splitlines()) if "\n" in text else text


def code(value: str) -> str:
    """``value`` as inline code, fenced with enough backticks to hold its own."""
    fence = "`"
    while fence in value:
        fence += "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> list[str]:
    """A GFM table; ``numeric`` column indices are right-aligned.  Cells must be escaped already."""
    align = ["--:" if i in numeric else "---" for i in range(len(header))]
    return ["| " + " | ".join(row) + " |" for row in [header, align, *rows]]


def _block(text: str, lang: str = "") -> list[str]:
    fence = "```"
    while fence in text:
        fence += "`"
    return [fence + lang, text.rstrip("\n"), fence]


def _rule_section(report: Report, rule: RuleOutcome) -> list[str]:
    out = [f"### {code(rule.rule)}", ""]
    facts = [("action", f"{rule.action} on {code(rule.table)}"), ("status", status_label(rule))]
    if rule.basis:
        facts.append(("basis", cell(clean(rule.basis))))
    facts.append(("cutoff", describe_cutoff(rule)))
    if rule.oldest_clock:
        facts.append(("oldest clock", oldest_date(rule)))
    if (text := describe_forecast(rule)):
        facts.append(("forecast", text))
    if (text := describe_guard(rule)):
        facts.append(("guard", cell(text)))
    if (text := describe_check(rule)):
        facts.append(("k-anonymity", cell(text)))
    if (text := describe_not_done(rule)):
        facts.append(("not done", cell(text)))
    if rule.kept_columns:
        facts.append(("columns a floor keeps", ", ".join(code(c) for c in rule.kept_columns)))
    if rule.overlaps:
        facts.append(("counted alone", "in a run, " + ", ".join(code(r) for r in rule.overlaps)
                      + " act first on the same tables; `--simulate` gives the combined numbers"))
    if not report.dry_run and rule.batches:
        facts.append(("batches", f"{rule.batches} in {rule.duration_seconds:.1f}s"))
    out += [f"- **{label}:** {value}" for label, value in facts]

    if rule.protected:
        out += ["", f"Protected ({count(rule.protected_total)} rows):", ""]
        out += table(["kind", "name", "rows"],
                     [[cell(p.kind), cell(p.name), count(p.rows)] for p in rule.protected],
                     numeric={2})
    if rule.cascades:
        out += ["", f"Cascades ({count(rule.cascaded_total)} rows):", ""]
        out += table(["table", "action", "via", "rows"],
                     [[cell(c.table), cell(c.action), cell(c.via), count(c.rows)]
                      for c in rule.cascades],
                     numeric={3})
    if rule.partitions:
        out += ["", "Whole partitions:", ""] + [f"- {cell(describe_partition(p))}" for p in rule.partitions]
    if rule.error:
        out += ["", "Error:", ""] + _block(clean(rule.error))
    if report.show_sql and rule.statements:
        statements = "\n\n".join(clean(s).rstrip().rstrip(";") + ";" for s in rule.statements)
        out += ["", "SQL:", ""] + _block(statements, "sql")
    return out + [""]


def render_markdown(report: Report) -> str:
    """Render ``report`` as a GitHub-flavoured markdown document; ends with a newline."""
    title = ("Retention simulation" if report.simulated else "Retention dry run") if report.dry_run \
        else "Retention run"
    out = [f"# {title}", ""]
    if report.simulated:
        out += ["Nothing was changed: the run was executed in a transaction and rolled back.", ""]
    elif report.dry_run:
        out += ["Nothing was changed: this is what a run would do.", ""]
    out += [f"- **now:** {report.now.isoformat()}",
            f"- **run id:** {code(report.run_id)}",
            f"- **config:** {code(report.config_path)} (sha256 {code(short_sha(report.config_sha256))})"]
    if report.started_at and report.finished_at:
        seconds = (report.finished_at - report.started_at).total_seconds()
        out.append(f"- **took:** {seconds:.1f}s")
    out += ["", "## Summary", ""]
    if report.rules:
        out += table([cell(h) for h in summary_header(report)],
                     [[cell(v) for v in summary_row(r)] for r in report.rules],
                     numeric=NUMERIC_COLUMNS)
    else:
        out.append("No rules selected.")
    out += ["", cell(totals_summary(report)), "", f"**{cell(exit_summary(report))}**", ""]
    if report.rules:
        out += ["## Rules", ""]
        for rule in report.rules:
            out += _rule_section(report, rule)
    if has_requests(report):
        out += ["## Erasure requests", "", cell(requests_headline(report)), ""]
        header, rows = requests_table(report)
        if rows:
            out += table([cell(h) for h in header], [[cell(c) for c in row] for row in rows],
                         numeric=REQUESTS_NUMERIC) + [""]
        out += ["  " * depth + f"- {cell(note)}" for depth, note in requests_notes(report)]
    return "\n".join(out).rstrip("\n") + "\n"
