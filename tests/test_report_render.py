"""Report renderers: text for people, JSON for scripts, markdown for documents."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from retention.report import FORMATS, render
from retention.report.json import render_json
from retention.report.markdown import render_markdown
from retention.report.model import Cascade, Guard, Protection, Report, RuleOutcome
from retention.report.text import display_width, render_text

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "hunter2"


def make_report(*, dry_run: bool = True, show_sql: bool = False, rules: list[RuleOutcome] | None = None) -> Report:
    """Three rules that exercise every part of a report: ok, guard tripped, failed."""
    if rules is None:
        rules = [
            RuleOutcome(
                rule="closed-orders", action="delete", table="shop.orders", basis="Orders kept 5 years",
                due=1200, touch=1155,
                protected=[Protection("hold", "litigation", 12), Protection("floor", "ecommerce-law-3y", 30),
                           Protection("children", "shop.returns", 3)],
                cascades=[Cascade("shop.order_items", "delete", "order_items.order_id -> orders", 4000),
                          Cascade("shop.reviews", "detach", "reviews.order_id -> orders", 17)],
                oldest_clock=datetime(2019, 3, 14, 8, 30, tzinfo=timezone.utc),
                forecast={"7d": 10, "30d": 45, "90d": 120, "365d": 800},
                batches=3, duration_seconds=1.5,
                statements=["DELETE FROM orders WHERE completed_at < :cutoff"]),
            RuleOutcome(
                rule="access-logs", action="delete", table="shop.access_logs", status="guard_tripped",
                due=95000, touch=0, guard=Guard("tripped", max_rows=None, max_fraction=0.9, table_rows=100000, rows=95000),
                oldest_clock=datetime(2024, 1, 1, tzinfo=timezone.utc),
                statements=["DELETE FROM access_logs WHERE created_at < :cutoff"]),
            RuleOutcome(
                rule="users-anonymize", action="anonymize", table="shop.users", status="failed",
                error=f"(psycopg.OperationalError) connection to postgresql://shop:{SECRET}@db/shop failed",
                kept_columns=["total", "currency"]),
        ]
    return Report(run_id="r-42", dry_run=dry_run, now=NOW, config_path="policies.toml",
                  config_sha256="3f9a0c1d2e4b5a69788796a5b4e3d2c1f0", show_sql=show_sql, rules=rules,
                  started_at=NOW, finished_at=datetime(2025, 6, 1, 12, 0, 3, tzinfo=timezone.utc))


def text_table(out: str) -> list[dict[str, str]]:
    """Parse the text summary table (ASCII content) by the spans of its dashed rule."""
    lines = out.splitlines()
    dash_at = next(i for i, line in enumerate(lines) if re.fullmatch(r"-+( +-+)+", line))
    spans = [m.span() for m in re.finditer(r"-+", lines[dash_at])]
    # the last column is left-aligned and unpadded: let it run to the end of line
    spans[-1] = (spans[-1][0], None)
    header = [lines[dash_at - 1][a:b].strip() for a, b in spans]
    rows = []
    for line in lines[dash_at + 1:]:
        if not line.strip():
            break
        rows.append(dict(zip(header, (line[a:b].strip() for a, b in spans))))
    return rows


def md_cells(row: str) -> list[str]:
    """Split a GFM table row at pipes not escaped by a backslash."""
    assert row.startswith("|") and row.endswith("|"), row
    cells, current, i = [], "", 1
    while i < len(row) - 1:
        ch = row[i]
        if ch == "\\":
            current += row[i:i + 2]
            i += 2
            continue
        if ch == "|":
            cells.append(current.strip())
            current = ""
        else:
            current += ch
        i += 1
    cells.append(current.strip())
    return cells


# -- text ---------------------------------------------------------------------

def test_text_counts_land_in_their_columns():
    rows = {r["rule"]: r for r in text_table(render_text(make_report()))}
    assert rows["closed-orders"] == {
        "rule": "closed-orders", "action": "delete", "table": "shop.orders", "due": "1,200",
        "protected": "45", "would touch": "1,155", "unchanged": "0", "remaining": "0", "cascaded": "4,017",
        "oldest clock": "2019-03-14", "status": "ok"}
    assert rows["access-logs"]["status"] == "GUARD TRIPPED"
    assert rows["access-logs"]["due"] == "95,000"
    assert rows["users-anonymize"]["status"] == "FAILED"
    assert rows["users-anonymize"]["oldest clock"] == "-"


def test_text_touch_header_depends_on_mode():
    dry = render_text(make_report(dry_run=True))
    run = render_text(make_report(dry_run=False))
    assert "would touch" in text_table(dry)[0] and "touched" not in text_table(dry)[0]
    assert "touched" in text_table(run)[0] and "would touch" not in text_table(run)[0]
    assert text_table(run)[0]["touched"] == "1,155"
    assert dry.startswith("RETENTION DRY RUN")
    assert run.startswith("RETENTION RUN")
    assert "1,155 would touch" in dry and "1,155 touched" in run


def test_text_header_names_run_config_and_short_sha():
    out = render_text(make_report())
    head = out.split("\n\n")[0]
    assert "r-42" in head
    assert "2025-06-01T12:00:00+00:00" in head
    assert "policies.toml (sha256 3f9a0c1d2e4b)" in head
    assert "3f9a0c1d2e4b5" not in out


def test_text_details_break_down_protections_cascades_forecast():
    out = render_text(make_report())
    block = out.split("\nclosed-orders\n")[1].split("\n\n")[0]
    assert "45: hold litigation 12, floor ecommerce-law-3y 30, children shop.returns 3" in block
    assert "shop.order_items: delete 4,000 (via order_items.order_id -> orders)" in block
    assert "shop.reviews: detach 17" in block
    assert "next 7d 10, 30d 45, 90d 120, 365d 800" in block
    assert "Orders kept 5 years" in block


def test_text_guard_detail_shows_limits_and_table_size():
    out = render_text(make_report())
    block = out.split("\naccess-logs\n")[1].split("\n\n")[0]
    assert "TRIPPED" in block
    assert "100,000" in block and "95.0%" in block and "max_fraction 0.9" in block


def test_text_failed_rule_shows_masked_error_and_kept_columns():
    out = render_text(make_report())
    block = out.split("\nusers-anonymize\n")[1].split("\n\n")[0]
    assert "postgresql://shop:***@db/shop failed" in block
    assert "total, currency" in block
    assert SECRET not in out


def test_text_routine_rule_details_show_only_its_cutoff():
    quiet = RuleOutcome(rule="quiet-rule", action="restrict", table="shop.msgs", due=5, touch=5,
                        cutoff=datetime(2025, 5, 2, 12, 0, tzinfo=timezone.utc))
    out = render_text(make_report(rules=[quiet]))
    block = out.split("\nquiet-rule\n", 1)[1].split("\n\n", 1)[0]
    assert block.splitlines() == ["  cutoff  2025-05-02T12:00:00+00:00 (due: clock at or before it)"]


def test_text_totals_and_exit_line():
    out = render_text(make_report())
    last, before = out.splitlines()[-1], out.splitlines()[-2]
    assert before.startswith("totals: 3 rules, 96,200 due, 45 protected, 1,155 would touch, 4,017 cascaded")
    assert "1 failed" in before and "1 guard tripped" in before
    assert last.startswith("exit 1: 1 rule failed (users-anonymize)")
    assert "--allow-large" in last


def test_text_exit_line_for_guard_only_and_success():
    rules = make_report().rules
    guard_only = render_text(make_report(rules=rules[:2]))
    assert guard_only.splitlines()[-1] == (
        "exit 3: guard tripped on access-logs: re-run with --allow-large if this is intended")
    ok = render_text(make_report(rules=rules[:1], dry_run=False))
    assert ok.splitlines()[-1] == "exit 0: success"


def test_text_allowed_guard_is_reported_but_not_an_error():
    rule = RuleOutcome(rule="purge-abandoned", action="delete", table="shop.tmp", due=10, touch=10,
                       guard=Guard("allowed", max_rows=5, max_fraction=None, table_rows=10, rows=10))
    out = render_text(make_report(rules=[rule], dry_run=False))
    assert "allowed by --allow-large" in out and "max_rows 5" in out
    assert out.splitlines()[-1] == "exit 0: success"


def test_text_sql_only_with_show_sql():
    without = render_text(make_report(show_sql=False))
    with_sql = render_text(make_report(show_sql=True))
    assert "DELETE FROM orders" not in without
    assert "    DELETE FROM orders WHERE completed_at < :cutoff;" in with_sql
    assert "    DELETE FROM access_logs WHERE created_at < :cutoff;" in with_sql


def test_text_batches_only_in_a_run():
    assert "3 in 1.5s" not in render_text(make_report(dry_run=True))
    assert "3 in 1.5s" in render_text(make_report(dry_run=False))


def test_text_aligns_wide_characters_by_display_width():
    rules = [RuleOutcome(rule="用户-清理", action="restrict", table="shop.消息", due=5, touch=5),
             RuleOutcome(rule="ascii-rule", action="delete", table="shop.logs", due=123456, touch=1)]
    lines = render_text(make_report(rules=rules)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rule "))
    table = lines[start:start + 4]
    # every row's last column (status) starts at the same terminal cell
    starts = {display_width(line) - display_width(line.split()[-1]) for line in table}
    assert len(starts) == 1, table
    assert display_width("用户") == 4 and display_width("e\u0301") == 1


def test_text_empty_report():
    out = render_text(make_report(rules=[]))
    assert "no rules selected" in out
    assert out.endswith("exit 0: success (dry run: nothing was changed)\n")


# -- json ---------------------------------------------------------------------

def test_json_round_trips_with_documented_keys():
    doc = json.loads(render_json(make_report()))
    assert list(doc) == ["schema_version", "run_id", "mode", "dry_run", "simulated", "now", "started_at", "finished_at",
                         "config", "rules", "totals", "interrupted", "skipped", "errors", "audit", "exit_code",
                         "plan", "requests", "shard"]
    assert doc["schema_version"] == 1 and doc["mode"] == "dry-run" and doc["exit_code"] == 1
    assert datetime.fromisoformat(doc["now"]) == NOW
    assert doc["config"] == {"path": "policies.toml", "sha256": "3f9a0c1d2e4b5a69788796a5b4e3d2c1f0"}
    assert doc["totals"] == {"rules": 3, "failed": 1, "guard_tripped": 1, "incomplete": 0, "check_failed": 0,
                            "due": 96200, "protected": 45,
                             "touch": 1155, "cascaded": 4017}
    first = doc["rules"][0]
    assert first["protected_total"] == 45 and first["cascaded_total"] == 4017
    assert first["protected"][0] == {"kind": "hold", "name": "litigation", "rows": 12}
    assert first["cascades"][1] == {"table": "shop.reviews", "action": "detach",
                                    "via": "reviews.order_id -> orders", "rows": 17}
    assert first["oldest_clock"] == "2019-03-14T08:30:00+00:00"
    assert doc["rules"][1]["guard"] == {"state": "tripped", "max_rows": None, "max_fraction": 0.9,
                                        "table_rows": 100000, "rows": 95000, "rule_rows": None}


def test_json_is_stable_and_masks_credentials():
    a, b = render_json(make_report()), render_json(make_report())
    assert a == b and a.endswith("}\n")
    assert SECRET not in a
    assert json.loads(a)["rules"][2]["error"].endswith("postgresql://shop:***@db/shop failed")
    run = json.loads(render_json(make_report(dry_run=False)))
    assert run["mode"] == "run" and run["dry_run"] is False


# -- markdown -----------------------------------------------------------------

def test_markdown_tables_have_consistent_columns():
    report = make_report(rules=make_report().rules + [
        RuleOutcome(rule="odd|name", action="delete", table="shop.x|y", due=1, touch=1,
                    protected=[Protection("floor", "a|b", 1)],
                    cascades=[Cascade("shop.c", "delete", "c.x_id -> x|y", 2)])])
    out = render_markdown(report)
    tables, current = [], []
    for line in out.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append(current)
            current = []
    assert len(tables) >= 4   # summary, protected x2, cascades x2
    for table in tables:
        widths = {len(md_cells(row)) for row in table}
        assert len(widths) == 1, table
    summary = tables[0]
    assert len(md_cells(summary[0])) == 11
    assert len(summary) == 2 + 4   # header, alignment, one row per rule
    odd = next(md_cells(r) for r in summary if r.startswith("| odd"))
    assert odd[0] == r"odd\|name" and odd[2] == r"shop.x\|y"


def test_markdown_summary_counts_and_mode_header():
    dry = render_markdown(make_report(dry_run=True))
    run = render_markdown(make_report(dry_run=False))
    header = md_cells(next(line for line in dry.splitlines() if line.startswith("| rule")))
    row = md_cells(next(line for line in dry.splitlines() if line.startswith("| closed-orders")))
    assert dict(zip(header, row))["would touch"] == "1,155"
    assert dict(zip(header, row))["cascaded"] == "4,017"
    assert "touched" in md_cells(next(line for line in run.splitlines() if line.startswith("| rule")))
    assert dry.startswith("# Retention dry run") and run.startswith("# Retention run")


def test_markdown_sections_per_rule_and_sql_only_with_show_sql():
    out = render_markdown(make_report())
    for name in ("closed-orders", "access-logs", "users-anonymize"):
        assert f"### `{name}`" in out
    assert "```sql" not in out and "DELETE FROM" not in out
    with_sql = render_markdown(make_report(show_sql=True))
    sections = {chunk.split("`")[1]: chunk for chunk in with_sql.split("\n### ")[1:]}
    assert "```sql\nDELETE FROM orders WHERE completed_at < :cutoff;\n```" in sections["closed-orders"]
    assert "DELETE FROM access_logs" in sections["access-logs"]
    assert "DELETE FROM orders" not in sections["access-logs"]
    assert "```sql" not in sections["users-anonymize"]   # no statements, no block
    assert SECRET not in out and "postgresql://shop:***@db/shop" in out
    assert "guard tripped on access-logs" in out


@pytest.mark.parametrize("fmt", FORMATS)
def test_render_dispatches_to_each_format(fmt):
    out = render(make_report(), fmt)
    assert out.endswith("\n") and "closed-orders" in out
