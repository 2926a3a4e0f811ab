"""The same scenarios on SQLite and PostgreSQL (``backend`` fixture)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from tests.shopkit import FLOOR_ORDERS, HOLDS, ORDERS_FLOOR, Shop, cascades, outcome, protected

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_floor_protects_until_exactly_its_end_and_releases_one_second_later(shop):
    completed = datetime(2023, 6, 15, 12, 0, 0)
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=completed, total=10))
    shop.insert("order_items", dict(id=1, order_id=1, sku="A"))
    policy = shop.policy(FLOOR_ORDERS)
    end = completed.replace(tzinfo=UTC) + timedelta(days=365 * 3 + 1)  # 2026-06-15 12:00 (one leap day)
    assert end == datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
    with freeze_time(end - timedelta(seconds=1)):
        report = shop.run(policy)
    out = outcome(report, "orders-purge")
    assert (out.due, out.touch, protected(out)) == (1, 0, {"floor:ecommerce-law-3y": 1})
    assert shop.ids("orders") == [1]
    with freeze_time(end):
        report = shop.run(policy)
    out = outcome(report, "orders-purge")
    assert (out.due, out.touch, protected(out)) == (1, 1, {})
    assert cascades(out) == {"shop.order_items:delete": 1}
    assert shop.ids("orders") == [] and shop.ids("order_items") == []


def test_a_leap_day_clock_is_protected_through_february_28_and_released_march_1(shop):
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=datetime(2024, 2, 29, 12, 0), total=1))
    policy = shop.policy(FLOOR_ORDERS)
    dry = shop.run(policy, dry_run=True, now=datetime(2027, 2, 28, 23, 59, 59, tzinfo=UTC))
    assert protected(outcome(dry, "orders-purge")) == {"floor:ecommerce-law-3y": 1}
    dry = shop.run(policy, dry_run=True, now=datetime(2027, 3, 1, 0, 0, tzinfo=UTC))
    assert protected(outcome(dry, "orders-purge")) == {}
    assert outcome(dry, "orders-purge").touch == 1


def test_naive_timestamps_are_read_in_the_settings_timezone(shop):
    shop.user(1)
    # 08:00 wall time in Shanghai is midnight UTC
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1, 8, 0)))
    rule = """
    [[rules]]
    name = "logs-1d"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """
    now = datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    shanghai = shop.policy(rule, settings='timezone = "Asia/Shanghai"', name="sh.toml")
    utc = shop.policy(rule, settings='timezone = "UTC"', name="utc.toml")
    assert outcome(shop.run(shanghai, dry_run=True, now=now), "logs-1d").due == 1
    assert outcome(shop.run(utc, dry_run=True, now=now), "logs-1d").due == 0
    assert outcome(shop.run(shanghai, dry_run=True, now=now - timedelta(seconds=1)), "logs-1d").due == 0


def test_a_hold_protects_the_subjects_rows_in_every_table_through_foreign_keys(shop):
    for uid in (1, 2, 3):
        shop.user(uid)
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None),
                dict(id=2, user_id=2, released_at=datetime(2026, 1, 1)))
    old = datetime(2020, 1, 1)
    shop.insert("logs", *[dict(id=u, user_id=u, ip="1.2.3.4", created_at=old) for u in (1, 2, 3)])
    shop.insert("orders", *[dict(id=u, user_id=u, completed_at=old, total=1) for u in (1, 2, 3)])
    shop.insert("order_items", *[dict(id=u, order_id=u, sku="X") for u in (1, 2, 3)])
    policy = shop.policy(HOLDS + """
    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0

    [[rules]]
    name = "items"
    table = "shop.order_items"
    clock = "order.completed_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """)
    report = shop.run(policy, now=NOW)
    assert protected(outcome(report, "logs")) == {"hold:litigation": 1}
    # two hops: order_items -> orders -> users
    assert protected(outcome(report, "items")) == {"hold:litigation": 1}
    assert shop.ids("logs") == [1] and shop.ids("order_items") == [1]


CASCADE = HOLDS + ORDERS_FLOOR + """
[[rules]]
name = "closed-accounts"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
where = { status = "closed" }
max_fraction = 1.0

[tables."shop.orders"]
on_parent_delete = "delete"
[tables."shop.order_items"]
on_parent_delete = "delete"
[tables."shop.addresses"]
on_parent_delete = "delete"
[tables."shop.logs"]
on_parent_delete = "detach"
[tables."shop.legal_holds"]
on_parent_delete = "block"
"""


