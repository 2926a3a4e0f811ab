"""Erasure requests: filed, listed with deadlines, fulfilled by runs on every table linked to the subject.

Holds and floors win: what they protect is restricted and the request is
``partial``, naming them and the date the floor ends; a later run finishes
it once the floor has ended or the hold is released.
"""

from __future__ import annotations

import json

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from freezegun import freeze_time

from retention import cli
from retention.errors import ConfigError
from retention.requests.commands import file_request, list_requests
from tests.shopkit import DSR, HASH_ENV, HOLDS

POLICY = HOLDS + """
[tables."shop.order_items"]
on_parent_delete = "delete"
[tables."shop.addresses"]
on_parent_delete = "delete"
[tables."shop.logs"]
on_parent_delete = "detach"
[tables."shop.legal_holds"]
on_parent_delete = "delete"

[[floors]]
name = "ecommerce-law-3y"
table = "shop.orders"
clock = "completed_at"
keep = "3y"
""" + DSR

T0 = datetime(2024, 3, 1, 12, 0, tzinfo=timezone.utc)


def _fill(shop) -> None:
    for i in range(1, 6):
        shop.user(i)
    shop.insert("addresses", *({"id": i, "user_id": i, "line1": f"{i} Main St"} for i in range(1, 6)))
    shop.insert("logs", *({"id": i, "user_id": i, "ip": "10.0.0.1", "created_at": datetime(2024, 2, 1)}
                          for i in range(1, 6)))
    # user 2's order is young: the floor keeps it until 2026-02-01
    shop.insert("orders", {"id": 1, "user_id": 2, "completed_at": datetime(2023, 2, 1), "total": 10},
                {"id": 2, "user_id": 5, "completed_at": datetime(2019, 1, 1), "total": 20})
    shop.insert("order_items", {"id": 1, "order_id": 1, "sku": "A"}, {"id": 2, "order_id": 2, "sku": "B"})
    shop.insert("legal_holds", {"id": 1, "user_id": 3, "released_at": None})


def _run(shop, policy, now):
    return shop.run(policy, now=now)


def test_a_request_erases_every_linked_table_in_one_go(shop):
    _fill(shop)
    policy = shop.policy(POLICY)
    filed = file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    assert filed["status"] == "pending" and filed["deadline"].startswith("2024-03-16")
    file_request(policy, "customer:5", now=T0, env=HASH_ENV)
    before = shop.dump()
    report = _run(shop, policy, T0)
    assert report.exit_code == 0, report.errors
    assert 1 not in shop.ids("users") and 5 not in shop.ids("users")
    assert [a["user_id"] for a in shop.rows("addresses")] == [2, 3, 4]
    assert shop.ids("orders") == [1] and shop.ids("order_items") == [1]
    # logs are detached, not erased: the policy says that link is not ownership
    assert {r["id"]: r["user_id"] for r in shop.rows("logs")} == {1: None, 2: 2, 3: 3, 4: 4, 5: None}
    assert shop.dangling() == []
    # nobody else was touched
    after = shop.dump()
    assert [r for r in after["users"]] == [r for r in before["users"] if r[0] not in (1, 5)]
    items = {r["request"]: r for r in report.to_dict()["requests"]["items"]}
    assert items["dsr#1"]["status"] == "done" and items["dsr#1"]["erased"] == {"shop.addresses": 1, "shop.logs": 1,
                                                                               "shop.users": 1}
    assert items["dsr#2"]["erased"]["shop.orders"] == 1 and items["dsr#2"]["erased"]["shop.order_items"] == 1
    listing = list_requests(policy, now=T0, env=HASH_ENV)
    assert [r["status"] for r in listing["requests"]] == ["done", "done"]
    # a done request keeps no key in the state store, only its keyed hash
    assert all(r["subject_key"] is None for r in listing["requests"])
    assert all(r["subject_hash"].startswith("hmac:") for r in listing["requests"])
    # a second run finds nothing to do
    again = shop.dump()
    _run(shop, policy, T0)
    assert shop.dump() == again


