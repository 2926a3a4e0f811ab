"""SQLite transactions: a simulation never commits, a batch survives the application's commits,
and a plain dry run does not hold the database between its statements.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

from retention.execute import count, rules
from tests.shopkit import LOGS_PURGE, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def test_simulation_never_commits_even_after_sqlite_rolled_the_transaction_back(sqlite_shop):
    shop = sqlite_shop
    shop.insert("merchants", dict(id=1, name="m", closed_at=OLD))
    shop.insert("logs", dict(id=1, user_id=None, ip="10.1.2.3", created_at=OLD))
    with shop.engine.begin() as conn:   # the app archives merchants instead of deleting them
        conn.exec_driver_sql("CREATE TRIGGER merchants_archived BEFORE DELETE ON merchants "
                             "BEGIN SELECT RAISE(ROLLBACK, 'merchants are archived, not deleted'); END")
    policy = shop.policy("""
        [[rules]]
        name = "merchants-purge"
        table = "shop.merchants"
        clock = "closed_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0
        """ + LOGS_PURGE)
    before = shop.dump()
    try:
        shop.run(policy, dry_run=True, simulate=True, now=NOW)
    except Exception:
        pass   # failing loudly is acceptable; committing is not
    assert shop.dump() == before


def test_sqlite_batch_survives_an_app_commit_between_its_read_and_its_write(sqlite_shop, monkeypatch):
    # batches BEGIN IMMEDIATE: an application write that arrives while a batch is open waits for it
    # (busy_timeout) instead of invalidating the batch's snapshot, and lands right after
    import threading
    shop = sqlite_shop
    with shop.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    shop.insert("logs", *[dict(id=i, user_id=None, ip="10.1.2.3", created_at=OLD) for i in range(1, 4)])
    path = shop.url.removeprefix("sqlite:///")
    original, app_errors, threads = rules._next_range, [], []

    def app_write():
        app = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            app.execute("INSERT INTO logs (id, ip, created_at) VALUES (100, '10.9.9.9', '2026-06-15 11:00:00')")
        except sqlite3.OperationalError as e:
            app_errors.append(str(e))
        finally:
            app.close()

    def next_range_then_app_writes(*args, **kw):
        found = original(*args, **kw)
        if not threads:   # the app logs a new request while our first batch is open
            threads.append(threading.Thread(target=app_write))
            threads[0].start()
            threads[0].join(0.3)          # give it time to hit our lock
        return found

    monkeypatch.setattr(rules, "_next_range", next_range_then_app_writes)
    report = shop.run(shop.policy(LOGS_PURGE), now=NOW)
    threads[0].join()
    out = outcome(report, "logs-purge")
    assert (out.status, out.error, out.touch) == ("ok", None, 3)
    assert app_errors == [] and shop.ids("logs") == [100]


def test_plain_dry_run_does_not_block_app_writers_between_its_statements(sqlite_shop, monkeypatch):
    shop = sqlite_shop
    shop.user(1, status="closed", closed_at=OLD)
    path = shop.url.removeprefix("sqlite:///")
    original, errors = count.count_touch, []

    def count_touch_while_app_writes(conn, plan, opts, *rest):
        n = original(conn, plan, opts, *rest)
        app = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            app.execute("INSERT INTO logs (id, ip, created_at) VALUES (100, '10.9.9.9', '2026-06-15 11:00:00')")
        except sqlite3.OperationalError as e:
            errors.append(str(e))
        finally:
            app.close()
        return n

    monkeypatch.setattr(count, "count_touch", count_touch_while_app_writes)
    shop.run(shop.policy("""
        [[rules]]
        name = "closed-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "anonymize"
        columns.email = "hash"
        max_fraction = 1.0
        """), dry_run=True, now=NOW)
    assert errors == []