def _cascade_shop(shop):
    closed = datetime(2026, 1, 1)
    for uid in (1, 2, 3, 4):
        shop.user(uid, status="closed", closed_at=closed)
    shop.user(5)  # active: not due
    shop.insert("legal_holds", dict(id=1, user_id=3))
    shop.insert("orders", dict(id=1, user_id=1, completed_at=datetime(2021, 1, 1), total=5),
                dict(id=2, user_id=2, completed_at=datetime(2025, 1, 1), total=5),   # floor-protected
                dict(id=3, user_id=3, completed_at=datetime(2021, 1, 1), total=5),
                dict(id=4, user_id=5, completed_at=datetime(2021, 1, 1), total=5))
    shop.insert("order_items", dict(id=1, order_id=1, sku="A"), dict(id=2, order_id=1, sku="B"),
                dict(id=3, order_id=2, sku="C"), dict(id=4, order_id=3, sku="D"))
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Main St"), dict(id=2, user_id=2, line1="2 Main St"),
                dict(id=3, user_id=4, line1="4 Main St"))
    shop.insert("logs", *[dict(id=i, user_id=u, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i, u in enumerate((1, 1, 2, 3, 4, 5), start=1)])


def test_delete_cascades_children_in_order_and_precedence_holds_through_the_cascade(shop):
    _cascade_shop(shop)
    policy = shop.policy(CASCADE)
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-accounts")
    report = shop.run(policy, now=NOW)
    out = outcome(report, "closed-accounts")
    # user 1: deleted with its order, items, address; logs detached
    # user 2: its order is under the 3-year floor, so the user is kept (parent of a protected row)
    # user 3: held (the legal_holds child also blocks, but the hold comes first)
    # user 4: no orders: deleted with its address
    assert out.due == 4
    assert protected(out) == {"hold:litigation": 1, "floor:ecommerce-law-3y": 1}
    assert out.touch == 2
    assert cascades(out) == {"shop.orders:delete": 1, "shop.order_items:delete": 2,
                             "shop.addresses:delete": 2, "shop.logs:detach": 3,
                             "shop.legal_holds:block": 0} or cascades(out) == {
        "shop.orders:delete": 1, "shop.order_items:delete": 2, "shop.addresses:delete": 2, "shop.logs:detach": 3}
    assert shop.ids("users") == [2, 3, 5]
    assert shop.ids("orders") == [2, 3, 4]
    assert shop.ids("order_items") == [3, 4]
    assert shop.ids("addresses") == [2]
    assert {r["id"]: r["user_id"] for r in shop.rows("logs")} == {1: None, 2: None, 3: 2, 4: 3, 5: None, 6: 5}
    assert shop.dangling() == []
    # the dry run said exactly this
    assert (dry.due, dry.touch, protected(dry), cascades(dry)) == (out.due, out.touch, protected(out), cascades(out))


def test_children_block_their_parent_by_default(shop):
    _cascade_shop(shop)
    policy = shop.policy(HOLDS + """
    [[rules]]
    name = "closed-accounts"
    table = "shop.users"
    clock = "closed_at"
    after = "30d"
    action = "delete"
    max_fraction = 1.0
    """)
    out = outcome(shop.run(policy, now=NOW), "closed-accounts")
    # every closed user has orders, addresses or logs; none is deleted, each is reported once,
    # under the first blocking child table in name order
    assert out.touch == 0
    assert protected(out) == {"hold:litigation": 1, "children:shop.addresses": 3}
    assert shop.ids("users") == [1, 2, 3, 4, 5]


def test_anonymize_leaves_the_columns_a_floor_keeps_and_finishes_them_when_it_ends(shop):
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=datetime(2020, 1, 1), total=5,
                               buyer_name="Ada Lovelace", shipping="1 Analytical Way"),
                dict(id=2, user_id=1, completed_at=datetime(2025, 1, 1), total=5,
                     buyer_name="Ada Lovelace", shipping="1 Analytical Way"))
    policy = shop.policy("""
    [[floors]]
    name = "ecommerce-law-3y"
    table = "shop.orders"
    clock = "completed_at"
    keep = "3y"
    columns = ["buyer_name", "total"]

    [[rules]]
    name = "orders-anonymize"
    table = "shop.orders"
    clock = "completed_at"
    after = "1y"
    action = "anonymize"
    columns.buyer_name = { strategy = "constant", value = "anonymous" }
    columns.shipping = "null"
    max_fraction = 1.0
    """)
    out = outcome(shop.run(policy, now=NOW), "orders-anonymize")
    assert out.touch == 2 and out.kept_columns == ["buyer_name"]
    rows = {r["id"]: (r["buyer_name"], r["shipping"]) for r in shop.rows("orders")}
    assert rows == {1: ("anonymous", None), 2: ("Ada Lovelace", None)}
    # a second run right after touches nothing
    assert outcome(shop.run(policy, now=NOW), "orders-anonymize").touch == 0
    # once the floor has ended, the kept column is finished
    later = datetime(2028, 1, 2, tzinfo=UTC)
    with freeze_time(later):     # a run never enforces ahead of the clock
        assert outcome(shop.run(policy, now=later), "orders-anonymize").touch == 1
    assert {r["id"]: r["buyer_name"] for r in shop.rows("orders")} == {1: "anonymous", 2: "anonymous"}