def test_a_floor_makes_the_request_partial_until_it_ends(shop):
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:2", now=T0, env=HASH_ENV)
    report = _run(shop, policy, T0)
    item = report.to_dict()["requests"]["items"][0]
    assert item["status"] == "partial"
    # the floor protects the order row itself (not its items, per the spec); the user's log line stays
    # linked until the user row goes
    assert item["erased"] == {"shop.addresses": 1, "shop.order_items": 1}
    floor = [p for p in item["protected"] if p["kind"] == "floor" and p["table"] == "shop.orders"]
    assert floor and floor[0]["name"] == "ecommerce-law-3y" and floor[0]["until"].startswith("2026-02-01")
    # the user row stays, restricted (beyond use); the order and its items stay
    user = next(u for u in shop.rows("users") if u["id"] == 2)
    assert user["restricted_at"] is not None
    assert shop.ids("orders") == [1, 2] and shop.ids("order_items") == [2]
    assert "DUE SOON" not in cli_text(report)
    # the same run again: still partial, nothing new, no new ledger entry
    again = _run(shop, policy, datetime(2025, 1, 1, tzinfo=timezone.utc))
    assert again.to_dict()["requests"]["items"][0]["status"] == "partial" and again.ledger == []
    # once the floor has ended, a run finishes it by itself
    later = _run(shop, policy, datetime(2026, 2, 2, tzinfo=timezone.utc))
    item = later.to_dict()["requests"]["items"][0]
    assert item["status"] == "done", item
    assert 2 not in shop.ids("users") and shop.ids("orders") == [2] and shop.dangling() == []


def test_a_hold_keeps_everything_until_released(shop):
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:3", now=T0, env=HASH_ENV)
    item = _run(shop, policy, T0).to_dict()["requests"]["items"][0]
    assert item["status"] == "partial" and item["erased"] == {}
    assert {p["name"] for p in item["protected"]} == {"litigation"}
    assert 3 in shop.ids("users") and [a["user_id"] for a in shop.rows("addresses")].count(3) == 1
    with shop.engine.begin() as conn:
        conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2024, 3, 2)))
    item = _run(shop, policy, datetime(2024, 3, 3, tzinfo=timezone.utc)).to_dict()["requests"]["items"][0]
    # released: the deferred erasure goes ahead, except what the register itself keeps (test_request_registers)
    assert item["erased"] == {"shop.addresses": 1}
    assert 3 not in [a["user_id"] for a in shop.rows("addresses")] and shop.dangling() == []


def cli_text(report) -> str:
    from retention.report.text import render_text
    return render_text(report)


