"""Erasure requests with ``action = "anonymize"``: every linked table rewritten with the policy's own strategies.

A linked table an anonymize rule covers is rewritten with that rule's
strategies; one listed in ``keep`` is left as it is; any other linked table
is deleted as a delete request would.  Holds keep the whole row, a floor with
``columns`` keeps those columns, and the request is ``partial`` until they end.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from retention import cli
from retention.errors import ConfigError
from retention.requests.commands import file_request, list_requests
from tests.shopkit import HASH_ENV, HOLDS
from tests.test_requests import T0, _fill

POLICY = HOLDS + """
[tables."shop.order_items"]
on_parent_delete = "delete"
[tables."shop.addresses"]
on_parent_delete = "delete"
[tables."shop.logs"]
on_parent_delete = "detach"

[[rules]]
name = "users-anonymize"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "anonymize"
columns.email = "hash"
columns.name = { strategy = "constant", value = "deleted user" }
columns.phone = { strategy = "mask", keep_last = 4 }
mark = "anonymized_at"

[[rules]]
name = "minors-anonymize"
table = "shop.users"
clock = "created_at"
after = "0d"
where = { status = "minor" }
action = "anonymize"
columns.phone = "null"

[[rules]]
name = "orders-anonymize"
table = "shop.orders"
clock = "completed_at"
after = "10y"                    # never due in these tests: what changes orders is the request
action = "anonymize"
columns.buyer_name = { strategy = "constant", value = "anonymized buyer" }
columns.shipping = "null"

[[floors]]
name = "ecommerce-law-3y"
table = "shop.orders"
clock = "completed_at"
keep = "3y"
columns = ["total", "completed_at", "buyer_name"]

