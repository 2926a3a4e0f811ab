"""The HTML report: the same facts as the text and markdown reports, on one page that loads nothing.

Its charts are checked for what they claim: each rule's bar is split in the
proportions of its counts, and every number a chart shows is one the report
has.  The page is checked as a document (every tag closed) and for escaping.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from retention import cli, commands
from retention.report import render
from retention.report.html import render_html
from retention.report.markdown import render_markdown
from retention.report.model import Protection, RuleOutcome
from retention.report.text import render_text, requests_headline, requests_notes
from tests.test_report_render import SECRET, make_report

ROOT = Path(__file__).resolve().parents[1]
VOID = {"meta", "br", "hr", "img", "input", "link"}


class Page(HTMLParser):
    """The page's tables (header -> cell text, per row), chart rectangles, text; and nesting errors."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.rects: list[dict] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(html)
        self.close()
        if self.stack:
            self.errors.append(f"never closed: {self.stack}")

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        self.stack.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "rect":
            self.rects.append({**dict(attrs), "title": ""})

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self.stack[-2:] == ["rect", "title"]:
            self.rects[-1]["title"] += data

    def rows(self, index: int) -> list[dict[str, str]]:
        header, *body = self.tables[index]
        return [dict(zip(header, row)) for row in body]


def test_the_page_is_well_formed_and_the_summary_holds_the_report_counts():
    report = make_report()
    page = Page(render_html(report))
    assert page.errors == []
    rows = {r["rule"]: r for r in page.rows(0)}
    assert set(rows) == {"closed-orders", "access-logs", "users-anonymize"}
    assert rows["closed-orders"]["would touch"] == "1,155" and rows["closed-orders"]["cascaded"] == "4,017"
    assert rows["access-logs"]["status"] == "GUARD TRIPPED" and rows["users-anonymize"]["status"] == "FAILED"
    run = Page(render_html(make_report(dry_run=False)))
    assert "touched" in run.rows(0)[0]


def test_each_rule_bar_is_split_in_the_proportions_of_its_counts():
    rule = RuleOutcome(rule="logs", action="delete", table="shop.logs", due=1000, touch=600, unchanged=100,
                       remaining=50, protected=[Protection("hold", "litigation", 200), Protection("floor", "law", 50)])
    small = RuleOutcome(rule="tiny", action="delete", table="shop.t", due=250, touch=250)
    page = Page(render_html(make_report(rules=[rule, small])))
    bars = [r for r in page.rects if r.get("class") in ("touch", "protected", "unchanged", "remaining")]
    width = {r["title"]: float(r["width"]) for r in bars}
    assert set(width) == {"logs: would touch 600", "logs: protected 250", "logs: already done 100",
                          "logs: left to do 50", "tiny: would touch 250"}
    unit = width["logs: would touch 600"] / 600
    for title, w in width.items():
        assert w == pytest.approx(unit * int(title.rsplit(" ", 1)[1].replace(",", "")), abs=0.11)
    # the segments of one bar follow each other without gaps or overlap
    logs = [r for r in bars if r["title"].startswith("logs:")]
    for before, after in zip(logs, logs[1:]):
        assert float(after["x"]) == pytest.approx(float(before["x"]) + float(before["width"]), abs=0.11)


def test_the_forecast_chart_shows_the_report_windows():
    page = Page(render_html(make_report()))
    forecast = {r["title"]: float(r["height"]) for r in page.rects if r.get("class") == "forecast"}
    assert set(forecast) == {"next 7d: 10", "next 30d: 45", "next 90d: 120", "next 365d: 800"}
    unit = forecast["next 365d: 800"] / 800      # each column's height is in proportion to its rows
    for title, height in forecast.items():
        assert height == pytest.approx(unit * int(title.rsplit(" ", 1)[1]), abs=0.11)
    assert forecast["next 7d: 10"] < forecast["next 30d: 45"] < forecast["next 90d: 120"] < forecast["next 365d: 800"]


def test_values_are_escaped_and_credentials_masked():
    hostile = RuleOutcome(rule="<script>alert(1)</script>", action="delete", table="shop.a&b", due=1, touch=1,
                          basis='kept "3y" <b>by law</b>', error=f"postgresql://u:{SECRET}@db/x refused\x1b[31m")
    out = render_html(make_report(rules=[hostile]))
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "<b>by law</b>" not in out and "&lt;b&gt;by law&lt;/b&gt;" in out
    assert SECRET not in out and "postgresql://u:***@db/x" in out
    assert "\x1b" not in out and "\\x1b[31m" in out
    assert Page(out).errors == []


def test_the_page_loads_nothing_from_anywhere():
    out = render_html(make_report(show_sql=True))
    for needle in ("<script", "<link", "<img", "<iframe", "src=", "@import", "url(", "http://", "https://"):
        assert needle not in out.lower(), needle


def test_requests_say_the_same_in_every_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _counts, report = commands.demo(str(ROOT / "policies.toml"), url=f"sqlite:///{tmp_path / 'demo.db'}",
                                    now=datetime(2026, 3, 15, 9, 30, tzinfo=timezone.utc),
                                    env={"RETENTION_HASH_KEY": "demo-test"})
    notes = [note for _depth, note in requests_notes(report)]
    assert notes and report.requests
    html = Page(render_html(report))
    assert html.errors == []
    html_text = " ".join("".join(html.text).split())
    markdown = render_markdown(report)
    text = render_text(report)
    for line in [requests_headline(report), *notes]:
        assert line in text
        assert " ".join(line.split()) in html_text
        assert line.replace("|", "\\|") in markdown
    requests_table = next(t for t in html.tables if t[0][:2] == ["request", "subject"])
    assert [row[0] for row in requests_table[1:]] == [r["request"] for r in report.requests]


def test_out_with_an_html_name_writes_the_html_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli.cli, ["demo", "--url", f"sqlite:///{tmp_path / 'demo.db'}",
                                          "-c", str(ROOT / "policies.toml"), "--out", str(out)],
                                env={"RETENTION_HASH_KEY": "demo-test"})
    assert result.exit_code == 0, result.output
    page = Page(out.read_text(encoding="utf-8"))
    assert page.errors == [] and page.rows(0)[0]["rule"] == "access-logs-180d"
    assert re.search(r"<h1>Retention (simulation|dry run)</h1>", out.read_text(encoding="utf-8"))
    assert render(make_report(), "html") == render_html(make_report())
