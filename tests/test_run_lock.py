"""One run at a time: a second run exits 4 naming the holder; a killed run never blocks the next."""

from __future__ import annotations

import json
import os
import signal
import socket
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from retention.errors import LockHeld
from tests.runkit import audit_rows, retention, start, state_url_of, wait_for
from tests.shopkit import HASH_ENV, LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
SETTINGS = 'batch_size = 2\nlock_timeout = "60s"\nstop_timeout = "30s"'


def _logs(shop, n: int = 6) -> None:
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i in range(1, n + 1)])


class Blocker:
    """Holds the application database so a run waits inside its first batch, until released."""

    def __init__(self, shop) -> None:
        self.shop = shop
        self.conn = shop.engine.connect()
        if shop.engine.dialect.name == "sqlite":
            self.conn.connection.dbapi_connection.isolation_level = None
            self.conn.exec_driver_sql("BEGIN IMMEDIATE")      # the write lock: the run's batch waits for it
        else:
            self.conn.execute(sa.text("SELECT id FROM logs WHERE id = 1 FOR UPDATE"))

    def run_is_waiting(self, state: str) -> bool:
        """The run holds its lock and waits in a batch (SQLite: it holds the lease and has started;
        MariaDB: it has recorded itself as the lock's holder, and a transaction waits for a row lock)."""
        name = self.shop.engine.dialect.name
        if name in ("mysql", "mariadb"):
            # PROCESSLIST, not INNODB_TRX: that one is a cache the server refreshes only when it
            # has not been read for 0.1 s, so polling it faster keeps showing the old state
            with self.shop.engine.connect() as conn:
                waiting = conn.execute(sa.text(
                    "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() "
                    "AND ID <> CONNECTION_ID() AND COMMAND = 'Query' AND INFO LIKE 'DELETE FROM logs%'")).scalar()
            return bool(waiting) and self._leased(state)
        if name == "sqlite":
            return self._leased(state)
        with self.shop.engine.connect() as conn:
            return bool(conn.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar())

    @staticmethod
    def _leased(state: str) -> bool:
        engine = sa.create_engine(state)
        try:
            with engine.connect() as conn:
                if not sa.inspect(conn).has_table("retention_leases"):
                    return False
                return bool(conn.execute(sa.text("SELECT count(*) FROM retention_leases")).scalar()) and bool(
                    conn.execute(sa.text("SELECT count(*) FROM retention_audit WHERE kind = 'run-started'"))
                    .scalar())
        finally:
            engine.dispose()

    def release(self) -> None:
        if self.conn is not None:
            self.conn.exec_driver_sql("ROLLBACK") if self.shop.engine.dialect.name == "sqlite" else self.conn.rollback()
            self.conn.close()
            self.conn = None


@pytest.fixture
def blocked(shop):
    _logs(shop)
    policy = shop.policy(LOGS_PURGE, settings=SETTINGS)
    blocker = Blocker(shop)
    yield shop, policy, blocker
    blocker.release()


def test_a_second_run_exits_4_naming_the_holder(blocked):
    shop, policy, blocker = blocked
    first = start("run", "-c", policy, "--now", NOW.isoformat(), "--format", "json")
    try:
        wait_for(lambda: blocker.run_is_waiting(state_url_of(policy)), what="the first run to wait in a batch")
        second = retention("run", "-c", policy, "--now", NOW.isoformat())
        assert second.returncode == 4, second.stderr
        started = next(json.loads(r["body"]) | {"run_id": r["run_id"]} for r in audit_rows(state_url_of(policy))
                       if r["kind"] == "run-started" and json.loads(r["body"])["pid"] == first.pid)
        assert f"run {started['run_id']}" in second.stderr
        assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr
        assert "since 20" in second.stderr
        # plan takes no lock
        assert retention("plan", "-c", policy, "--now", NOW.isoformat()).returncode == 0
        blocker.release()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert json.loads(out)["totals"]["touch"] == 6
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert shop.count("logs") == 0


def test_a_killed_run_leaves_no_lock_and_is_shown_interrupted(blocked):
    shop, policy, blocker = blocked
    state = state_url_of(policy)
    first = start("run", "-c", policy, "--now", NOW.isoformat())
    wait_for(lambda: blocker.run_is_waiting(state), what="the first run to wait in a batch")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    blocker.release()
    killed = next(r["run_id"] for r in audit_rows(state) if r["kind"] == "run-started")
    again = wait_for(lambda: (p := retention("run", "-c", policy, "--now", NOW.isoformat())).returncode != 4 and p,
                     timeout=30, what="the lock of the killed run to go")
    assert again.returncode == 0, again.stderr
    assert shop.count("logs") == 0
    doc = json.loads(retention("audit", "show", "-c", policy, "--format", "json").stdout)
    runs = {r["run_id"]: r for r in doc["runs"]}
    assert runs[killed]["outcome"].startswith("interrupted")
    assert runs[killed]["ended_at"] is None
    assert commands.audit_verify(policy, env=HASH_ENV).ok


def _lease(shop, policy: str, *, host: str, expires: datetime, pid: int = 1) -> None:
    commands.state_upgrade(policy, env=HASH_ENV)
    engine = sa.create_engine(state_url_of(policy))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO retention_leases VALUES (:n, 'r-elsewhere', :h, :p, :a, :e)"),
                     {"n": "sqlite:" + os.path.realpath(shop.engine.url.database), "h": host, "p": pid,
                      "a": (expires - timedelta(minutes=1)).isoformat(), "e": expires.isoformat()})
    engine.dispose()


def test_a_live_lease_from_another_host_refuses_the_run_but_not_a_plan(sqlite_shop):
    _logs(sqlite_shop)
    policy = sqlite_shop.policy(LOGS_PURGE)
    _lease(sqlite_shop, policy, host="elsewhere", expires=datetime.now(timezone.utc) + timedelta(minutes=5))
    with pytest.raises(LockHeld, match=r"run r-elsewhere \(pid 1 on host elsewhere\) since"):
        sqlite_shop.run(policy, now=NOW)
    with pytest.raises(LockHeld):
        sqlite_shop.run(policy, simulate=True, now=NOW)
    assert sqlite_shop.run(policy, dry_run=True, now=NOW).rules[0].touch == 6
    assert sqlite_shop.count("logs") == 6


def test_an_expired_lease_is_taken_over_and_recorded(sqlite_shop):
    _logs(sqlite_shop)
    policy = sqlite_shop.policy(LOGS_PURGE)
    _lease(sqlite_shop, policy, host="elsewhere", expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    assert sqlite_shop.run(policy, now=NOW).exit_code == 0
    abandoned = [r for r in audit_rows(state_url_of(policy)) if r["kind"] == "run-abandoned"]
    assert [r["run_id"] for r in abandoned] == ["r-elsewhere"]
    assert "expired" in json.loads(abandoned[0]["body"])["reason"]
    # and the run gave its own lease back
    engine = sa.create_engine(state_url_of(policy))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM retention_leases")).scalar() == 0
    engine.dispose()
