"""[rules.check]: after anonymizing, the smallest class over the quasi-identifiers, against k.

The check judges the rows the rule anonymized, as the database holds them
after the run: classes below k fail the rule's check (exit 1) without undoing
anything. A plain dry run anonymizes nothing and so does not judge;
``--simulate`` judges the values the run would write. Only sizes are
reported, never a value.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest
from click.testing import CliRunner

from retention import cli
from retention.report import render
from tests.shopkit import HASH_ENV, HOLDS

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
CLOSED = datetime(2025, 1, 1)

RULE = """
[[rules]]
name = "closed-generalize"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "anonymize"
columns.birth_date = { strategy = "generalize", to = "year" }
columns.last_ip = { strategy = "generalize", ipv4_prefix = 16 }
columns.name = { strategy = "constant", value = "gone" }
columns.email = "null"
{mark}
max_fraction = 1.0
[rules.check]
quasi_identifiers = ["birth_date", "last_ip"]
k = {k}
"""

#: closed users by birth date and IP: after generalizing, classes (1980, 10.1) x3, (1990, 10.1) x2,
#: (1990, 10.9) x1; user 7 (a 1990 birth date too) is held, so not anonymized and in no class
BIRTHS = {1: date(1980, 2, 3), 2: date(1980, 7, 9), 3: date(1980, 12, 30), 4: date(1990, 1, 1),
          5: date(1990, 8, 8), 6: date(1990, 3, 3), 7: date(1990, 4, 4)}
IPS = {1: "10.1.2.3", 2: "10.1.9.9", 3: "10.1.0.1", 4: "10.1.4.4", 5: "10.1.200.7", 6: "10.9.1.1", 7: "10.1.5.5"}


def _fill(shop, ips: dict[int, str] = IPS) -> None:
    for i in BIRTHS:
        shop.user(i, status="closed", closed_at=CLOSED, birth_date=BIRTHS[i], last_ip=ips[i])
    shop.user(8)                                   # open: not due, in no class
    shop.insert("legal_holds", dict(id=1, user_id=7, released_at=None))


def _policy(shop, k: int, mark: bool = True, extra: str = "") -> str:
    return shop.policy(HOLDS + RULE.replace("{k}", str(k))
                       .replace("{mark}", ('mark = "anonymized_at"' if mark else "") + "\n" + extra))


def test_a_class_below_k_fails_the_check_after_the_rows_are_anonymized(shop):
    _fill(shop)
    report = shop.run(_policy(shop, k=2), now=NOW)
    out, = report.rules
    assert out.status == "check_failed" and report.exit_code == 1
    assert out.check == {"k": 2, "quasi_identifiers": ["birth_date", "last_ip"], "evaluated": True,
                         "passed": False, "smallest_class": 1, "classes": 3, "rows": 6,
                         "not_judged": None}
    assert out.touch == 6                          # anonymized all the same: the check judges, it undoes nothing
    assert {u["id"] for u in shop.rows("users") if u["anonymized_at"] is not None} == {1, 2, 3, 4, 5, 6}
    text = render(report, "text")
    assert "k = 2 over birth_date, last_ip: FAILED, smallest class 1 (6 rows in 3 classes)" in text
    assert "k-anonymity check failed on closed-generalize" in text
    assert "1 check failed" in text
    assert render(report, "json").count('"smallest_class": 1') == 1


def test_every_class_at_k_passes_and_a_second_run_judges_the_same_rows(shop):
    _fill(shop, ips={**IPS, 6: "10.1.7.7"})       # (1990, 10.1) has 3
    policy = _policy(shop, k=3)
    first = shop.run(policy, now=NOW)
    assert first.rules[0].status == "ok" and first.exit_code == 0
    assert first.rules[0].check["smallest_class"] == 3 and first.rules[0].check["classes"] == 2
    again = shop.run(policy, now=NOW).rules[0]
    assert again.touch == 0 and again.check == first.rules[0].check      # marked rows, judged again


def test_a_plain_dry_run_does_not_judge_and_a_simulation_does_without_changing_anything(shop):
    _fill(shop)
    policy = _policy(shop, k=2)
    planned = shop.run(policy, dry_run=True, now=NOW)
    assert planned.rules[0].status == "ok" and planned.exit_code == 0
    assert planned.rules[0].check["evaluated"] is False and planned.rules[0].check["passed"] is None
    assert "not judged" in render(planned, "text")
    simulated = shop.run(policy, dry_run=True, simulate=True, now=NOW)
    assert simulated.rules[0].check["smallest_class"] == 1 and simulated.rules[0].status == "check_failed"
    assert all(u["anonymized_at"] is None for u in shop.rows("users"))


def test_a_check_without_a_mark_is_refused(sqlite_shop):
    # without a mark the job could not tell the rows it anonymized: a `where` on a column the
    # rule rewrites would no longer match them, and the check would judge none
    result = CliRunner().invoke(cli.cli, ["-c", _policy(sqlite_shop, k=2, mark=False), "check"], env=HASH_ENV)
    assert result.exit_code == 2
    assert "closed-generalize" in result.output and "needs 'mark'" in result.output


def test_a_shard_or_a_tripped_guard_does_not_judge_and_says_why(sqlite_shop):
    _fill(sqlite_shop)
    shard = sqlite_shop.run(_policy(sqlite_shop, k=2), now=NOW, shard="0/2").rules[0]
    assert shard.status == "ok" and 0 < shard.touch < 6
    assert shard.check["evaluated"] is False and shard.check["not_judged"] == "shard"
    tripped = sqlite_shop.run(_policy(sqlite_shop, k=2, extra="max_rows = 1"), now=NOW)
    out = tripped.rules[0]
    assert out.status == "guard_tripped" and out.check["not_judged"] == "stopped"
    assert "not judged (the rule did not run to its end)" in render(tripped, "text")
    unsharded = sqlite_shop.run(_policy(sqlite_shop, k=2), now=NOW).rules[0]
    assert unsharded.status == "check_failed" and unsharded.check["rows"] == 6


def test_the_report_holds_sizes_never_values(sqlite_shop):
    _fill(sqlite_shop)
    report = sqlite_shop.run(_policy(sqlite_shop, k=2), now=NOW)
    check = report.rules[0].check
    assert all(isinstance(v, (int, bool)) for key, v in check.items() if key not in ("quasi_identifiers", "not_judged"))
    written = "\n".join(render(report, fmt) for fmt in ("text", "json", "markdown", "html"))
    for value in ("1980", "1990", "10.1.", "10.9."):
        assert value not in written


@pytest.mark.parametrize("change, key, message", [
    (('action = "anonymize"', 'action = "restrict"'), "check", "only applies to action 'anonymize'"),
    (('"birth_date", "last_ip"', '"birth_date", "zip"'), "check.quasi_identifiers", "zip"),
    (('k = 2', 'k = 1'), "k", "greater than or equal to 2"),
    (('"birth_date", "last_ip"', ''), "quasi_identifiers", "at least 1"),
])
def test_a_bad_check_is_refused_naming_the_rule_and_key(sqlite_shop, change, key, message):
    _fill(sqlite_shop)
    policy = _policy(sqlite_shop, k=2)
    text = open(policy).read()
    with open(policy, "w") as f:
        f.write(text.replace(*change))
    result = CliRunner().invoke(cli.cli, ["-c", policy, "--now", NOW.isoformat(), "run"], env=HASH_ENV)
    assert result.exit_code == 2, result.output
    assert "closed-generalize" in result.output and key in result.output and message in result.output
    assert all(u["anonymized_at"] is None for u in sqlite_shop.rows("users"))


def test_the_metric_and_the_json_report_carry_the_smallest_class(sqlite_shop, tmp_path):
    _fill(sqlite_shop)
    metrics = tmp_path / "m.prom"
    result = CliRunner().invoke(cli.cli, ["-c", _policy(sqlite_shop, k=2), "--now", NOW.isoformat(), "run",
                                          "--format", "json", "--metrics-file", str(metrics)], env=HASH_ENV)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["rules"][0]["status"] == "check_failed" and doc["totals"]["check_failed"] == 1
    assert 'retention_k_anonymity_smallest_class{' in metrics.read_text()
    line = next(x for x in metrics.read_text().splitlines() if x.startswith("retention_k_anonymity_smallest_class{"))
    assert 'rule="closed-generalize"' in line and 'k="2"' in line and line.endswith(" 1.0")
    failed = next(x for x in metrics.read_text().splitlines() if x.startswith("retention_rule_failed{"))
    assert failed.endswith(" 1.0")                 # alerts on failed rules see a failed check too
