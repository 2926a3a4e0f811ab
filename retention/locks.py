"""One run at a time per application database.

PostgreSQL: a session-level advisory lock, held on a connection of its own
for the whole run; it dies with the session, so a killed run never leaves
it behind.  The holder is named through the session's ``application_name``.

SQLite (no session locks that outlive a statement): a lease row in the state
store, renewed while the run lives and ending ``LEASE_SECONDS`` after its last
renewal.  A lease whose holder is a dead process on this host is taken over
at once; one from another host once it has expired.  Either way the next run
records the previous one as abandoned in the audit log.

``plan`` and dry runs take no lock; runs and simulations do.

A run's :class:`LockScope` is the whole run or shard I of N
(:mod:`retention.shards`).  Shards of one N run side by side; shard I of N
excludes another shard I of N, any whole run, and shards of another N
(their slices overlap).  On PostgreSQL a whole run holds the run key
exclusively; a shard holds it shared, and its own shard key exclusively.
Leases are named per scope (``<database>#shard=I/N``) and checked against
each other under the state store's writer lock.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from retention.dialects.postgresql import RUN_LOCK, SHARD_LOCK
from retention.errors import LockHeld
from retention.shards import Shard
from retention.state import StateStore
from retention.state.tables import leases as L
from retention.timectx import utcnow

LEASE_SECONDS = 60


def hostname() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class LockScope:
    """What a run locks on each database: the whole run (``shard`` None) or shard I of N."""

    shard: Shard | None = None

    @classmethod
    def of(cls, shard: Shard | None) -> "LockScope":
        return cls(shard)

    def name(self, base: str) -> str:
        """The lock's name under ``base`` (a lease row's name; a named lock's, where the engine has them)."""
        return base if self.shard is None else f"{base}#shard={self.shard}"

    @classmethod
    def from_name(cls, name: str, base: str) -> "LockScope | None":
        """The scope a lock named ``name`` holds under ``base`` (None: not a lock on ``base``)."""
        if name == base:
            return cls()
        prefix = base + "#shard="
        if not name.startswith(prefix):
            return None
        index, _, count = name[len(prefix):].partition("/")
        return cls(Shard(int(index), int(count)))

    def excludes(self, other: "LockScope") -> bool:
        """Whether the two cannot run at once: only shards of one N with different indexes can."""
        if self.shard is None or other.shard is None:
            return True
        return self.shard.count != other.shard.count or self.shard.index == other.shard.index

    def describe(self) -> str:
        return "the whole run" if self.shard is None else f"shard {self.shard}"


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    since: str
    scope: LockScope = LockScope()

    def describe(self) -> str:
        shard = f" (shard {self.scope.shard})" if self.scope.shard else ""
        return f"run {self.run_id}{shard} (pid {self.pid} on host {self.host}) since {self.since}"


