"""SIGTERM and SIGINT: the batch under way finishes or rolls back whole, the report is printed,
the run is recorded as interrupted, and the process exits 143 or 130.

Real subprocesses and real signals.  A run is held inside a batch by the test
holding a lock the batch needs; the test then signals it and lets go (the
batch finishes) or not (the batch is cancelled and rolls back).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from tests.runkit import audit_rows, start, state_url_of, wait_for
from tests.shopkit import HASH_ENV, LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
ROWS = 40


def _logs(shop) -> None:
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i in range(1, ROWS + 1)])


def _policy(shop, stop_timeout: str) -> str:
    # batches of exactly 2 rows: the first one waits on the test's locks, which must not shrink the next
    return shop.policy(LOGS_PURGE, settings=f'batch_size = 2\nmax_batch_seconds = 1000\nlock_timeout = "60s"\n'
                                            f'stop_timeout = "{stop_timeout}"')


def _kinds(state: str) -> list[str]:
    try:
        return [r["kind"] for r in audit_rows(state)]
    except sa.exc.SQLAlchemyError:
        return []


def _sqlite_write_locked(url: str) -> bool:
    engine = sa.create_engine(url, connect_args={"timeout": 0})
    try:
        with engine.connect() as conn:
            conn.connection.dbapi_connection.isolation_level = None
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.exec_driver_sql("ROLLBACK")
        return False
    except sa.exc.OperationalError:
        return True
    finally:
        engine.dispose()


def _start_held_mid_batch_sqlite(shop, policy: str, state: str):
    """Start a run and stop it inside its first batch: (process, engine, connection holding the state store).

    The app database is held first, so the run (after writing ``run-started``, the last
    thing it writes to the state store before its first batch's intent) waits at that batch.
    Then the state store is held and the app database let go: the batch opens, and waits
    writing its intent, uncommitted.
    """
    app = sa.create_engine(shop.url)
    app_conn = app.connect()
    app_conn.connection.dbapi_connection.isolation_level = None
    app_conn.exec_driver_sql("BEGIN IMMEDIATE")
    proc = start("run", "-c", policy, "--now", NOW.isoformat(), "--format", "json")
    engine = conn = None
    try:
        wait_for(lambda: "run-started" in _kinds(state), what="the run to start")
        engine = sa.create_engine(state)
        conn = engine.connect()
        conn.connection.dbapi_connection.isolation_level = None
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    finally:
        app_conn.exec_driver_sql("ROLLBACK")
        app_conn.close()
        app.dispose()
    # the run holds the app database's write lock and waits on ours: mid-batch
    wait_for(lambda: _sqlite_write_locked(shop.url), what="the run to open its first batch")
    return proc, engine, conn


def _assert_stopped_after_whole_batches(shop, proc, state: str, code: int, name: str) -> dict:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    report = json.loads(out)                                      # the report was printed
    assert report["interrupted"] == name and report["exit_code"] == code
    rule = report["rules"][0]
    assert rule["status"] == "interrupted"
    left = shop.count("logs")
    assert ROWS - left == rule["touch"]                            # what it says it did is what it did
    assert rule["touch"] % 2 == 0 and 0 < rule["touch"] < ROWS    # whole batches, and it stopped early
    rows = audit_rows(state)
    committed = sum(json.loads(r["body"])["touched"] for r in rows if r["kind"] == "batch-committed")
    assert committed == rule["touch"]
    assert [r["kind"] for r in rows].count("batch-intent") == [r["kind"] for r in rows].count("batch-committed")
    ended = json.loads(rows[-1]["body"])
    assert rows[-1]["kind"] == "run-ended" and ended["outcome"] == "interrupted"
    assert shop.dangling() == []
    return report


def test_sigterm_mid_batch_on_sqlite_commits_the_batch_whole(sqlite_shop):
    _logs(sqlite_shop)
    policy = _policy(sqlite_shop, "30s")
    state = state_url_of(policy)
    proc, engine, conn = _start_held_mid_batch_sqlite(sqlite_shop, policy, state)
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        conn.exec_driver_sql("ROLLBACK")          # let the intent be written: the batch commits
        conn.close()
        engine.dispose()
        _assert_stopped_after_whole_batches(sqlite_shop, proc, state, 143, "SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _pg_waiting(shop) -> bool:
    with shop.engine.connect() as conn:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())


def test_sigterm_mid_batch_on_postgresql_commits_the_batch_whole(pg_shop):
    _logs(pg_shop)
    policy = _policy(pg_shop, "30s")
    state = state_url_of(policy)
    blocker = pg_shop.engine.connect()
    blocker.execute(sa.text("SELECT id FROM logs WHERE id = 3 FOR UPDATE"))    # batch 2 waits for it
    proc = start("run", "-c", policy, "--now", NOW.isoformat(), "--format", "json")
    try:
        wait_for(lambda: _pg_waiting(pg_shop), what="the run to wait inside batch 2")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        blocker.rollback()                        # batch 2 goes on and commits whole
        report = _assert_stopped_after_whole_batches(pg_shop, proc, state, 143, "SIGTERM")
        assert report["rules"][0]["touch"] == 4
    finally:
        blocker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigint_with_a_batch_that_cannot_finish_rolls_it_back_within_stop_timeout(pg_shop):
    _logs(pg_shop)
    # the cancel comes at four fifths of stop_timeout; the rest must cover the rollback, the audit
    # entry and the report even on a loaded machine (2s left 0.4s, and a busy CI missed it)
    policy = _policy(pg_shop, "5s")
    state = state_url_of(policy)
    blocker = pg_shop.engine.connect()
    blocker.execute(sa.text("SELECT id FROM logs WHERE id = 3 FOR UPDATE"))    # and never let go
    proc = start("run", "-c", policy, "--now", NOW.isoformat(), "--format", "json")
    try:
        wait_for(lambda: _pg_waiting(pg_shop), what="the run to wait inside batch 2")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err
        report = json.loads(out)
        assert report["interrupted"] == "SIGINT"
        assert report["rules"][0]["touch"] == 2 and report["rules"][0]["status"] == "interrupted"
    finally:
        blocker.rollback()
        blocker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert pg_shop.count("logs") == ROWS - 2          # batch 2 rolled back whole
    rows = audit_rows(state)
    assert [r["kind"] for r in rows].count("batch-committed") == 1
    assert json.loads(rows[-1]["body"])["outcome"] == "interrupted"


def test_a_wait_no_cancel_reaches_ends_at_stop_timeout_and_the_database_rolls_back(sqlite_shop):
    _logs(sqlite_shop)
    policy = _policy(sqlite_shop, "2s")
    state = state_url_of(policy)
    proc, engine, conn = _start_held_mid_batch_sqlite(sqlite_shop, policy, state)
    try:
        proc.send_signal(signal.SIGTERM)          # the state store stays held: the intent cannot be written
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143
        assert "not stopped within settings.stop_timeout" in err
        conn.exec_driver_sql("ROLLBACK")
        conn.close()
    finally:
        if engine is not None:
            engine.dispose()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows = audit_rows(state)
    committed = sum(json.loads(r["body"])["touched"] for r in rows if r["kind"] == "batch-committed")
    assert ROWS - sqlite_shop.count("logs") == committed      # the open batch left nothing behind
    assert rows[-1]["kind"] != "run-ended"
    assert sqlite_shop.dangling() == []


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_dry_run_stopped_before_its_rules_skips_them_and_says_so(sqlite_shop, sig, code):
    _logs(sqlite_shop)
    policy = _policy(sqlite_shop, "30s")
    commands.state_upgrade(policy, env=HASH_ENV)
    state_engine = sa.create_engine(state_url_of(policy))
    held = state_engine.connect()
    held.connection.dbapi_connection.isolation_level = None
    held.exec_driver_sql("BEGIN IMMEDIATE")     # the plan cannot write its first audit entry yet
    proc = start("plan", "-c", policy, "--now", NOW.isoformat(), "--format", "json")
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any('"event": "start"' in line for line in lines), what="the plan to start")
        proc.send_signal(sig)                   # it waits to write run-started: no rule has run
        time.sleep(0.3)
        held.exec_driver_sql("ROLLBACK")
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == code, "".join(lines)
        report = json.loads(out)
        assert report["interrupted"] == signal.Signals(sig).name
        assert report["rules"] == [] and report["skipped"] == ["logs-purge"]
    finally:
        held.close()
        state_engine.dispose()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sqlite_shop.count("logs") == ROWS
    ended = json.loads(audit_rows(state_url_of(policy))[-1]["body"])
    assert ended["outcome"] == "interrupted" and ended["skipped"] == ["logs-purge"]