def test_deadlines_days_left_due_soon_and_overdue(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:4", now=T0, env=HASH_ENV)
    file_request(policy, "customer:3", now=datetime(2024, 3, 10, tzinfo=timezone.utc), env=HASH_ENV)
    with freeze_time("2024-03-13 12:00:00"):
        listing = list_requests(policy, env=HASH_ENV)
    first, second = listing["requests"]
    assert (first["days_left"], first["urgency"]) == (3, "due_soon")
    assert (second["days_left"], second["urgency"]) == (11, None)      # 11.5 days
    assert (listing["overdue"], listing["due_soon"]) == (0, 1)
    with freeze_time("2024-03-17 12:00:00"):
        listing = list_requests(policy, env=HASH_ENV)
        result = CliRunner().invoke(cli.cli, ["-c", policy, "requests"], env=HASH_ENV)
    assert listing["requests"][0]["urgency"] == "overdue" and listing["requests"][0]["days_left"] == -1
    assert (listing["overdue"], listing["due_soon"]) == (1, 0)
    assert result.exit_code == 0, result.output
    assert "OVERDUE" in result.output and "customer:4" in result.output
    # the dry-run report counts them and says so in the exit summary
    report = shop.run(policy, dry_run=True, now=datetime(2024, 3, 17, 12, tzinfo=timezone.utc))
    rq = report.to_dict()["requests"]
    assert (rq["overdue"], rq["due_soon"], rq["open"]) == (1, 0, 2)
    assert "erasure requests: 1 overdue" in cli_text(report)
    # a dry run touches nothing
    assert 4 in shop.ids("users")


def test_app_queue_status_changes_with_the_erasure(sqlite_shop):
    shop = sqlite_shop
    md = sa.MetaData()
    queue = sa.Table("erasure_requests", md,
                     sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
                     sa.Column("received_at", sa.DateTime, nullable=False),
                     sa.Column("status", sa.String(20), nullable=False),
                     sa.Column("completed_at", sa.DateTime))
    sa.Table("users", md, sa.Column("id", sa.Integer, primary_key=True))
    queue.create(shop.engine)
    _fill(shop)
    body = POLICY.replace('table = "state.requests"', 'table = "shop.erasure_requests"')
    with pytest.raises(ConfigError, match="on_parent_delete"):
        file_request(shop.policy(body), "customer:1", now=T0, env=HASH_ENV)
    policy = shop.policy(body + '\n[tables."shop.erasure_requests"]\non_parent_delete = "detach"\n')
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    report = _run(shop, policy, T0)
    assert report.exit_code == 0, report.errors
    with shop.engine.connect() as conn:
        row = conn.execute(sa.select(queue)).one()
    assert row.status == "done" and row.user_id is None and row.completed_at is not None
    assert 1 not in shop.ids("users") and shop.dangling() == []


def test_bad_targets_are_refused_and_change_nothing(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    for target, message in (("customer", "SUBJECT:KEY"), ("nobody:1", "unknown subject"),
                            ("customer:99", "no customer")):
        with pytest.raises(ConfigError, match=message):
            file_request(policy, target, now=T0, env=HASH_ENV)
    assert list_requests(policy, now=T0, env=HASH_ENV)["requests"] == []
    result = CliRunner().invoke(cli.cli, ["-c", policy, "request", "erase", "customer:99"], env=HASH_ENV)
    assert result.exit_code == 2


def test_the_demo_reports_requests_and_notifications(tmp_path, monkeypatch):
    from pathlib import Path

    from retention import commands
    monkeypatch.chdir(tmp_path)
    root = Path(__file__).resolve().parents[1] / "policies.toml"
    _counts, report = commands.demo(str(root), url=f"sqlite:///{tmp_path / 'demo.db'}",
                                    now=datetime(2026, 3, 15, 9, 30, tzinfo=timezone.utc),
                                    env={"RETENTION_HASH_KEY": "demo-test"})
    rq = report.to_dict()["requests"]
    assert rq["open"] >= 3 and rq["overdue"] >= 1
    held = [r for r in rq["items"] if any(p["kind"] == "hold" for p in r["protected"])]
    assert held and held[0]["status"] == "partial"
    assert rq["notifications"]["would_send"] >= 1
    assert "erasure requests:" in cli_text(report)


def test_a_queue_the_run_cannot_use_is_refused_before_any_rule_runs(sqlite_shop):
    from tests.shopkit import LOGS_PURGE
    shop = sqlite_shop
    _fill(shop)
    body = POLICY.replace('table = "state.requests"', 'table = "shop.legal_holds"') + LOGS_PURGE
    before = shop.dump()
    with pytest.raises(ConfigError, match="received_column"):
        shop.run(shop.policy(body), now=T0)
    assert shop.dump() == before


def test_each_erasure_is_in_the_audit_log_by_keyed_hash(sqlite_shop):
    from retention.audit import keyed
    from tests.runkit import audit_rows, state_url_of
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:4", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    (entry,) = [r for r in audit_rows(state_url_of(policy)) if r["kind"] == "request-erased"]
    body = json.loads(entry["body"])
    assert body["subject_hash"] == keyed(HASH_ENV["RETENTION_HASH_KEY"].encode(), 4)
    assert body["request"] == "dsr#1" and body["tables"]["shop.users"] == 1
    assert "user4@example.com" not in entry["body"]
