"""Review round 3: concurrency, rule interplay, report honesty under change, crash safety.

Each test was written to prove a defect against a promise of POLICIES.md or
the README, or to pin behaviour this round verified (lock timeouts,
interrupted simulations, a killed process).  The defects are fixed; the one
test still marked xfail(strict) is a documented limitation (see README).

Concurrency is staged deterministically: a function of retention.execute is
wrapped so that a second connection (the "application") acts at one precise
moment of the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from retention import commands
from retention.execute import batch, rules
from retention.errors import ConfigError
from tests.shopkit import HASH_ENV, HOLDS, LOGS_PURGE, Shop, cascades, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


USERS_PURGE = """
    [[rules]]
    name = "closed-users-purge"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
"""


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


# --- 1. concurrency (PostgreSQL, READ COMMITTED) ----------------------------------------------

# A child committed while the batch's FOR UPDATE waited for its parent's lock is not in that
# statement's snapshot: the batch must re-check after locking, or the parent's delete fails the
# batch (plain FK) or silently takes the child with it (ON DELETE CASCADE in the schema).
@pytest.mark.parametrize("ondelete", [None, "CASCADE"])
def test_pg_block_child_committed_while_the_batch_waits_for_its_parent_lock(pg_shop, monkeypatch, ondelete):
    shop = pg_shop
    notes = sa.Table("notes", shop.md,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete=ondelete),
                               nullable=False))
    notes.create(shop.engine)
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
    policy = shop.policy(USERS_PURGE + """
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        """, settings='lock_timeout = "10s"')
    app = shop.engine.connect()
    original, staged = rules._next_range, {}

    def next_range_then_app_writes_a_note(*args):
        found = original(*args)
        if not staged:
            # the app writes a note on user 2 (holding its FOR KEY SHARE lock) and commits a moment
            # later, while our SELECT ... FOR UPDATE waits for that lock
            staged["tx"] = app.begin()
            app.execute(notes.insert().values(id=1, user_id=2))
            staged["timer"] = threading.Timer(1.0, staged["tx"].commit)
            staged["timer"].start()
        return found

    monkeypatch.setattr(rules, "_next_range", next_range_then_app_writes_a_note)
    try:
        out = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    finally:
        staged["timer"].join()
        app.close()
    assert shop.dangling() == []
    # at commit time user 2 has a blocking child: it and its note stay, the others go
    assert shop.count("notes") == 1 and shop.ids("users") == [2]
    assert (out.status, out.touch) == ("ok", 2)


def test_pg_lock_timeout_fails_the_batch_cleanly_and_a_later_run_finishes(pg_shop):
    shop = pg_shop
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
        shop.insert("logs", dict(id=i, user_id=None, ip="10.1.2.3", created_at=OLD))
    policy = shop.policy(USERS_PURGE + LOGS_PURGE + """
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        """, settings='batch_size = 1\nlock_timeout = "1s"')
    with shop.engine.connect() as app:
        with app.begin():   # the app holds user 2's address (a cascaded child) and log 3
            app.execute(sa.text("SELECT id FROM addresses WHERE id = 2 FOR UPDATE")).all()
            app.execute(sa.text("SELECT id FROM logs WHERE id = 3 FOR UPDATE")).all()
            report = shop.run(policy, now=NOW)
            users, logs = outcome(report, "closed-users-purge"), outcome(report, "logs-purge")
            assert (users.status, users.touch, users.remaining) == ("failed", 1, 2)
            assert "55P03" in users.error and adds_up(users)
            assert cascades(users) == {"shop.addresses:delete": 1}
            assert (logs.status, logs.touch, logs.remaining) == ("failed", 2, 1)
    # nothing half done: user 2 and its address were rolled back together
    assert shop.ids("users") == [2, 3] and shop.ids("addresses") == [2, 3] and shop.ids("logs") == [3]
    assert shop.dangling() == []
    again = shop.run(policy, now=NOW)
    assert (outcome(again, "closed-users-purge").touch, outcome(again, "logs-purge").touch) == (2, 1)
    assert shop.ids("users") == [] and shop.ids("addresses") == []


def test_pg_interrupted_simulation_leaves_no_transaction_or_lock(pg_shop, monkeypatch):
    shop = pg_shop
    for i in (1, 2):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
    policy = shop.policy(USERS_PURGE + """
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        """)
    before = shop.dump()
    original = batch._cascade

    def cascade_then_interrupt(*a, **kw):
        original(*a, **kw)
        raise KeyboardInterrupt   # Ctrl-C after the children went, before the parents

    monkeypatch.setattr(batch, "_cascade", cascade_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        shop.run(policy, dry_run=True, simulate=True, now=NOW)
    with shop.engine.connect() as conn:
        db = conn.exec_driver_sql("SELECT current_database()").scalar()
        busy = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %(db)s AND pid <> pg_backend_pid() "
            "AND state LIKE 'idle in transaction%%'", {"db": db}).scalar()
        locks = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE a.datname = %(db)s AND a.pid <> pg_backend_pid() AND l.locktype = 'relation'",
            {"db": db}).scalar()
    assert (busy, locks) == (0, 0)
    assert shop.dump() == before


# --- 3. report honesty under change ------------------------------------------------------------

def test_guard_still_bounds_the_run_when_rows_become_workable_after_counting(shop, monkeypatch):
    for i in range(1, 6):
        shop.user(i)
        shop.insert("logs", *[dict(id=2 * i + j, user_id=i, ip="10.1.2.3", created_at=OLD) for j in (0, 1)])
        if i > 1:
            shop.insert("legal_holds", dict(id=i, user_id=i, released_at=None))
    policy = shop.policy(LOGS_PURGE + "max_rows = 2\n" + HOLDS)
    original = rules.guard_state

    def guard_then_app_releases_every_hold(out, plan, allow_large):
        original(out, plan, allow_large)
        with shop.engine.begin() as conn:
            conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2026, 6, 15)))

    monkeypatch.setattr(rules, "guard_state", guard_then_app_releases_every_hold)
    out = outcome(shop.run(policy, now=NOW), "logs-purge")
    assert (out.due, out.protected_total) == (10, 8)
    assert shop.count("logs") >= 8, "max_rows = 2, yet the run deleted more"
    assert out.touch <= 2 and adds_up(out)


def test_counts_add_up_when_rows_stop_being_due_during_the_run(shop, monkeypatch):
    for i in range(1, 5):
        shop.user(i, status="closed", closed_at=OLD)
    original = rules.guard_state

    def guard_then_app_reopens_two_accounts(out, plan, allow_large):
        original(out, plan, allow_large)
        with shop.engine.begin() as conn:
            users = shop.t("users")
            conn.execute(users.update().where(users.c.id > 2).values(status="active", closed_at=None))

    monkeypatch.setattr(rules, "guard_state", guard_then_app_reopens_two_accounts)
    out = outcome(shop.run(shop.policy(USERS_PURGE), now=NOW), "closed-users-purge")
    assert out.touch == 2 and shop.ids("users") == [3, 4]
    assert adds_up(out), (out.due, out.protected_total, out.touch, out.unchanged, out.remaining)


# --- 2. interplay between rules and cascades ------------------------------------------------------

def _gifts(shop: Shop) -> sa.Table:
    gifts = sa.Table("gifts", shop.md,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("giver_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
                     sa.Column("recipient_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False))
    gifts.create(shop.engine)
    return gifts


GIFTS = """
    [tables."shop.gifts"]
    on_parent_delete = { giver_id = "delete", recipient_id = "block" }
