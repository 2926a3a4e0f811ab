"""One run at a time per application database (per lock scope).

A lock has a scope, a short string (``run``, the whole job's): runs of the
same scope exclude each other on a database, runs of different scopes do not.

PostgreSQL, MySQL and MariaDB: a lock owned by a database session
(``pg_try_advisory_lock``, ``GET_LOCK``), held on a connection of its own for
the whole run; it dies with the session, so a killed run never leaves it
behind.  PostgreSQL names the holder through the session's
``application_name``; MySQL cannot show one session's details to another, so
the holder also writes who it is into the state store, for a second run's
message, and the next holder records a run whose session ended without
removing that record as abandoned.

SQLite (no session locks that outlive a statement): a lease row in the state
store, renewed while the run lives and ending ``LEASE_SECONDS`` after its last
renewal.  A lease whose holder is a dead process on this host is taken over
at once; one from another host once it has expired.  Either way the next run
records the previous one as abandoned in the audit log.

``plan`` and dry runs take no lock; runs and simulations do.

A shard of a sharded run (:mod:`retention.shards`) locks the scope
``shard I/N`` (:class:`LockScope`), and more: it excludes a whole run and
shards of another N too, and a whole run excludes every shard.  Locks held
by a session are exclusive only, so the shards are found through their
records in the state store: a shard writes its record, then makes sure no
whole run holds ``run``; a whole run takes ``run``, then tries each
recorded shard's lock (taken: that shard is gone).  Whichever comes second
sees the first.  Leases (SQLite) are checked against each other under the
state store's writer lock.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from retention.dialects import impl_for
from retention.dialects.base import DialectImpl, LockHolder
from retention.errors import LockHeld
from retention.shards import Shard
from retention.state import StateStore
from retention.state.tables import leases as L
from retention.timectx import utcnow

LEASE_SECONDS = 60
#: a shard checking that no whole run holds its lock tries this many times, this many seconds
#: apart (and up to twice that, so that shards started together do not probe in step)
PROBE_TRIES, PROBE_PAUSE = 5, 0.1


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
    """What a run locks: the whole run (``shard`` None) or shard I of N."""

    shard: Shard | None = None

    @classmethod
    def of(cls, shard: Shard | None) -> "LockScope":
        return cls(shard)

    @property
    def name(self) -> str:
        """The scope's lock name: ``run``, or ``shard I/N``."""
        return "run" if self.shard is None else f"shard {self.shard}"

    @classmethod
    def from_name(cls, name: str) -> "LockScope | None":
        """The scope a lock name stands for (None: another kind of scope)."""
        if name == "run":
            return cls()
        if not name.startswith("shard "):
            return None
        index, _, count = name[len("shard "):].partition("/")
        try:
            return cls(Shard(int(index), int(count)))
        except ValueError:
            return None

    def excludes(self, other: "LockScope") -> bool:
        """Whether the two cannot run at once: only shards of one N with different indexes can."""
        if self.shard is None or other.shard is None:
            return True
        return self.shard.count != other.shard.count or self.shard.index == other.shard.index


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    since: str

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on host {self.host}) since {self.since}"


