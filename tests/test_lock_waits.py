"""PostgreSQL, READ COMMITTED: a batch that waits for a lock re-checks what it locked, a lock
timeout fails the batch cleanly, and an interrupted simulation leaves no transaction behind.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention.execute import batch, rules
from tests.shopkit import LOGS_PURGE, USERS_PURGE, cascades, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


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

    def next_range_then_app_writes_a_note(*args, **kw):
        found = original(*args, **kw)
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
