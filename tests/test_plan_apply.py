"""Reviewed plans applied exactly: same now, same rules, never more rows than the plan counted."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from retention import commands
from retention.errors import ConfigError
from retention.report import render
from tests.runkit import retention
from tests.shopkit import HASH_ENV, LOGS_PURGE, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)

ADDRESSES_PURGE = """
[[rules]]
name = "addresses-purge"
table = "shop.addresses"
clock = "user.closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0
"""


def _logs(shop, ids) -> None:
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1)) for i in ids])


@pytest.fixture
def planned(shop, tmp_path):
    shop.user(1, closed_at=datetime(2026, 1, 1))
    _logs(shop, range(1, 11))
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Main St"), dict(id=2, user_id=1, line1="2 Main St"))
    policy = shop.policy(LOGS_PURGE + ADDRESSES_PURGE, settings="batch_size = 3")
    report = commands.plan(policy, now=NOW, env=HASH_ENV)
    path = tmp_path / "plan.json"
    path.write_text(render(report, "json"))
    return shop, policy, str(path)


def _apply(policy, plan, **kw):
    return commands.run(policy, plan_file=plan, env=HASH_ENV, **kw)


def test_the_plan_is_versioned_data_in_the_dry_run_report(planned):
    _shop, _policy, plan = planned
    doc = json.loads(open(plan).read())["plan"]
    assert (doc["format"], doc["version"], doc["now"]) == ("retention-plan", 1, NOW.isoformat())
    rules = {r["rule"]: r for r in doc["rules"]}
    assert rules["logs-purge"]["touch"] == 10 and rules["addresses-purge"]["touch"] == 2
    assert rules["logs-purge"]["inputs"] and len(rules["logs-purge"]["predicate_sha256"]) == 64


def test_a_plan_is_applied_at_its_now_and_does_what_it_counted(planned):
    shop, policy, plan = planned
    report = _apply(policy, plan)
    assert report.exit_code == 0 and report.now == NOW
    assert outcome(report, "logs-purge").touch == 10 and outcome(report, "addresses-purge").touch == 2
    assert shop.count("logs") == 0 and shop.count("addresses") == 0
    assert report.plan["sha256"] and report.to_dict()["mode"] == "run"


def test_more_due_than_planned_refuses_that_rule_and_touches_nothing_in_it(planned):
    shop, policy, plan = planned
    _logs(shop, range(11, 14))                      # three more became due after the review
    report = _apply(policy, plan)
    assert report.exit_code == 3
    logs = outcome(report, "logs-purge")
    assert logs.status == "plan_drifted" and logs.touch == 0 and logs.remaining == 13
    assert shop.count("logs") == 13                 # nothing touched in the drifted rule
    assert outcome(report, "addresses-purge").touch == 2 and shop.count("addresses") == 0


@pytest.mark.parametrize("drift", ["3", "30%"])
def test_within_max_drift_the_rule_runs_but_never_beyond_what_was_counted(planned, drift):
    shop, policy, plan = planned
    _logs(shop, range(11, 14))
    report = _apply(policy, plan, max_drift=drift)
    assert report.exit_code == 0
    assert outcome(report, "logs-purge").touch == 10      # the plan's count, not the 13 due now
    assert shop.count("logs") == 3


def test_beyond_a_percentage_drift_is_refused(planned):
    shop, policy, plan = planned
    _logs(shop, range(11, 14))
    assert outcome(_apply(policy, plan, max_drift="20%"), "logs-purge").status == "plan_drifted"
    assert shop.count("logs") == 13


def test_fewer_due_than_planned_is_fine(planned):
    shop, policy, plan = planned
    with shop.engine.begin() as conn:
        conn.execute(shop.t("logs").delete().where(shop.t("logs").c.id <= 4))
    report = _apply(policy, plan)
    assert report.exit_code == 0 and outcome(report, "logs-purge").touch == 6


def test_a_changed_policy_is_refused(planned):
    shop, policy, plan = planned
    with open(policy, "a") as f:
        f.write("\n# reviewed? no\n")
    before = shop.dump()
    with pytest.raises(ConfigError, match="policy file changed since the plan"):
        _apply(policy, plan)
    proc = retention("run", "-c", policy, "--plan", plan)
    assert proc.returncode == 2 and "--plan" in proc.stderr
    assert shop.dump() == before


def test_another_now_or_other_rules_are_refused(planned):
    shop, policy, plan = planned
    before = shop.dump()
    with pytest.raises(ConfigError, match="not the plan's now"):
        _apply(policy, plan, now=datetime(2026, 6, 16, tzinfo=timezone.utc))
    with pytest.raises(ConfigError, match="--only"):
        _apply(policy, plan, only=["logs-purge"])
    with pytest.raises(ConfigError, match="--max-drift"):
        commands.run(policy, max_drift="3", env=HASH_ENV, now=NOW)
    with pytest.raises(ConfigError, match="--max-drift"):
        _apply(policy, plan, max_drift="lots")
    assert shop.dump() == before


def test_a_file_that_is_not_a_plan_is_refused(planned, tmp_path):
    shop, policy, _plan = planned
    bad = tmp_path / "bad.json"
    for text in ("{not json", json.dumps({"format": "retention-plan", "version": 99}), "[]"):
        bad.write_text(text)
        with pytest.raises(ConfigError, match="bad.json"):
            _apply(policy, str(bad))
    assert shop.count("logs") == 10


def test_plan_out_writes_the_plan_and_run_plan_applies_it(sqlite_shop, tmp_path):
    sqlite_shop.user(1)
    _logs(sqlite_shop, range(1, 6))
    policy = sqlite_shop.policy(LOGS_PURGE)
    out = tmp_path / "reviewed.json"
    proc = retention("plan", "-c", policy, "--now", NOW.isoformat(), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["plan"]["rules"][0]["touch"] == 5
    applied = retention("run", "-c", policy, "--plan", str(out), "--format", "json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["totals"]["touch"] == 5 and sqlite_shop.count("logs") == 0
