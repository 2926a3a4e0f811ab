"""The report as one self-contained HTML page: for a browser, an e-mail or a CI artifact.

The same content as the text and markdown reports, in the same words (the
phrases come from :mod:`retention.report.text`), plus two charts drawn as
inline SVG: where each rule's due rows go (touched, protected, already done,
left), and how many more become due in the next 7/30/90/365 days.  The page
loads nothing: no script, stylesheet, font or image from anywhere, so it
reads the same offline and cannot call out when opened.  Every value is
escaped, with credentials masked and control characters shown, as in the
other formats.
"""

from __future__ import annotations

import html

from retention.report.model import FORECAST_WINDOWS, Report, RuleOutcome
from retention.report import text as say

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; color: #1d2125; margin: 2em auto; max-width: 76em; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #d0d7de; }
h3 { margin-top: 1.4em; font-family: ui-monospace, monospace; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f5f7; white-space: nowrap; } td:first-child { white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, monospace; font-size: .92em; }
pre { background: #f6f8fa; padding: .6em; overflow-x: auto; white-space: pre-wrap; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .15em 1em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
.note { color: #57606a; } .exit { font-weight: 600; } .bad { color: #b42318; font-weight: 600; }
.legend span { display: inline-block; margin-right: 1.2em; }
.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .3em; vertical-align: -.1em; }
.touch { fill: #2f6feb; background: #2f6feb; } .protected { fill: #e5a000; background: #e5a000; }
.unchanged { fill: #8c959f; background: #8c959f; } .remaining { fill: #d1242f; background: #d1242f; }
.forecast { fill: #6e40c9; } svg text { font: 12px system-ui, sans-serif; fill: #1d2125; }
"""

#: the parts of a rule's due rows, in the chart's order: (css class, label)
SEGMENTS = (("touch", None), ("protected", "protected"), ("unchanged", "already done"),
            ("remaining", "left to do"))


def esc(value: object) -> str:
    """``value`` as HTML text: credentials masked, control characters shown, markup escaped."""
    return html.escape(say.clean(str(value)), quote=True)


def table(header: list[str], rows: list[list[str]], numeric: set[int] | frozenset[int] = frozenset()) -> str:
    """An HTML table; ``numeric`` column indices are right-aligned.  Cells must be escaped already."""
    def row(cells: list[str], tag: str) -> str:
        return "<tr>" + "".join(f'<{tag}{" class=n" if i in numeric else ""}>{c}</{tag}>'
                                for i, c in enumerate(cells)) + "</tr>"
    return ("<table>\n<thead>" + row(header, "th") + "</thead>\n<tbody>\n"
            + "\n".join(row(r, "td") for r in rows) + "\n</tbody>\n</table>")


def facts(pairs: list[tuple[str, str]]) -> str:
    """A definition list of (label, escaped value) pairs."""
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def page(title: str, body: list[str]) -> str:
    """A whole HTML document around ``body``; ends with a newline."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


# -- charts ------------------------------------------------------------------

def _segments(report: Report, rule: RuleOutcome) -> list[tuple[str, str, int]]:
    """(css class, label, rows) of a rule's due rows, in chart order; empty parts left out."""
    values = {"touch": rule.touch, "protected": rule.protected_total, "unchanged": rule.unchanged,
              "remaining": rule.remaining}
    return [(cls, label or say.touch_label(report), values[cls]) for cls, label in SEGMENTS if values[cls] > 0]


def due_chart(report: Report) -> str:
    """One horizontal bar per rule, its length the rule's due rows, split by what happens to them."""
    label_w, bar_w, row_h = 220, 560, 24
    widest = max((max(r.due, sum(n for *_, n in _segments(report, r))) for r in report.rules), default=0)
    parts = []
    for i, rule in enumerate(report.rules):
        y = i * row_h
        name = rule.rule if len(rule.rule) <= 30 else rule.rule[:29] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{esc(name)}</text>')
        x = float(label_w)
        for cls, label, rows in _segments(report, rule):
            w = bar_w * rows / widest if widest else 0
            parts.append(f'<rect class="{cls}" x="{x:.1f}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row_h - 8}">'
                         f"<title>{esc(rule.rule)}: {esc(label)} {say.count(rows)}</title></rect>")
            x += w
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 16}">{say.count(rule.due)} due</text>')
    height = max(len(report.rules), 1) * row_h
    legend = "".join(f'<span><i class="swatch {cls}"></i>{esc(label or say.touch_label(report))}</span>'
                     for cls, label in SEGMENTS)
    return (f'<figure>\n<svg role="img" aria-label="due rows per rule" width="{label_w + bar_w + 120}" '
            f'height="{height}" viewBox="0 0 {label_w + bar_w + 120} {height}">\n' + "\n".join(parts)
            + f'\n</svg>\n<figcaption class="legend">{legend}</figcaption>\n</figure>')


def forecast_chart(rule: RuleOutcome) -> str:
    """Rows that become due within each window, as columns (the windows are cumulative)."""
    keys = [k for k in FORECAST_WINDOWS if k in rule.forecast] + \
        [k for k in rule.forecast if k not in FORECAST_WINDOWS]
    top = max(rule.forecast.values(), default=0)
    col_w, gap, plot_h = 54, 14, 90
    parts = []
    for i, key in enumerate(keys):
        rows = rule.forecast[key]
        h = plot_h * rows / top if top else 0
        x = i * (col_w + gap)
        parts.append(f'<rect class="forecast" x="{x}" y="{18 + plot_h - h:.1f}" width="{col_w}" height="{h:.1f}">'
                     f"<title>next {esc(key)}: {say.count(rows)}</title></rect>")
        middle = x + col_w / 2
        parts.append(f'<text x="{middle}" y="{12 + plot_h - h:.1f}" text-anchor="middle">{say.count(rows)}</text>')
        parts.append(f'<text x="{middle}" y="{plot_h + 34}" text-anchor="middle">{esc(key)}</text>')
    width = max(len(keys), 1) * (col_w + gap)
    return (f'<svg role="img" aria-label="rows becoming due" width="{width}" height="{plot_h + 40}" '
            f'viewBox="0 0 {width} {plot_h + 40}">\n' + "\n".join(parts) + "\n</svg>")


# -- the renderer --------------------------------------------------------------

def _code(value: str) -> str:
    return f"<code>{esc(value)}</code>"


def _pre(text: str, cls: str = "") -> str:
    return f"<pre{f' class={cls}' if cls else ''}>{esc(text.rstrip())}</pre>"


#: rule details shown below the facts as tables, a chart or a block
_SHOWN_APART = {"protected", "cascade", "partition", "forecast", "error"}


def _rule_section(report: Report, rule: RuleOutcome) -> list[str]:
    out = [f'<section id="rule-{esc(rule.rule)}">', f"<h3>{esc(rule.rule)}</h3>"]
    status = esc(say.status_label(rule))
    pairs = [("action", f"{esc(rule.action)} on {_code(rule.table)}"),
             ("status", status if rule.status == "ok" else f'<span class="bad">{status}</span>')]
    # the text report's own lines, but for what gets a table, a chart or a block of its own below
    pairs += [(label, esc(text)) for label, text in say.rule_details(report, rule) if label not in _SHOWN_APART]
    if rule.oldest_clock:
        pairs.append(("oldest clock", esc(say.oldest_date(rule))))
    out.append(facts(pairs))
    if rule.protected:
        out.append(f"<p>Protected ({say.count(rule.protected_total)} rows):</p>")
        out.append(table(["kind", "name", "rows"], [[esc(p.kind), esc(p.name), say.count(p.rows)]
                                                   for p in rule.protected], numeric={2}))
    if rule.cascades:
        out.append(f"<p>Cascades ({say.count(rule.cascaded_total)} rows):</p>")
        out.append(table(["table", "action", "via", "rows"],
                         [[esc(c.table), esc(c.action), esc(c.via), say.count(c.rows)] for c in rule.cascades],
                         numeric={3}))
    if rule.partitions:
        out.append("<p>Whole partitions:</p><ul>" + "".join(f"<li>{esc(say.describe_partition(p))}</li>"
                                                            for p in rule.partitions) + "</ul>")
    if (text := say.describe_forecast(rule)):
        out.append(f"<p>Forecast: {esc(text)}.</p>")
        out.append(forecast_chart(rule))
    if rule.error:
        out += ["<p>Error:</p>", _pre(rule.error)]
    if report.show_sql and rule.statements:
        out += ["<p>SQL:</p>", _pre("\n\n".join(s.rstrip().rstrip(";") + ";" for s in rule.statements))]
    return out + ["</section>"]


def _requests_section(report: Report) -> list[str]:
    out = ["<h2>Erasure requests</h2>", f"<p>{esc(say.requests_headline(report))}</p>"]
    header, rows = say.requests_table(report)
    if rows:
        out.append(table([esc(h) for h in header], [[esc(c) for c in row] for row in rows],
                         numeric=say.REQUESTS_NUMERIC))
    notes = say.requests_notes(report)
    if notes:
        out.append("<ul>" + "".join(f'<li{" class=note" if depth else ""}>{esc(note)}</li>'
                                    for depth, note in notes) + "</ul>")
    return out


def render_html(report: Report) -> str:
    """Render ``report`` as one self-contained HTML page; ends with a newline."""
    title = ("Retention simulation" if report.simulated else "Retention dry run") if report.dry_run \
        else "Retention run"
    body = [f"<h1>{title}</h1>"]
    if report.simulated:
        body.append('<p class="note">Nothing was changed: the run was executed in a transaction and rolled back.</p>')
    elif report.dry_run:
        body.append('<p class="note">Nothing was changed: this is what a run would do.</p>')
    head = [("now", esc(report.now.isoformat())), ("run id", _code(report.run_id)),
            ("config", f"{_code(report.config_path)} (sha256 {_code(say.short_sha(report.config_sha256))})")]
    if report.shard:
        head.append(("shard", esc(report.shard)))
    if report.started_at and report.finished_at:
        head.append(("took", f"{(report.finished_at - report.started_at).total_seconds():.1f}s"))
    body.append(facts(head))
    body.append("<h2>Summary</h2>")
    if report.rules:
        body.append(table([esc(h) for h in say.summary_header(report)],
                          [[esc(v) for v in say.summary_row(r)] for r in report.rules], numeric=say.NUMERIC_COLUMNS))
        if any(r.due for r in report.rules):
            body.append(due_chart(report))
    else:
        body.append("<p>No rules selected.</p>")
    body += [f"<p>{esc(say.totals_summary(report))}</p>", f'<p class="exit">{esc(say.exit_summary(report))}</p>']
    if report.rules:
        body.append("<h2>Rules</h2>")
        for rule in report.rules:
            body += _rule_section(report, rule)
    if say.has_requests(report):
        body += _requests_section(report)
    return page(title, body)
