"""`retention schedule`: the policy file as a document of what is kept, how long, why, and what then.

It reads the policy file alone: no database is opened and no URL resolved,
so a privacy officer can produce it where no credentials are at hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from retention import cli
from tests.test_report_html import Page
from tests.test_report_render import md_cells

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "policies.toml"

POLICY = """
version = 1

[databases.shop]
url = "${SHOP_URL_NOBODY_SET}"            # unset, no default: only a schedule can read this file

[databases.crm]
url_file = "/nonexistent/secret/crm-url"  # a secret volume that is not mounted here

[[rules]]
name = "logs-90d"
table = "shop.logs"
clock = "created_at"
after = "90d"
action = "delete"
basis = 'Logs kept "90 days" <b>for security</b> & then deleted'

[[rules]]
name = "crm-anonymize"
table = "crm.contacts"
clock = "closed_at"
after = "0d"
action = "anonymize"
where = { status = ["closed", "banned"], region = { ne = "eu" } }
columns.email = { strategy = "hash", length = 16 }
columns.phone = "null"
mark = "anonymized_at"
check = { quasi_identifiers = ["region", "status"], k = 10 }

[[rules]]
name = "old-notes-restrict"
table = "crm.notes"
clock = "created_at"
after = "P1Y6M"
action = "restrict"
enabled = false

[[floors]]
name = "tax-10y"
table = "shop.invoices"
clock = "issued_at"
keep = "10y"
basis = "Tax law: invoices kept 10 years"
columns = ["total", "issued_at"]

[[backups]]
name = "nightly"
location = "s3://backup:topsecret@store.internal/shop"
keep_daily = 7
keep_monthly = 6
max_age = "200d"
"""


def _schedule(tmp_path, *args, policy: str = POLICY):
    path = tmp_path / "policies.toml"
    path.write_text(policy)
    return CliRunner().invoke(cli.cli, ["-c", str(path), "--now", "2026-12-01T00:00:00Z", "schedule", *args],
                              env={"SHOP_URL_NOBODY_SET": ""})


def _md_tables(out: str) -> dict[str, list[dict[str, str]]]:
    """Each section's table, by its heading: header -> cell per row."""
    tables, title, rows = {}, None, []
    for line in out.splitlines() + [""]:
        if line.startswith("## "):
            title = line[3:]
        elif line.startswith("|"):
            rows.append(md_cells(line))
        elif rows:
            header, _align, *body = rows
            assert all(len(r) == len(header) for r in body), rows
            tables[title] = [dict(zip(header, r)) for r in body]
            rows = []
    return tables