def _identity(engine: Engine) -> str:
    """Which database an engine reaches (two policy names may reach the same one)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return "sqlite:" + os.path.realpath(url.database or "")
    return f"{url.get_backend_name()}://{url.host or ''}:{url.port or ''}/{url.database or ''}"


class RunLock:
    """The locks of one run on its application databases; ``acquire`` raises LockHeld (exit 4)."""

    def __init__(self, store: StateStore, engines: dict[str, Engine], run_id: str,
                 scope: LockScope = LockScope()) -> None:
        self.store = store
        self.scope = scope
        self.engines = engines
        self.run_id = run_id
        self.host = hostname()
        self.pid = os.getpid()
        self.abandoned: list[tuple[str, str]] = []      # (run id, why) of stale leases taken over
        self._sessions: list[Connection] = []
        self._leases: list[str] = []
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        seen: set[str] = set()
        try:
            for name, engine in self.engines.items():
                ident = _identity(engine)
                if ident in seen:
                    continue
                seen.add(ident)
                if engine.dialect.name == "postgresql":
                    self._advisory(name, engine)
                else:
                    self._lease(name, ident)
        except BaseException:
            self.release()
            raise
        if self._leases:
            self._renewer = threading.Thread(target=self._renew, name="retention-lease", daemon=True)
            self._renewer.start()

    # -- PostgreSQL ------------------------------------------------------------------

    def _advisory(self, name: str, engine: Engine) -> None:
        conn = engine.connect()
        shard = self.scope.shard
        try:
            scope = f" shard={shard}" if shard else ""
            tag = f"retention run={self.run_id}{scope} pid={self.pid} host={self.host}"[:63]
            conn.execute(sa.text("SELECT set_config('application_name', :v, false)"), {"v": tag})
            # a whole run holds the run key alone; shards share it (so a whole run waits for none of
            # them and excludes all), each holding its own shard key alone
            take = "pg_try_advisory_lock" if shard is None else "pg_try_advisory_lock_shared"
            keys = RUN_LOCK
            got = conn.execute(sa.text(f"SELECT {take}(:k1, :k2)"), {"k1": keys[0], "k2": keys[1]}).scalar()
            if got and shard is not None:
                keys = (SHARD_LOCK, _shard_key(shard))
                got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k1, :k2)"),
                                   {"k1": keys[0], "k2": keys[1]}).scalar()
            conn.commit()      # the locks are the session's: they outlive this transaction
            if got and shard is not None:
                other = self._pg_other_count(conn, shard)
                if other is not None:
                    got, keys = False, (SHARD_LOCK, other)
        except BaseException:
            conn.close()
            raise
        if not got:
            holder = self._pg_holder(conn, keys, exclusive=keys == RUN_LOCK and shard is not None)
            conn.close()
            raise LockHeld(f"another run holds the lock on database '{name}' ({self.scope.describe()} needs it): "
                           f"{holder}; nothing was touched")
        self._sessions.append(conn)

    @staticmethod
    def _pg_other_count(conn: Connection, shard: Shard) -> int | None:
        """The shard key of a shard of another N holding its lock (their slices overlap this one's), or None.

        Each shard takes its own key first and looks second, so of two such shards starting at
        once, at least the later one sees the other.
        """
        row = conn.execute(sa.text(
            "SELECT l.objid FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :k1 "
            "AND l.objsubid = 2 AND l.objid::bigint / 65536 <> :n "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1"),
            {"k1": SHARD_LOCK, "n": shard.count}).first()
        conn.rollback()
        return None if row is None else int(row[0])

    @staticmethod
    def _pg_holder(conn: Connection, keys: tuple[int, int] = RUN_LOCK, exclusive: bool = False) -> str:
        mode = "AND l.mode = 'ExclusiveLock' " if exclusive else ""
        row = conn.execute(sa.text(
            "SELECT a.application_name, a.backend_start, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :k1 AND l.objid = :k2 "
            f"AND l.objsubid = 2 {mode}AND l.pid <> pg_backend_pid() "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "ORDER BY a.backend_start LIMIT 1"),
            {"k1": keys[0], "k2": keys[1]}).first()
        conn.rollback()
        if row is None:
            return "a run that has just ended (try again)"
        tag = dict(part.split("=", 1) for part in (row[0] or "").split()[1:] if "=" in part)
        since = row[1].isoformat() if row[1] else "?"
        if tag.get("run"):
            scope = LockScope(_parse_shard_tag(tag.get("shard")))
            return Holder(tag["run"], tag.get("host", "?"), int(tag.get("pid", 0) or 0), since, scope).describe()
        return f"database session {row[2]} since {since}"

    # -- leases (SQLite) -----------------------------------------------------------------

    def _lease(self, name: str, ident: str) -> None:
        now = utcnow()
        mine = self.scope.name(ident)
        with self.store.writing() as conn:
            # every lease on this database, whole or shard: the writer lock makes the look and the insert one step
            rows = conn.execute(sa.select(L).where(sa.or_(
                L.c.name == ident, L.c.name.startswith(ident + "#shard=", autoescape=True)))).all()
            for row in rows:
                scope = LockScope.from_name(row.name, ident)
                if scope is None or not self.scope.excludes(scope):
                    continue
                holder = Holder(row.run_id, row.host, row.pid, row.acquired_at, scope)
                stale = self._stale(row, now)
                if stale is None:
                    raise LockHeld(f"another run holds the lock on database '{name}' ({self.scope.describe()} "
                                   f"needs it): {holder.describe()}; nothing was touched")
                conn.execute(L.delete().where(L.c.name == row.name, L.c.run_id == row.run_id))
                self.abandoned.append((row.run_id, stale))
            conn.execute(L.insert().values(name=mine, run_id=self.run_id, host=self.host, pid=self.pid,
                                           acquired_at=now.isoformat(),
                                           expires_at=(now + timedelta(seconds=LEASE_SECONDS)).isoformat()))
        self._leases.append(mine)

    def _stale(self, row, now: datetime) -> str | None:
        """Why a lease no longer holds (None: it does)."""
        if row.host == self.host and not pid_alive(row.pid):
            return f"its process {row.pid} on {row.host} is gone"
        if datetime.fromisoformat(row.expires_at) <= now:
            return f"its lease expired at {row.expires_at}"
        return None

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 4):
            until = (utcnow() + timedelta(seconds=LEASE_SECONDS)).isoformat()
            try:
                with self.store.writing() as conn:
                    conn.execute(L.update().where(L.c.name.in_(self._leases), L.c.run_id == self.run_id)
                                 .values(expires_at=until))
            except SQLAlchemyError:
                pass    # tried again at the next beat; the lease lasts four beats

    def release(self) -> None:
        """Give back every lock and lease this run holds (idempotent)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        for conn in self._sessions:
            try:
                # the session is the lock's alone: every advisory lock on it is this run's
                conn.execute(sa.text("SELECT pg_advisory_unlock_all()"))
                conn.commit()
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()     # really close the session, and with it the lock
        self._sessions = []
        if self._leases:
            try:
                with self.store.writing() as conn:
                    conn.execute(L.delete().where(L.c.name.in_(self._leases), L.c.run_id == self.run_id))
            except SQLAlchemyError:
                pass    # the lease expires by itself
            self._leases = []


def _shard_key(shard: Shard) -> int:
    """Shard I of N as one int4 advisory key: N in the high half, I in the low (both below 65536)."""
    return shard.count * 65536 + shard.index


def _parse_shard_tag(text: str | None) -> Shard | None:
    if not text:
        return None
    index, _, count = text.partition("/")
    try:
        return Shard(int(index), int(count))
    except ValueError:
        return None