[[requests]]
name = "dsr"
table = "state.requests"
subject = "customer"
subject_column = "user_id"
action = "anonymize"
keep = ["shop.order_items"]
"""


def _orders(shop) -> dict[int, dict]:
    return {o["id"]: o for o in shop.rows("orders")}


def test_an_anonymizing_request_rewrites_every_linked_table_and_keeps_the_rows(shop):
    _fill(shop)
    with shop.engine.begin() as conn:
        conn.execute(shop.t("orders").update().values(buyer_name="Jane Buyer", shipping="1 Main St"))
    policy = shop.policy(POLICY)
    for i in (1, 5):
        file_request(policy, f"customer:{i}", now=T0, env=HASH_ENV)
    before = shop.dump()
    report = shop.run(policy, now=T0)
    assert report.exit_code == 0, report.errors
    users = {u["id"]: u for u in shop.rows("users")}
    for i in (1, 5):
        # the subject's row stays, rewritten with the rules' strategies; null wins where two rules differ
        assert users[i]["name"] == "deleted user" and users[i]["email"].startswith("h_")
        assert users[i]["phone"] is None
    # a linked table no anonymize rule covers is deleted; a kept one is left as it is
    assert [a["user_id"] for a in shop.rows("addresses")] == [2, 3, 4]
    assert shop.ids("order_items") == [1, 2]
    # user 5's old order: past its floor, rewritten in place
    assert (_orders(shop)[2]["buyer_name"], _orders(shop)[2]["shipping"]) == ("anonymized buyer", None)
    # a detach link is not ownership: the log lines stay as they were, still linked
    assert shop.rows("logs") == [dict(zip([c.name for c in shop.t("logs").c], r)) for r in before["logs"]]
    # nobody else was touched
    after = shop.dump()
    assert [r for r in after["users"] if r[0] not in (1, 5)] == [r for r in before["users"] if r[0] not in (1, 5)]
    assert after["orders"][0] == before["orders"][0]
    items = {r["request"]: r for r in report.to_dict()["requests"]["items"]}
    assert items["dsr#1"]["status"] == "done"
    assert items["dsr#1"]["erased"] == {"shop.addresses": 1, "shop.users": 1}
    assert items["dsr#2"]["erased"] == {"shop.addresses": 1, "shop.orders": 1, "shop.users": 1}
    assert [e["action"] for e in report.ledger] == ["anonymize", "anonymize"]
    # a second run changes nothing
    again = shop.dump()
    shop.run(policy, now=T0)
    assert shop.dump() == again and shop.dangling() == []


def test_a_column_floor_keeps_its_columns_and_the_request_finishes_when_it_ends(shop):
    _fill(shop)
    with shop.engine.begin() as conn:
        conn.execute(shop.t("orders").update().values(buyer_name="Jane Buyer", shipping="1 Main St"))
    policy = shop.policy(POLICY)
    file_request(policy, "customer:2", now=T0, env=HASH_ENV)
    item = shop.run(policy, now=T0).to_dict()["requests"]["items"][0]
    assert item["status"] == "partial"
    floor = [p for p in item["protected"] if p["table"] == "shop.orders"]
    assert floor and floor[0]["name"] == "ecommerce-law-3y" and floor[0]["until"].startswith("2026-02-01")
    # the floor keeps buyer_name (the law needs it); the other columns go now
    assert (_orders(shop)[1]["buyer_name"], _orders(shop)[1]["shipping"]) == ("Jane Buyer", None)
    later = shop.run(policy, now=datetime(2026, 2, 2, tzinfo=timezone.utc)).to_dict()["requests"]["items"][0]
    assert later["status"] == "done", later
    assert _orders(shop)[1]["buyer_name"] == "anonymized buyer"


def test_a_hold_keeps_the_whole_row_and_restricts_it(shop):
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:3", now=T0, env=HASH_ENV)
    before = {u["id"]: u for u in shop.rows("users")}[3]
    item = shop.run(policy, now=T0).to_dict()["requests"]["items"][0]
    assert item["status"] == "partial" and item["erased"] == {}
    assert {p["name"] for p in item["protected"]} == {"litigation"}
    user = {u["id"]: u for u in shop.rows("users")}[3]
    assert (user["name"], user["email"]) == (before["name"], before["email"]) and user["restricted_at"] is not None
    assert [a["user_id"] for a in shop.rows("addresses")].count(3) == 1


def test_anonymizing_settings_the_schema_cannot_honour_are_refused(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    without = POLICY.replace('name = "users-anonymize"', 'name = "users-anonymize"\nenabled = false') \
        .replace('name = "minors-anonymize"', 'name = "minors-anonymize"\nenabled = false')
    for body, key, message in (
            (without, "key 'action'", "no enabled rule anonymizes it"),
            (POLICY.replace('keep = ["shop.order_items"]', 'keep = ["shop.merchants"]'), "key 'keep'",
             "not linked"),
            (POLICY.replace('keep = ["shop.order_items"]', 'keep = ["shop.users"]'), "key 'keep'",
             "cannot be kept")):
        policy = shop.policy(body)
        result = CliRunner().invoke(cli.cli, ["-c", policy, "check"], env=HASH_ENV)
        assert result.exit_code == 2 and key in result.output and message in result.output, result.output
        with pytest.raises(ConfigError):
            file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    policy = shop.policy(POLICY.replace('action = "anonymize"\nkeep', 'action = "delete"\nkeep'))
    result = CliRunner().invoke(cli.cli, ["-c", policy, "check"], env=HASH_ENV)
    assert result.exit_code == 2 and "'keep' only applies" in result.output, result.output
    assert list_requests(shop.policy(POLICY), now=T0, env=HASH_ENV)["requests"] == []


def test_replay_after_a_restore_anonymizes_the_person_again(sqlite_shop, tmp_path):
    from datetime import timedelta

    from retention.replay import replay
    from tests.test_replay import _take_backup
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    restore = _take_backup(shop, tmp_path)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    anonymized = shop.dump()
    restore()
    assert {u["id"]: u for u in shop.rows("users")}[1]["name"] == "User 1"
    result = replay(policy, backup_time=T0 - timedelta(hours=1), env=HASH_ENV)
    assert result.erased_subjects == 1
    assert shop.dump() == anonymized
    again = replay(policy, backup_time=T0 - timedelta(hours=1), env=HASH_ENV)
    assert again.to_dict()["subjects_found"] == 1 and again.erased_subjects == 0 and shop.dump() == anonymized


def test_check_names_the_linked_tables_an_anonymizing_request_deletes(sqlite_shop):
    from retention import commands
    policy = sqlite_shop.policy(POLICY)
    warnings = [w for w in commands.check(policy, env=HASH_ENV).warnings if "request 'dsr'" in w]
    assert warnings == ["request 'dsr' (anonymize): no anonymize rule covers shop.addresses: the subject's rows "
                        "there are deleted; list a table in keep to leave it as it is"]