def test_clock_on_a_parent_reached_by_foreign_key(shop):
    shop.insert("merchants", dict(id=1, name="Closed long ago", closed_at=datetime(2026, 1, 1)),
                dict(id=2, name="Closed last week", closed_at=datetime(2026, 6, 8)),
                dict(id=3, name="Open", closed_at=None))
    shop.insert("merchant_customers", *[dict(id=i, merchant_id=m, email=f"c{i}@example.org")
                                        for i, m in enumerate((1, 1, 2, 3), start=1)])
    policy = shop.policy("""
    [[rules]]
    name = "merchant-closed-customers"
    table = "shop.merchant_customers"
    clock = "merchant.closed_at"
    after = "30d"
    action = "delete"
    max_fraction = 1.0
    """)
    out = outcome(shop.run(policy, now=NOW), "merchant-closed-customers")
    assert (out.due, out.touch) == (2, 2)
    assert out.forecast["30d"] == 1     # merchant 2's customer falls due within 30 days
    assert shop.ids("merchant_customers") == [3, 4]


def test_where_sql_binds_now_minus_durations(shop):
    shop.user(1, birth_date=date(2012, 1, 1))                                   # minor, no consent
    shop.user(2, birth_date=date(2012, 1, 1), parental_consent_at=datetime(2024, 1, 1))
    shop.user(3, birth_date=date(1980, 1, 1))
    shop.user(4, birth_date=date(2008, 6, 16))                                  # 18 tomorrow
    policy = shop.policy("""
    [[rules]]
    name = "minors-without-consent"
    table = "shop.users"
    clock = "created_at"
    after = "0d"
    where_sql = "birth_date > :now_minus_18y AND parental_consent_at IS NULL"
    action = "delete"
    max_fraction = 1.0
    """)
    out = outcome(shop.run(policy, now=NOW), "minors-without-consent")
    assert out.touch == 2
    assert shop.ids("users") == [2, 3]


def test_guard_trips_touches_nothing_and_allow_large_overrides(shop):
    for uid in range(1, 11):
        shop.user(uid)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1))
                          for i in range(1, 11)])
    policy = shop.policy("""
    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    max_rows = 5
    """)
    before = shop.dump()
    report = shop.run(policy, now=NOW)
    out = outcome(report, "logs")
    assert out.status == "guard_tripped" and out.touch == 0 and out.guard.rows == 10
    assert report.exit_code == 3
    assert shop.dump() == before
    report = shop.run(policy, now=NOW, allow_large=True)
    assert outcome(report, "logs").touch == 10 and report.exit_code == 0


def test_default_max_fraction_guards_a_table_that_would_be_emptied(shop):
    shop.user(1)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    policy = shop.policy("""
    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    """)
    out = outcome(shop.run(policy, now=NOW), "logs")
    assert out.status == "guard_tripped" and out.guard.max_fraction == 0.9 and shop.ids("logs") == [1]


def test_a_failing_rule_does_not_stop_the_others_and_leaves_its_table_whole(shop):
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(3)
    shop.insert("logs", dict(id=1, user_id=3, ip="10.0.0.1", created_at=datetime(2020, 1, 1)),
                dict(id=2, user_id=3, ip="10.0.0.1", created_at=datetime(2026, 6, 15)))
    # a CHECK constraint the schema binding does not read makes the first rule fail in the database
    policy = shop.policy("""
    [[rules]]
    name = "broken"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "anonymize"
    where_sql = "1 = 1"
    columns.name = { strategy = "constant", value = "nobody" }
    max_fraction = 1.0

    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """)
    users_before = shop.rows("users")
    report = shop.run(policy, now=NOW)
    broken, logs = outcome(report, "broken"), outcome(report, "logs")
    # MariaDB names the constraint instead: "CONSTRAINT `users_name_not_nobody` failed for ..."
    assert broken.status == "failed" and ("check constraint" in broken.error.lower()
                                          or "constraint `users_name_not_nobody` failed" in broken.error.lower())
    assert broken.touch == 0                                  # what was committed: nothing
    assert "User 1" not in broken.error                      # no row values in the report
    assert logs.status == "ok" and logs.touch == 1
    assert report.exit_code == 1
    assert shop.rows("users") == users_before                 # the failed batch rolled back whole
    assert shop.ids("logs") == [2]