def test_the_schedule_needs_no_database_url(tmp_path):
    result = _schedule(tmp_path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Retention schedule\n")
    # the same file cannot be planned: its URLs do not resolve here
    planned = CliRunner().invoke(cli.cli, ["-c", str(tmp_path / "policies.toml"), "plan"],
                                 env={"SHOP_URL_NOBODY_SET": ""})
    assert planned.exit_code == 2 and "SHOP_URL_NOBODY_SET" in planned.output


def test_each_rule_floor_and_backup_is_a_row_with_its_period_action_and_basis(tmp_path):
    tables = _md_tables(_schedule(tmp_path).output)
    rules = {r["rule"]: r for r in tables["Retention periods"]}
    assert list(rules) == ["logs-90d", "crm-anonymize", "old-notes-restrict (disabled: not enforced)"]
    logs = rules["logs-90d"]
    assert (logs["data"], logs["kept until"], logs["then"]) == ("shop.logs", "90d after created_at", "deleted")
    assert logs["basis"] == 'Logs kept "90 days" <b>for security</b> & then deleted'
    crm = rules["crm-anonymize"]
    assert crm["data"] == "crm.contacts: email, phone; where status in (closed, banned) and region != eu"
    assert crm["kept until"] == "from closed_at (as soon as it is set)"
    assert crm["then"] == ("anonymized (email: hash (length 16); phone: null); every combination of region, "
                           "status shared by at least 10 rows (checked after each run)")
    assert crm["basis"] == "-"
    notes = rules["old-notes-restrict (disabled: not enforced)"]
    assert notes["kept until"] == "P1Y6M after created_at"
    assert notes["then"] == "restricted: kept, beyond use (restricted_at set)"
    assert tables["Minimum retention"] == [{"data": "shop.invoices: total, issued_at", "kept at least":
                                            "10y after issued_at", "basis": "Tax law: invoices kept 10 years",
                                            "floor": "tax-10y"}]
    backup, = tables["Backups"]
    assert backup["rotation"] == "keep daily 7, monthly 6, none older than 200d"
    assert backup["erased data gone"] == "within 200d of the erasure"
    assert "topsecret" not in _schedule(tmp_path).output and backup["location"] == \
        "s3://backup:***@store.internal/shop"
    # sections with nothing to say are left out
    assert set(tables) == {"Retention periods", "Minimum retention", "Backups"}


def test_the_demo_schedule_covers_holds_requests_recipients_and_related_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.cli, ["-c", str(DEMO), "schedule"])
    assert result.exit_code == 0, result.output
    tables = _md_tables(result.output)
    assert [r["rule"] for r in tables["Retention periods"]][:2] == ["access-logs-180d", "closed-accounts-restrict"]
    assert tables["Legal holds"][0]["hold"] == "litigation"
    assert tables["Legal holds"][0]["held"] == "while released_at is empty"
    dsr, = tables["Erasure requests"]
    assert dsr["answered within"] == "15d of receipt (received_at)"
    assert "Each erasure is passed on to: logistics-partner." in result.output
    related = {r["table"]: r["when the row it refers to is deleted"] for r in tables["Related records"]}
    assert related["shop.order_items"] == "deleted with its parent"
    assert related["shop.merchants"] == "kept; its link to the parent is cleared"
    assert related["shop.orders"] == "its parent is kept while it exists"


def test_html_schedule_is_one_escaped_page_with_the_same_rows(tmp_path):
    out = tmp_path / "schedule.html"
    result = _schedule(tmp_path, "--out", str(out))
    assert result.exit_code == 0 and result.output == ""
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<b>for security</b>" not in html and "&lt;b&gt;for security&lt;/b&gt; &amp; then" in html
    assert "topsecret" not in html
    page = Page(html)
    assert page.errors == []
    markdown = _md_tables(_schedule(tmp_path).output)["Retention periods"]
    assert page.rows(0) == markdown


def test_credentials_and_control_characters_never_reach_the_markdown_schedule(tmp_path):
    # the file holds TOML's escape for ESC; parsed, the basis holds the character itself
    policy = POLICY.replace('basis = \'Logs kept "90 days" <b>for security</b> & then deleted\'',
                            'basis = "see postgresql://admin:hunter2@db/x password=hunter3 \\u001b[31m logs"')
    assert policy != POLICY
    result = _schedule(tmp_path, policy=policy)
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "hunter3" not in result.output and "\x1b" not in result.output
    assert "postgresql://admin:***@db/x password=***" in result.output and "\\x1b[31m" in result.output


def test_only_lists_the_named_rules_and_refuses_an_unknown_name(tmp_path):
    result = _schedule(tmp_path, "--only", "logs-90d")
    assert result.exit_code == 0
    assert [r["rule"] for r in _md_tables(result.output)["Retention periods"]] == ["logs-90d"]
    unknown = _schedule(tmp_path, "--only", "nope")
    assert unknown.exit_code == 2 and "no rule named 'nope'" in unknown.output and "--only" in unknown.output


@pytest.mark.parametrize("bad, key", [('after = "90d"', 'after = "3m"'), ('action = "delete"', 'action = "purge"')])
def test_a_bad_policy_file_is_refused_with_its_file_rule_and_key(tmp_path, bad, key):
    result = _schedule(tmp_path, policy=POLICY.replace(bad, key, 1))
    assert result.exit_code == 2
    assert "policies.toml" in result.output and "logs-90d" in result.output
    assert key.split(" = ")[0] in result.output
