"""Every report format says, per rule, what was unchanged, what remains and the cutoff it used.

``due = protected + touch + unchanged + remaining`` holds for every rule; the
JSON report always carried all four, the text and markdown reports dropped the
last two and never said which instant the clocks were compared with.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV

NOW = "2025-06-01T00:00:00+00:00"

POLICY = """
[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "restrict"
max_fraction = 1.0

[[rules]]
name = "logs-guarded"
table = "shop.logs"
clock = "created_at"
after = "9999y"
action = "delete"
max_rows = 0
"""


def _shop(shop) -> str:
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1), restricted_at=datetime(2021, 1, 1))  # unchanged
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))                                      # touched
    shop.insert("logs", dict(id=1, user_id=2, ip="10.0.0.1", created_at=datetime(1, 1, 1)))
    return shop.policy(POLICY)


def _invoke(policy: str, fmt: str) -> str:
    result = CliRunner().invoke(cli, ["-c", policy, "--now", NOW, "plan", "--format", fmt], env=HASH_ENV)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_json_report_names_the_cutoff_each_rule_used(shop):
    report = json.loads(_invoke(_shop(shop), "json"))
    rules = {r["rule"]: r for r in report["rules"]}
    assert rules["closed-restrict"]["cutoff"] == "2025-05-02T00:00:00+00:00"
    assert (rules["closed-restrict"]["unchanged"], rules["closed-restrict"]["touch"]) == (1, 1)
    assert rules["logs-guarded"]["cutoff"] is None          # 9999 years reach past the calendar


def test_text_report_shows_unchanged_remaining_and_cutoff(shop):
    out = _invoke(_shop(shop), "text")
    header = next(line for line in out.splitlines() if line.startswith("rule "))
    cells = header.split()
    assert "unchanged" in cells and "remaining" in cells
    row = next(line for line in out.splitlines() if line.startswith("closed-restrict ")).split()
    numbers = dict(zip(["due", "protected", "would", "unchanged", "remaining"], row[3:8]))
    assert numbers == {"due": "2", "protected": "0", "would": "1", "unchanged": "1", "remaining": "0"}
    assert "cutoff  2025-05-02T00:00:00+00:00" in out
    assert "none: the period reaches past an end of the calendar" in out


def test_markdown_report_shows_unchanged_remaining_and_cutoff(shop):
    out = _invoke(_shop(shop), "markdown")
    header = next(line for line in out.splitlines() if line.startswith("| rule |"))
    assert "| unchanged | remaining |" in header
    row = next(line for line in out.splitlines() if line.startswith("| closed-restrict |"))
    assert "| 1 | 1 | 0 |" in row                        # would touch, unchanged, remaining
    assert "- **cutoff:** 2025-05-02T00:00:00+00:00" in out
