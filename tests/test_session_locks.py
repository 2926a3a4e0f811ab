"""Run locks owned by a database session (MariaDB/MySQL ``GET_LOCK``, PostgreSQL advisory locks).

The staged two-run scenarios are in ``test_run_lock.py``; these tests pin what
only a session lock gives: it is the server's, so it excludes a run on any
host, and it ends with its session, so nothing a killed run leaves behind in
the state store can block the next one.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention.dialects.mysql import run_lock_name
from retention.errors import LockHeld
from retention.locks import RunLock
from retention.state import open_store
from tests.runkit import audit_rows, state_url_of
from tests.shopkit import LOGS_PURGE, Shop, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def maria_shop(mariadb_url, tmp_path):
    s = Shop(mariadb_url, tmp_path)
    s.user(1)
    s.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1)) for i in (1, 2)])
    yield s
    s.close()


def _database(shop) -> str:
    return make_url(shop.url).database


def _holding(shop, name: str) -> sa.Connection:
    """A session of its own that holds the named lock, as a run on another host would."""
    conn = shop.engine.connect()
    assert conn.execute(sa.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() == 1
    return conn


def test_a_session_holding_get_lock_refuses_the_run_and_its_end_frees_it(maria_shop):
    shop = maria_shop
    policy = shop.policy(LOGS_PURGE)
    other = _holding(shop, run_lock_name(_database(shop), "run"))
    try:
        session = other.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
        with pytest.raises(LockHeld, match=rf"database session {session}\b.*nothing was touched"):
            shop.run(policy, now=NOW)
        with pytest.raises(LockHeld):
            shop.run(policy, simulate=True, now=NOW)
        assert outcome(shop.run(policy, dry_run=True, now=NOW), "logs-purge").touch == 2   # plan takes no lock
        assert shop.ids("logs") == [1, 2]
    finally:
        # the session ends without RELEASE_LOCK, as a killed run's does: the lock goes with it
        other.invalidate()
        other.close()
    assert outcome(shop.run(policy, now=NOW), "logs-purge").touch == 2
    assert shop.ids("logs") == []


def test_while_a_run_holds_the_lock_the_server_shows_it_and_afterwards_nothing_is_left(maria_shop):
    shop = maria_shop
    name = run_lock_name(_database(shop), "run")
    seen = []

    def look(conn, cursor, statement, *_):
        if statement.startswith("DELETE FROM logs"):
            with shop.engine.connect() as probe:
                seen.append(probe.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", look)
    try:
        report = shop.run(shop.policy(LOGS_PURGE), now=NOW)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", look)
    assert report.exit_code == 0 and seen and all(s is not None for s in seen)
    with shop.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar() is None
    engine = sa.create_engine(state_url_of(shop.policy(LOGS_PURGE)))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM retention_leases")).scalar() == 0
    finally:
        engine.dispose()


def test_a_record_left_by_a_run_killed_on_another_host_neither_blocks_nor_goes_unrecorded(maria_shop):
    # a lease from another host would block until it expired; a session lock's record does not:
    # the lock itself was free, so the run that wrote the record is gone
    shop = maria_shop
    policy = shop.policy(LOGS_PURGE)
    url = make_url(shop.url)
    store = open_store(state_url_of(policy), policy)
    try:
        with store.writing() as conn:
            later = (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat()
            conn.execute(sa.text("INSERT INTO retention_leases VALUES (:n, 'r-elsewhere', 'elsewhere', 1, :a, :a)"),
                         {"n": f"mysql://{url.host}:{url.port}/{url.database}", "a": later})
    finally:
        store.close()
    assert shop.run(policy, now=NOW).exit_code == 0
    abandoned = [r for r in audit_rows(state_url_of(policy)) if r["kind"] == "run-abandoned"]
    assert [r["run_id"] for r in abandoned] == ["r-elsewhere"]
    assert "session ended" in json.loads(abandoned[0]["body"])["reason"]


def test_the_lock_is_per_database_and_per_scope(maria_shop):
    shop = maria_shop
    policy = shop.policy(LOGS_PURGE)
    # GET_LOCK's names are the whole server's: another database's run lock does not exclude this one
    other = _holding(shop, run_lock_name(_database(shop) + "_other", "run"))
    try:
        assert shop.run(policy, now=NOW).exit_code == 0
    finally:
        other.invalidate()
    store = open_store(state_url_of(policy), policy)
    engine = sa.create_engine(shop.url)
    try:
        whole = RunLock(store, {"shop": engine}, "r-whole")
        shard = RunLock(store, {"shop": engine}, "r-shard", scope="other")
        whole.acquire()
        shard.acquire()                     # another scope: not excluded
        try:
            with pytest.raises(LockHeld, match="run r-shard"):
                RunLock(store, {"shop": engine}, "r-again", scope="other").acquire()
            with pytest.raises(LockHeld, match="run r-whole"):
                RunLock(store, {"shop": engine}, "r-again").acquire()
        finally:
            shard.release()
            whole.release()
        again = RunLock(store, {"shop": engine}, "r-after", scope="other")
        again.acquire()
        again.release()
        assert again.abandoned == []        # the releases removed their records
    finally:
        engine.dispose()
        store.close()


def test_lock_names_fit_get_lock_and_keep_databases_apart():
    assert run_lock_name("shop", "run") == "retention:shop:run"
    long_a, long_b = run_lock_name("a" * 64, "run"), run_lock_name("a" * 63 + "b", "run")
    assert len(long_a) == len(long_b) == 64 and long_a != long_b
    assert run_lock_name("a" * 64, "shard 1/4") != long_a


def test_a_dead_process_record_is_not_named_as_the_holder(maria_shop):
    # the lock is held (by a session that has not written its record yet), and the record
    # there is a killed run's from this host: the message must not name the dead run
    shop = maria_shop
    policy = shop.policy(LOGS_PURGE)
    url = make_url(shop.url)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    store = open_store(state_url_of(policy), policy)
    try:
        with store.writing() as conn:
            conn.execute(sa.text("INSERT INTO retention_leases VALUES (:n, 'r-killed', :h, :p, :a, :a)"),
                         {"n": f"mysql://{url.host}:{url.port}/{url.database}", "h": socket.gethostname(),
                          "p": gone.pid, "a": datetime.now(timezone.utc).isoformat()})
    finally:
        store.close()
    other = _holding(shop, run_lock_name(_database(shop), "run"))
    try:
        with pytest.raises(LockHeld) as held:
            shop.run(policy, now=NOW)
        assert "r-killed" not in str(held.value) and "database session" in str(held.value)
    finally:
        other.invalidate()      # ends the session, and its lock


def test_scopes_on_postgresql_lock_apart_and_name_their_holder(pg_url, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
    engine = sa.create_engine(pg_url)
    try:
        whole = RunLock(store, {"shop": engine}, "r-whole")
        shard = RunLock(store, {"shop": engine}, "r-shard", scope="other")
        whole.acquire()
        shard.acquire()
        try:
            with pytest.raises(LockHeld, match=r"run r-shard \(pid \d+ on host"):
                RunLock(store, {"shop": engine}, "r-again", scope="other").acquire()
            with pytest.raises(LockHeld, match=r"run r-whole \(pid \d+ on host"):
                RunLock(store, {"shop": engine}, "r-again").acquire()
        finally:
            shard.release()
            whole.release()
        again = RunLock(store, {"shop": engine}, "r-after", scope="other")
        again.acquire()
        again.release()
    finally:
        engine.dispose()
        store.close()


def test_a_shard_is_not_refused_by_another_shard_checking_for_a_whole_run(maria_shop):
    # shards started together each take the whole run's lock for an instant, to see that no whole
    # run holds it: a shard meeting another's check waits it out; a whole run's lock still bars it
    import threading

    from retention.locks import LockScope
    from retention.shards import Shard
    shop = maria_shop
    policy = shop.policy(LOGS_PURGE)
    store = open_store(state_url_of(policy), policy)
    engine = sa.create_engine(shop.url)
    checking = _holding(shop, run_lock_name(_database(shop), "run"))
    released = threading.Timer(0.15, lambda: checking.execute(sa.text("SELECT RELEASE_LOCK(:n)"),
                                                               {"n": run_lock_name(_database(shop), "run")}))
    try:
        released.start()
        shard = RunLock(store, {"shop": engine}, "r-shard", scope=LockScope.of(Shard(1, 4)))
        shard.acquire()
        shard.release()
        released.join()
        whole = _holding(shop, run_lock_name(_database(shop), "run"))
        try:
            with pytest.raises(LockHeld, match=r"\(run, which shard 2/4 cannot run beside\)"):
                RunLock(store, {"shop": engine}, "r-barred", scope=LockScope.of(Shard(2, 4))).acquire()
        finally:
            whole.invalidate()
    finally:
        released.cancel()
        checking.invalidate()
        engine.dispose()
        store.close()
