"""Anonymize rules among the others: marks, floors that keep columns, strategy errors,
rules that would anonymize one column two ways, and where clauses on the anonymized column.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from retention import commands
from retention.errors import ConfigError
from tests.shopkit import HASH_ENV, HOLDS, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def test_mark_is_set_when_an_active_column_floor_keeps_none_of_the_rules_columns(shop):
    shop.user(1, status="closed", closed_at=OLD, created_at=datetime(2024, 1, 1))
    policy = shop.policy("""
        [[rules]]
        name = "closed-accounts-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "anonymize"
        columns.email = "hash"
        mark = "anonymized_at"
        max_fraction = 1.0

        [[floors]]
        name = "kyc-birth-date"
        table = "shop.users"
        clock = "created_at"
        keep = "5y"
        columns = ["birth_date"]
        """)
    out = outcome(shop.run(policy, now=NOW), "closed-accounts-anonymize")
    row = shop.rows("users")[0]
    assert out.touch == 1 and row["email"].startswith("h_")
    assert row["anonymized_at"] is not None


def test_a_strategy_error_fails_its_rule_and_the_others_still_run(shop):
    shop.user(1, status="closed", closed_at=OLD, last_ip="not-an-ip")
    shop.insert("logs", dict(id=1, user_id=None, ip="10.0.0.1", created_at=OLD))
    policy = shop.policy("""
        [[rules]]
        name = "closed-accounts-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "anonymize"
        columns.last_ip = { strategy = "generalize", ipv4_prefix = 16 }
        max_fraction = 1.0

        [[rules]]
        name = "logs-180d"
        table = "shop.logs"
        clock = "created_at"
        after = "180d"
        action = "delete"
        max_fraction = 1.0
        """)
    report = shop.run(policy, now=NOW)
    # the value is counted as not done (never shown), the rule is incomplete, not stuck
    anonymize = outcome(report, "closed-accounts-anonymize")
    assert anonymize.status == "incomplete" and [(n.reason, n.rows) for n in anonymize.not_done] == [("refused", 1)]
    assert outcome(report, "logs-180d").touch == 1
    assert report.exit_code == 1
    assert shop.rows("users")[0]["last_ip"] == "not-an-ip"


def test_kept_columns_only_lists_what_a_floor_actually_kept(sqlite_shop):
    shop = sqlite_shop
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=OLD, total=10, buyer_name="Alice Li",
                               shipping="1 Main St"))
    policy = shop.policy("""
        [[rules]]
        name = "orders-anonymize-after-3y"
        table = "shop.orders"
        clock = "completed_at"
        after = "3y"
        action = "anonymize"
        columns.buyer_name = { strategy = "constant", value = "anonymized buyer" }
        columns.shipping = "null"
        max_fraction = 1.0

        [[floors]]
        name = "ecommerce-law-3y"
        table = "shop.orders"
        clock = "completed_at"
        keep = "3y"
        columns = ["total", "buyer_name"]
        """)
    out = outcome(shop.run(policy, now=NOW), "orders-anonymize-after-3y")
    assert shop.rows("orders")[0]["buyer_name"] == "anonymized buyer"
    assert out.kept_columns == []


ANON_CLOSED = """
    [[rules]]
    name = "closed-anonymize"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "anonymize"
    columns.name = { strategy = "constant", value = "deleted user" }
    max_fraction = 1.0
"""


ANON_MINORS = """
    [[rules]]
    name = "minors-anonymize"
    table = "shop.users"
    clock = "created_at"
    after = "0d"
    where_sql = "birth_date > :now_minus_18y"
    action = "anonymize"
    max_fraction = 1.0
"""


def test_a_shared_mark_column_for_different_columns_is_refused(shop):
    # with one mark, a row the first rule marked would count as done for the second, whose own
    # columns (last_ip) would never be anonymized: refused before anything runs
    shop.user(1, status="closed", closed_at=OLD, birth_date=date(2015, 1, 1))   # closed and a minor
    policy = shop.policy(ANON_CLOSED + 'mark = "anonymized_at"\n' + ANON_MINORS
                         + 'columns.last_ip = "null"\nmark = "anonymized_at"\n')
    before = shop.dump()
    with pytest.raises(ConfigError) as e:
        shop.run(policy, now=NOW)
    assert "rule 'minors-anonymize'" in str(e.value) and "key 'mark'" in str(e.value)
    assert shop.dump() == before


def test_two_rules_anonymizing_one_column_differently_are_refused(shop):
    # constant vs hash on one column would flip it on every run: refused, naming both rules
    shop.user(1, status="closed", closed_at=OLD, birth_date=date(2015, 1, 1))
    policy = shop.policy(ANON_CLOSED + ANON_MINORS + 'columns.name = "hash"\n')
    with pytest.raises(ConfigError) as e:
        commands.check(policy, env=HASH_ENV)
    assert "rule 'minors-anonymize'" in str(e.value) and "columns.name" in str(e.value)
    assert "closed-anonymize" in str(e.value)
    # 'null' settles with any strategy (NULL is done for all of them): accepted, and idempotent
    ok = shop.policy(ANON_CLOSED + ANON_MINORS + 'columns.name = "null"\n', name="ok.toml")
    shop.run(ok, now=NOW)
    assert [r.touch for r in shop.run(ok, now=NOW).rules] == [0, 0]


def test_where_on_the_anonymized_column_is_idempotent_and_mark_floor_hold_combine(shop):
    # anonymize name where name matches a pattern the masked value still matches; a column floor
    # keeps the phone of recent accounts (no mark then); a hold keeps user 4 whole
    shop.user(1, status="closed", closed_at=OLD)
    shop.user(2, status="closed", closed_at=OLD, created_at=datetime(2025, 1, 1))
    shop.user(3, status="closed", closed_at=OLD, name="Other 3")
    shop.user(4, status="closed", closed_at=OLD)
    shop.insert("legal_holds", dict(id=1, user_id=4, released_at=None))
    policy = shop.policy("""
        [[rules]]
        name = "users-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "anonymize"
        where_sql = "name LIKE 'User %'"
        columns.name = { strategy = "mask", keep_first = 5, keep_last = 0 }
        columns.phone = "null"
        mark = "anonymized_at"
        max_fraction = 1.0

        [[floors]]
        name = "kyc-phone"
        table = "shop.users"
        clock = "created_at"
        keep = "5y"
        columns = ["phone"]
        """ + HOLDS)
    first = outcome(shop.run(policy, now=NOW), "users-anonymize")
    assert (first.due, first.protected_total, first.touch) == (3, 1, 2)
    rows = {r["id"]: r for r in shop.rows("users")}
    assert rows[1]["name"] == "User *" and rows[1]["phone"] is None and rows[1]["anonymized_at"]
    assert rows[2]["name"] == "User *" and rows[2]["phone"] and rows[2]["anonymized_at"] is None
    assert rows[3]["name"] == "Other 3" and rows[4]["name"] == "User 4" and rows[4]["phone"]
    second = outcome(shop.run(policy, now=NOW), "users-anonymize")
    assert (second.due, second.touch, second.protected_total, second.unchanged) == (3, 0, 1, 2) and adds_up(second)