def test_restrict_marks_rows_once(shop):
    shop.user(1, status="closed", closed_at=datetime(2026, 1, 1))
    shop.user(2)
    policy = shop.policy("""
    [[rules]]
    name = "closed-restrict"
    table = "shop.users"
    clock = "closed_at"
    after = "0d"
    action = "restrict"
    max_fraction = 1.0
    """)
    assert outcome(shop.run(policy, now=NOW), "closed-restrict").touch == 1
    marked = {r["id"]: r["restricted_at"] for r in shop.rows("users")}
    assert marked[1] is not None and marked[2] is None
    again = outcome(shop.run(policy, now=NOW + timedelta(days=1)), "closed-restrict")
    assert again.touch == 0 and again.unchanged == 1
    assert {r["id"]: r["restricted_at"] for r in shop.rows("users")} == marked


def test_a_second_run_touches_nothing(shop):
    _cascade_shop(shop)
    policy = shop.policy(CASCADE + """
    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "90d"
    action = "delete"
    max_fraction = 1.0

    [[rules]]
    name = "anonymize-held-or-not"
    table = "shop.users"
    clock = "created_at"
    after = "1y"
    action = "anonymize"
    columns.email = "hash"
    columns.phone = { strategy = "mask", keep_last = 4 }
    columns.last_ip = { strategy = "generalize", ipv4_prefix = 16 }
    columns.birth_date = { strategy = "generalize", to = "year" }
    mark = "anonymized_at"
    max_fraction = 1.0
    """)
    first = shop.run(policy, now=NOW)
    assert sum(r.touch for r in first.rules) > 0
    after_first = shop.dump()
    second = shop.run(policy, now=NOW)
    assert [(r.rule, r.touch, r.cascaded_total) for r in second.rules] == [(r.rule, 0, 0) for r in second.rules]
    assert shop.dump() == after_first
    # without mark, idempotency rests on recognising anonymized values (hash output included)
    policy2 = shop.policy(CASCADE.split("[[rules]]")[0] + """
    [[rules]]
    name = "anon-no-mark"
    table = "shop.users"
    clock = "created_at"
    after = "1y"
    action = "anonymize"
    columns.email = "hash"
    columns.name = { strategy = "constant", value = "deleted user" }
    max_fraction = 1.0
    """, name="p2.toml")
    assert outcome(shop.run(policy2, now=NOW), "anon-no-mark").touch > 0
    snapshot = shop.dump()
    assert outcome(shop.run(policy2, now=NOW), "anon-no-mark").touch == 0
    assert shop.dump() == snapshot


def test_a_null_floor_clock_neither_protects_nor_hides_the_row(shop):
    # a cancelled order never completes: the floor never starts, and the rule still reaches it
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=None, total=5, buyer_name="Ada", shipping="Road"),
                dict(id=2, user_id=1, completed_at=datetime(2026, 1, 1), total=5, buyer_name="Ada", shipping="Road"))
    policy = shop.policy("""
    [[floors]]
    name = "ecommerce-law-3y"
    table = "shop.orders"
    clock = "completed_at"
    keep = "3y"
    columns = ["buyer_name"]

    [[rules]]
    name = "orders-anonymize"
    table = "shop.orders"
    clock = "id_clock_is_not_used"
    after = "0d"
    action = "anonymize"
    columns.buyer_name = "null"
    columns.shipping = "null"
    max_fraction = 1.0
    """.replace('clock = "id_clock_is_not_used"', 'clock = "user.created_at"'))
    out = outcome(shop.run(policy, now=NOW), "orders-anonymize")
    assert (out.due, out.touch, out.unchanged) == (2, 2, 0)
    assert {r["id"]: (r["buyer_name"], r["shipping"]) for r in shop.rows("orders")} == {
        1: (None, None), 2: ("Ada", None)}