def _identity(engine: Engine) -> str:
    """Which database an engine reaches (two policy names may reach the same one)."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return "sqlite:" + os.path.realpath(url.database or "")
    backend = "mysql" if url.get_backend_name() == "mariadb" else url.get_backend_name()   # one server, two URL forms
    return f"{backend}://{url.host or ''}:{url.port or ''}/{url.database or ''}"


class RunLock:
    """The locks of one run on its application databases; ``acquire`` raises LockHeld (exit 4)."""

    def __init__(self, store: StateStore, engines: dict[str, Engine], run_id: str,
                 scope: "str | LockScope" = "run") -> None:
        self.store = store
        self.engines = engines
        self.run_id = run_id
        # a LockScope (whole run or shard) also excludes the scopes it conflicts with; a plain name only itself
        self.sharding = scope if isinstance(scope, LockScope) else LockScope.from_name(scope)
        self.scope = scope.name if isinstance(scope, LockScope) else scope
        self.host = hostname()
        self.pid = os.getpid()
        self.abandoned: list[tuple[str, str]] = []      # (run id, why) of stale leases taken over
        self._sessions: list[tuple[DialectImpl, Connection, str | None]] = []   # (engine, session, record)
        self._leases: list[str] = []
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self) -> None:
        seen: set[str] = set()
        try:
            for name, engine in self.engines.items():
                ident = _identity(engine) + ("" if self.scope == "run" else f"#{self.scope}")
                if ident in seen:
                    continue
                seen.add(ident)
                impl = impl_for(engine)
                if impl.session_locks:
                    self._session_lock(name, engine, impl, ident)
                    if self.sharding is not None:
                        self._shards_apart(name, impl, _identity(engine))
                else:
                    self._lease(name, ident, _identity(engine))
        except BaseException:
            self.release()
            raise
        if self._leases:
            self._renewer = threading.Thread(target=self._renew, name="retention-lease", daemon=True)
            self._renewer.start()

    # -- session locks (PostgreSQL, MySQL, MariaDB) -------------------------------------

    def _session_lock(self, name: str, engine: Engine, impl: DialectImpl, ident: str) -> None:
        conn = engine.connect()
        try:
            tag = f"retention run={self.run_id} pid={self.pid} host={self.host}"
            got = impl.try_session_lock(conn, self.scope, tag)
            conn.commit()      # the lock is the session's: it outlives this transaction
            if not got:
                holder = self._describe(impl.session_lock_holder(conn, self.scope), ident)
                conn.rollback()
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise LockHeld(f"another run holds the lock on database '{name}': {holder}; nothing was touched")
        # a shard is found by its record even where the engine names a holder itself
        sharded = self.sharding is not None and self.sharding.shard is not None
        record = None if impl.shows_lock_holder and not sharded else ident
        self._sessions.append((impl, conn, record))
        if record is not None:
            self._record(record)

    def _shards_apart(self, name: str, impl: DialectImpl, base: str) -> None:
        """Session locks: keep this run apart from the scopes it excludes besides its own (see the module)."""
        conn = self._sessions[-1][1]
        others = ["run"] if self.sharding.shard is not None else []
        with self.store.reading() as r:
            # a handful of rows: filtered here, no LIKE pattern to escape a database path for
            rows = [row for row in r.execute(sa.select(L.c.name)).all() if row[0].startswith(base + "#shard ")]
        for (lease,) in rows:
            scope = LockScope.from_name(lease[len(base) + 1:])
            if scope is not None and scope.shard is not None and scope != self.sharding \
                    and self.sharding.excludes(scope):
                others.append(scope.name)
        tag = f"retention run={self.run_id} pid={self.pid} host={self.host}"
        for other in others:
            # free: nobody holds it (a record left behind is a killed shard's); held: barred.  Shards
            # started together probe ``run`` at the same moment, each holding it for an instant: a
            # holder is only believed once it still holds it after PROBE_TRIES tries
            if self._probe(impl, conn, other, tag):
                continue
            holder = self._describe(impl.session_lock_holder(conn, other), base + ("" if other == "run" else f"#{other}"))
            conn.rollback()
            raise LockHeld(f"another run holds the lock on database '{name}' ({other}, which {self.scope} "
                           f"cannot run beside): {holder}; nothing was touched")

    @staticmethod
    def _probe(impl: DialectImpl, conn: Connection, scope: str, tag: str) -> bool:
        """Whether nobody holds ``scope``'s session lock: taken and released at once, or held
        throughout :data:`PROBE_TRIES` tries (another shard's probe holds it only for an instant)."""
        for attempt in range(PROBE_TRIES):
            if impl.try_session_lock(conn, scope, tag):
                impl.release_session_lock(conn, scope)
                conn.commit()
                return True
            conn.rollback()
            if attempt + 1 < PROBE_TRIES:
                time.sleep(PROBE_PAUSE * (1 + random.random()))
        return False

    def _describe(self, holder: LockHolder | None, ident: str) -> str:
        if holder is None:
            return "a run that has just ended (try again)"
        tag = dict(part.split("=", 1) for part in (holder.tag or "").split()[1:] if "=" in part)
        if tag.get("run"):
            return Holder(tag["run"], tag.get("host", "?"), int(tag.get("pid", 0) or 0),
                          holder.since or "?").describe()
        try:
            with self.store.reading() as conn:
                row = conn.execute(sa.select(L).where(L.c.name == ident)).first()
        except SQLAlchemyError:
            row = None
        # a record whose process is gone is a killed run's, not yet replaced by the holder's own
        if row is not None and not (row.host == self.host and not pid_alive(row.pid)):
            return Holder(row.run_id, row.host, row.pid, row.acquired_at).describe() + \
                f" (database session {holder.session})"
        return f"database session {holder.session}"

    def _record(self, ident: str) -> None:
        """Write who holds the session lock ``ident`` for a second run to name; the record of a
        run whose session ended without removing it (killed) is that run's abandonment."""
        now = utcnow()
        with self.store.writing() as conn:
            row = conn.execute(sa.select(L).where(L.c.name == ident)).first()
            if row is not None:
                conn.execute(L.delete().where(L.c.name == ident))
                if row.run_id != self.run_id:
                    self.abandoned.append((row.run_id, "its database session ended without releasing the lock"))
            # held while the session lives: the expiry says nothing here
            conn.execute(L.insert().values(name=ident, run_id=self.run_id, host=self.host, pid=self.pid,
                                           acquired_at=now.isoformat(), expires_at=now.isoformat()))

    # -- leases (SQLite) -----------------------------------------------------------------

    def _lease(self, name: str, ident: str, base: str) -> None:
        now = utcnow()
        with self.store.writing() as conn:
            if self.sharding is None:
                rows = conn.execute(sa.select(L).where(L.c.name == ident)).all()
            else:   # every whole or shard lease on this database: the writer lock makes look and insert one step
                rows = [row for row in conn.execute(sa.select(L)).all()
                        if row.name == base or row.name.startswith(base + "#shard ")]
            for row in rows:
                if row.name != ident:
                    scope = LockScope.from_name(row.name[len(base) + 1:] if row.name != base else "run")
                    if scope is None or not self.sharding.excludes(scope):
                        continue
                holder = Holder(row.run_id, row.host, row.pid, row.acquired_at)
                stale = self._stale(row, now)
                if stale is None:
                    which = "" if row.name == base else f" ({row.name[len(base) + 1:]})"
                    raise LockHeld(f"another run holds the lock on database '{name}'{which}: {holder.describe()}; "
                                   f"nothing was touched")
                conn.execute(L.delete().where(L.c.name == row.name, L.c.run_id == row.run_id))
                self.abandoned.append((row.run_id, stale))
            conn.execute(L.insert().values(name=ident, run_id=self.run_id, host=self.host, pid=self.pid,
                                           acquired_at=now.isoformat(),
                                           expires_at=(now + timedelta(seconds=LEASE_SECONDS)).isoformat()))
        self._leases.append(ident)

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
        for impl, conn, record in self._sessions:
            if record is not None:
                # the record goes first: once the lock is free, a record left behind reads as abandoned
                try:
                    with self.store.writing() as w:
                        w.execute(L.delete().where(L.c.name == record, L.c.run_id == self.run_id))
                except SQLAlchemyError:
                    pass    # the next holder records this run as abandoned
            try:
                impl.release_session_lock(conn, self.scope)
                conn.commit()
            except SQLAlchemyError:
                pass
            # the session ends with the run, never back into the pool: whatever it still holds
            # (a scope it took on the way in to check it was free, see _shards_apart) goes with it
            conn.invalidate()
            conn.close()
        self._sessions = []
        if self._leases:
            try:
                with self.store.writing() as conn:
                    conn.execute(L.delete().where(L.c.name.in_(self._leases), L.c.run_id == self.run_id))
            except SQLAlchemyError:
                pass    # the lease expires by itself
            self._leases = []
