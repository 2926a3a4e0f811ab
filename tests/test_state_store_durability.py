"""A SQLite state store syncs every commit through a write-ahead log, and loses nothing to a killed process.

The audit log is evidence: an entry must be durable the moment its commit
returns (see retention.state.store).  The application's own SQLite database
keeps whatever journal mode its operator chose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from retention import commands
from retention.audit import AuditLog
from retention.state import open_store
from tests.shopkit import HASH_ENV, LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parent.parent
FULL = 2


def _pragma(conn, name: str):
    return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


def test_every_connection_to_a_sqlite_store_syncs_each_commit_through_a_write_ahead_log(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        for _ in range(2):      # a pooled connection and a fresh one alike
            with store.engine.connect() as conn:
                assert (_pragma(conn, "journal_mode"), _pragma(conn, "synchronous")) == ("wal", FULL)
            store.engine.dispose()
    finally:
        store.close()


def test_a_run_leaves_the_applications_sqlite_journal_mode_alone(sqlite_shop):
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1)))
    policy = sqlite_shop.policy(LOGS_PURGE)
    assert sqlite_shop.run(policy, now=NOW).exit_code == 0
    with sqlite_shop.engine.connect() as conn:
        assert _pragma(conn, "journal_mode") == "delete"
    engine = sa.create_engine(f"sqlite:///{sqlite_shop.tmp_path / 'state.db'}")
    try:
        with engine.connect() as conn:
            assert _pragma(conn, "journal_mode") == "wal"
    finally:
        engine.dispose()


_APPEND_THEN_DIE = textwrap.dedent("""
    import os, signal, sys
    from retention.audit import AuditLog
    from retention.state import open_store
    log = AuditLog(open_store(sys.argv[1]))
    for i in range(3):
        log.append("killed-run", "batch-intent", {"batch": i})
    os.kill(os.getpid(), signal.SIGKILL)       # no close, no checkpoint: the entries are in the -wal file
    """)


def test_entries_committed_before_a_kill_are_there_after_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    proc = subprocess.run([sys.executable, "-c", _APPEND_THEN_DIE, url], cwd=ROOT, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    store = open_store(url)
    try:
        log = AuditLog(store)
        assert [e.body["batch"] for e in log.entries("killed-run")] == [0, 1, 2]
        assert log.verify().ok
        log.append("next-run", "run-started", {})
        assert log.verify().checked == 4
    finally:
        store.close()


def test_a_store_in_the_rollback_journal_is_moved_to_the_write_ahead_log_and_keeps_its_entries(sqlite_shop):
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1)))
    policy = sqlite_shop.policy(LOGS_PURGE)
    path = sqlite_shop.tmp_path / "state.db"
    commands.state_upgrade(policy, env=HASH_ENV)
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:      # as a store written by an earlier release
            conn.exec_driver_sql("PRAGMA journal_mode = DELETE")
            assert _pragma(conn, "journal_mode") == "delete"
    finally:
        engine.dispose()
    assert sqlite_shop.run(policy, now=NOW).exit_code == 0
    store = open_store(f"sqlite:///{path}")
    try:
        with store.engine.connect() as conn:
            assert _pragma(conn, "journal_mode") == "wal"
        assert AuditLog(store).verify().ok
    finally:
        store.close()
