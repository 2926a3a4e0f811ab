"""Requests and reviewed plans: a plan lists the open requests, applying it fulfils exactly those.

A request filed after the plan waits for the next plan; one whose erasure
would change more rows than a simulated plan counted (beyond --max-drift)
is rolled back and drifts (exit 3).  A run limited by --only fulfils no
request and says so.  Never silently.
"""

from __future__ import annotations

import json

from retention import commands
from retention.report import render
from retention.requests.commands import file_request, list_requests
from tests.shopkit import HASH_ENV, LOGS_PURGE
from tests.test_requests import POLICY, T0, _fill


def _plan(shop, policy, tmp_path, **kw) -> str:
    report = commands.plan(policy, now=T0, env=HASH_ENV, **kw)
    path = tmp_path / "plan.json"
    path.write_text(render(report, "json"))
    return str(path)


def _items(report) -> dict[str, dict]:
    return {r["request"]: r for r in report.to_dict()["requests"]["items"]}


def _text(report) -> str:
    from retention.report.text import render_text
    return render_text(report)


def test_a_reviewed_plan_fulfils_exactly_the_requests_it_lists(shop, tmp_path):
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    plan = _plan(shop, policy, tmp_path)
    doc = json.loads(open(plan).read())["plan"]
    assert [(r["request"], r["rows"]) for r in doc["requests"]] == [("dsr#1", None)]
    assert doc["requests"][0]["subject_hash"].startswith("hmac:")
    file_request(policy, "customer:4", now=T0, env=HASH_ENV)          # filed after the review
    report = commands.run(policy, plan_file=plan, env=HASH_ENV)
    assert report.exit_code == 0, report.errors
    items = _items(report)
    assert items["dsr#1"]["status"] == "done" and 1 not in shop.ids("users")
    assert items["dsr#2"]["status"] == "pending" and 4 in shop.ids("users")
    assert "not in the reviewed plan" in items["dsr#2"]["skipped"][0]
    assert "not fulfilled by this run" in _text(report)
    # a run without --plan then fulfils it
    commands.run(policy, now=T0, env=HASH_ENV)
    assert [r["status"] for r in list_requests(policy, now=T0, env=HASH_ENV)["requests"]] == ["done", "done"]


def test_a_request_that_would_erase_more_than_the_simulated_plan_counted_drifts(sqlite_shop, tmp_path):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    plan = _plan(shop, policy, tmp_path, simulate=True)
    assert json.loads(open(plan).read())["plan"]["requests"][0]["rows"] == 3     # user, address, log detached
    assert 1 in shop.ids("users")
    shop.insert("addresses", {"id": 9, "user_id": 1, "line1": "9 Main St"})    # more to erase than reviewed
    before = shop.dump()
    report = commands.run(policy, plan_file=plan, env=HASH_ENV)
    assert report.exit_code == 3
    item = _items(report)["dsr#1"]
    assert item["plan_drifted"] and item["status"] == "pending" and "beyond --max-drift" in item["skipped"][0]
    assert shop.dump() == before and report.ledger == []
    assert "not as the reviewed plan listed" in _text(report)
    within = commands.run(policy, plan_file=plan, env=HASH_ENV, max_drift="1")
    assert within.exit_code == 0 and _items(within)["dsr#1"]["status"] == "done"
    assert 1 not in shop.ids("users")


def test_a_run_limited_by_only_says_it_left_the_requests(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY + LOGS_PURGE)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    report = commands.run(policy, now=T0, only=["logs-purge"], env=HASH_ENV)
    assert report.exit_code == 0, report.errors
    item = _items(report)["dsr#1"]
    assert item["status"] == "pending" and "--only" in item["skipped"][0]
    assert 1 in shop.ids("users") and report.to_dict()["requests"]["skipped"] == 1
    assert "dsr#1: not fulfilled by this run" in _text(report)