"""


def test_dry_run_equals_run_when_a_batch_unblocks_a_later_row_of_the_same_rule(shop):
    _gifts(shop)
    shop.user(1, status="closed", closed_at=OLD)      # gives a gift to user 2
    shop.user(2, status="closed", closed_at=OLD)
    shop.insert("gifts", dict(id=1, giver_id=1, recipient_id=2))
    policy = shop.policy(USERS_PURGE + GIFTS, settings="batch_size = 1")
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-users-purge")
    assert (dry.due, dry.protected_total, dry.touch) == (2, 1, 1)
    run = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert run.touch == dry.touch and adds_up(run)


@pytest.mark.xfail(strict=True, reason=(
    "known limitation, documented and warned about by check: with one key deleting and one blocking "
    "to the same parent, deleting the giver (id 2) unblocks the recipient (id 1) after it was judged; "
    "the run stops at what it counted, so the next run deletes the recipient"))
def test_second_run_touches_nothing_when_the_first_unblocked_a_row(shop):
    _gifts(shop)
    shop.user(1, status="closed", closed_at=OLD)
    shop.user(2, status="closed", closed_at=OLD)      # gives a gift to user 1
    shop.insert("gifts", dict(id=1, giver_id=2, recipient_id=1))
    policy = shop.policy(USERS_PURGE + GIFTS)
    first = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert first.touch >= 1
    second = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert second.touch == 0


def test_check_warns_when_deleting_one_row_can_unblock_another(shop):
    _gifts(shop)
    policy = shop.policy(USERS_PURGE + GIFTS)
    warnings = commands.check(policy, env=HASH_ENV).warnings
    assert any("shop.gifts references shop.users twice" in w for w in warnings), warnings


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


def test_rows_detached_by_one_rule_still_fall_due_under_a_rule_clocked_through_that_fk(shop):
    shop.user(1, status="closed", closed_at=OLD)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.1.2.3", created_at=datetime(2026, 6, 1)))
    policy = shop.policy(USERS_PURGE + """
        [[rules]]
        name = "logs-of-closed-users"
        table = "shop.logs"
        clock = "user.closed_at"
        after = "30d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.logs"]
        on_parent_delete = "detach"
        """)
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "logs-of-closed-users")
    assert dry.touch == 1
    warned = any("detach" in w for w in commands.check(policy, env=HASH_ENV).warnings)
    shop.run(policy, now=NOW)
    shop.run(policy, now=NOW)
    assert shop.count("logs") == 0 or warned


def test_delete_rule_on_a_child_after_its_parents_rule_in_the_same_run(shop):
    for i in (1, 2):
        shop.user(i, status="closed" if i == 1 else "active", closed_at=OLD if i == 1 else None)
        shop.insert("orders", dict(id=i, user_id=i, completed_at=OLD, total=1, buyer_name="b", shipping="s"))
        shop.insert("order_items", dict(id=i, order_id=i, sku="x"))
    policy = shop.policy(USERS_PURGE + """
        [[rules]]
        name = "orders-purge"
        table = "shop.orders"
        clock = "completed_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.orders"]
        on_parent_delete = "delete"
        [tables."shop.order_items"]
        on_parent_delete = "delete"
        """)
    report = shop.run(policy, now=NOW)
    users, orders = outcome(report, "closed-users-purge"), outcome(report, "orders-purge")
    assert (users.touch, cascades(users)) == (1, {"shop.orders:delete": 1, "shop.order_items:delete": 1})
    assert (orders.due, orders.touch, cascades(orders)) == (1, 1, {"shop.order_items:delete": 1})
    assert adds_up(users) and adds_up(orders) and shop.dangling() == []
    assert shop.ids("users") == [2] and shop.ids("orders") == [] and shop.ids("order_items") == []


# --- 4. crash safety --------------------------------------------------------------------------

_DIE_MID_BATCH = textwrap.dedent("""
    import os, signal, sys
    from datetime import datetime, timezone
    from retention import commands
    from retention.execute import batch
    original, seen = batch._cascade, []

    def cascade_then_die(conn, plan, steps, roots, cascaded, path=()):
        original(conn, plan, steps, roots, cascaded, path)
        if not path:                       # the batch's top-level cascade: children gone, parents not yet
            seen.append(1)
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    batch._cascade = cascade_then_die
    commands.run(sys.argv[1], now=datetime(2026, 6, 15, 12, tzinfo=timezone.utc),
                 env={"RETENTION_HASH_KEY": "k"})
    """)


def test_killed_mid_batch_the_database_stays_consistent_and_a_rerun_finishes(shop):
    for i in range(1, 11):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
        shop.insert("orders", dict(id=i, user_id=i, completed_at=OLD, total=1, buyer_name="b", shipping="s"))
        shop.insert("order_items", dict(id=i, order_id=i, sku="x"))
    policy = shop.policy(USERS_PURGE + """
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        [tables."shop.orders"]
        on_parent_delete = "delete"
        [tables."shop.order_items"]
        on_parent_delete = "delete"
        """, settings="batch_size = 2\nmax_batch_seconds = 1000")
    shop.engine.dispose()
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-c", _DIE_MID_BATCH, policy], cwd=root, capture_output=True,
                          env={**os.environ, "PYTHONPATH": root}, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    # two batches committed; the third died between its children and its parents and rolled back whole
    assert shop.dangling() == []
    for table in ("users", "addresses", "orders", "order_items"):
        assert shop.ids(table) == list(range(5, 11)), table
    again = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert (again.status, again.due, again.touch) == ("ok", 6, 6) and adds_up(again)
    assert cascades(again) == {"shop.addresses:delete": 6, "shop.orders:delete": 6,
                               "shop.order_items:delete": 6}
    assert shop.ids("users") == [] and shop.dangling() == []
    assert outcome(shop.run(policy, now=NOW), "closed-users-purge").touch == 0