def test_simulation_gives_a_runs_exact_numbers_where_rules_overlap_and_changes_nothing(shop):
    _cascade_shop(shop)
    # the second rule reaches rows the first one deletes or detaches
    policy = shop.policy(CASCADE + """
    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "90d"
    action = "delete"
    max_fraction = 1.0

    [[rules]]
    name = "closed-restrict"
    table = "shop.users"
    clock = "closed_at"
    after = "0d"
    action = "restrict"
    max_fraction = 1.0
    """)
    before = shop.dump()
    plain = shop.run(policy, dry_run=True, now=NOW)
    simulated = shop.run(policy, simulate=True, now=NOW)
    assert shop.dump() == before
    assert simulated.dry_run and simulated.simulated
    # counted alone, the restrict rule sees the users the delete rule removes first
    assert outcome(plain, "closed-restrict").overlaps == ["closed-accounts"]
    assert outcome(plain, "closed-restrict").touch == 3      # users 1, 2, 4 (3 is held)
    done = shop.run(policy, now=NOW)

    def numbers(report):
        return [(r.rule, r.due, r.touch, sorted(protected(r).items()), sorted(cascades(r).items()))
                for r in report.rules]

    assert numbers(simulated) == numbers(done)
    assert outcome(done, "closed-restrict").touch == 1       # only user 2 is left to restrict


@pytest.mark.postgresql
def test_a_statement_timeout_fails_its_rule_and_the_others_still_run(pg_url, tmp_path):
    shop = Shop(pg_url, tmp_path)
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)) for i in (1, 2)])
    shop.insert("addresses", dict(id=1, user_id=1, line1="Road"))
    policy = shop.policy("""
    [[rules]]
    name = "slow"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    where_sql = "pg_sleep(1.2) IS NOT NULL"
    max_fraction = 1.0

    [[rules]]
    name = "fast"
    table = "shop.addresses"
    clock = "user.created_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """, settings='statement_timeout = "1s"')
    report = shop.run(policy, now=NOW)
    slow, fast = outcome(report, "slow"), outcome(report, "fast")
    assert slow.status == "failed" and "QueryCanceled" in slow.error and "57014" in slow.error
    assert fast.status == "ok" and fast.touch == 1
    assert report.exit_code == 1
    assert shop.ids("logs") == [1, 2] and shop.ids("addresses") == []
    shop.close()


def test_sql_path_and_python_path_leave_identical_tables(backend, tmp_path):
    rows = []
    for uid in range(1, 40):
        rows.append(dict(id=uid, email=f"person.{uid}@example.com", name=f"Person Number {uid}",
                         phone=f"+44 20 7946 {uid:04d}", status="closed", created_at=datetime(2020, 1, 1),
                         closed_at=datetime(2021, 1, 1), birth_date=date(1960 + uid, uid % 12 + 1, uid % 27 + 1),
                         parental_consent_at=None, last_ip=f"192.168.{uid}.{uid * 3}" if uid % 3 else f"2001:db8:{uid:x}::{uid:x}",
                         anonymized_at=None, restricted_at=None))
    policy_body = """
    [[rules]]
    name = "anon"
    table = "shop.users"
    clock = "closed_at"
    after = "30d"
    action = "anonymize"
    columns.email = "hash"
    columns.name = { strategy = "constant", value = "deleted user" }
    columns.phone = { strategy = "mask", keep_first = 3, keep_last = 2 }
    columns.birth_date = { strategy = "generalize", to = "month" }
    columns.last_ip = { strategy = "generalize", ipv4_prefix = 16, ipv6_prefix = 32 }
    mark = "anonymized_at"
    max_fraction = 1.0
    """
    dumps = []
    for force_python in (False, True):
        sub = tmp_path / ("python" if force_python else "sql")
        sub.mkdir()
        url = backend.replace("app.db", f"{sub.name}.db") if backend.startswith("sqlite") else backend
        shop = Shop(url, sub)
        shop.insert("users", *rows)
        out = outcome(shop.run(shop.policy(policy_body), now=NOW, force_python=force_python), "anon")
        assert out.touch == len(rows)
        dumps.append(shop.dump())
        shop.close()
    assert dumps[0] == dumps[1]
    assert all(r[2] == "deleted user" for r in dumps[0]["users"])


def test_a_failing_rule_in_a_simulation_does_not_fail_the_rules_after_it(shop):
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    policy = shop.policy("""
    [[rules]]
    name = "broken"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "anonymize"
    columns.name = { strategy = "constant", value = "nobody" }
    max_fraction = 1.0

    [[rules]]
    name = "broken-count"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "restrict"
    where_sql = "1 / (id - id) = 1"
    max_fraction = 1.0

    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """)
    before = shop.dump()
    report = shop.run(policy, simulate=True, now=NOW)
    assert outcome(report, "broken").status == "failed"               # fails in a batch
    if shop.engine.dialect.name == "postgresql":                      # fails while counting (SQLite: NULL)
        assert outcome(report, "broken-count").status == "failed"
        assert "DivisionByZero" in outcome(report, "broken-count").error
    assert outcome(report, "logs").status == "ok" and outcome(report, "logs").touch == 1
    assert shop.dump() == before
