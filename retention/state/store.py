"""Open, version and migrate the state store.

``settings.state_url`` names it.  A relative SQLite path
(``sqlite:///retention-state.db``, the default) is taken relative to the
policy file's directory, not to wherever the job happens to be started, so
cron, systemd and a shell all find the same store.  PostgreSQL is supported
too (``postgresql+psycopg://...``); keep the store out of the application
databases, so that restoring one never rolls back what the job remembers.

The schema is versioned (``retention_schema``) and brought forward by the
job itself: on first use, or by ``retention state upgrade``.  A store at a
newer version than this code knows is refused rather than written to.

**Every commit is durable when it returns.**  The audit log is evidence: a
batch's ``batch-intent`` entry commits here before the batch commits in the
application database, its ``batch-committed`` entry after.  If the intent
could be lost once the application's commit had happened (a power cut, an
operating system crash), a batch would have changed data without a trace.
A SQLite store therefore runs with a write-ahead log and ``synchronous =
FULL``: a commit appends its pages to the ``-wal`` file and syncs it once
before returning.  The rollback journal it replaces is durable too, but pays
two syncs (journal, then database) and a file deletion per commit, about
three to five times as long per entry on a disk that honours fsync.
``synchronous = NORMAL`` would skip even that sync, and may lose the last
commits in a power cut: not used.  A killed process (SIGKILL) loses nothing
in either mode; the next connection replays the log.  The write-ahead log
needs the store's directory writable (as the journal did) and every process
using the store on one host: on a shared network file system, put the store
in PostgreSQL, whose commits are durable as it is configured.

The two entries of one batch cannot share a transaction: one must be
durable before the application's commit, the other can only be written
after it.  Writing a batch's outcome together with the next batch's intent
would keep their order but leave a committed batch looking open when a run
dies during the next one, so each entry is its own (short) transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from retention.dialects import impl_for
from retention.errors import ConfigError, RetentionError
from retention.log import mask_text
from retention.state import migrations, tables
from retention.timectx import utcnow


class StateStoreError(RetentionError):
    """The state store cannot be reached, written, or is newer than this code (exit 1)."""


def resolve_state_url(url: str, policy_path: str | None) -> str:
    """``url`` with a relative SQLite path made relative to the policy file's directory.

    >>> resolve_state_url("sqlite:///retention-state.db", "/etc/retention/policies.toml")
    'sqlite:////etc/retention/retention-state.db'
    >>> resolve_state_url("sqlite:////var/lib/retention/state.db", "/etc/retention/policies.toml")
    'sqlite:////var/lib/retention/state.db'
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"'{mask_text(url)}' is not a database URL", file=policy_path,
                          where="[settings]", key="state_url") from None
    if parsed.get_backend_name() != "sqlite":
        return url
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        raise ConfigError("the state store must outlive the run: give a file path (or a server URL)",
                          file=policy_path, where="[settings]", key="state_url")
    if Path(database).is_absolute() or policy_path is None:
        return url
    base = Path(policy_path).resolve().parent
    return parsed.set(database=str(base / database)).render_as_string(hide_password=False)


class StateStore:
    """The job's own database: one engine, one ``MetaData`` (:mod:`retention.state.tables`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.impl = impl_for(engine)
        self.impl.prepare_store(engine)
        self.tables = tables

    @property
    def where(self) -> str:
        """The store's URL with any password masked (for messages)."""
        return self.engine.url.render_as_string(hide_password=True)

    def version(self) -> int:
        """The schema version the store is at (0: empty)."""
        with self.engine.connect() as conn:
            version = self._version(conn)
            conn.rollback()
            return version

    @staticmethod
    def _version(conn: Connection) -> int:
        if not sa.inspect(conn).has_table(tables.schema_version.name):
            return 0
        row = conn.execute(sa.select(tables.schema_version.c.version)
                           .where(tables.schema_version.c.id == 1)).first()
        return int(row[0]) if row else 0

    def upgrade(self) -> tuple[int, int]:
        """Run the migration steps the store has not seen; return (from, to) versions.

        One transaction, holding the store's writer lock: two jobs starting at
        once on a fresh store do not both create its tables.
        """
        try:
            with self.writing() as conn:
                start = self._version(conn)
                if start > migrations.CURRENT:
                    raise self._too_new(start)
                if start == migrations.CURRENT:
                    return start, start
                tables.schema_version.create(conn, checkfirst=True)
                for number in range(start + 1, migrations.CURRENT + 1):
                    migrations.STEPS[number - 1](conn)
                stamp = utcnow().isoformat()
                if start == 0:
                    conn.execute(tables.schema_version.insert().values(id=1, version=migrations.CURRENT,
                                                                       updated_at=stamp))
                else:
                    conn.execute(tables.schema_version.update().where(tables.schema_version.c.id == 1)
                                 .values(version=migrations.CURRENT, updated_at=stamp))
                return start, migrations.CURRENT
        except SQLAlchemyError as e:
            raise self.failure("cannot create or upgrade the state store's tables", e) from None

    def ensure(self) -> None:
        """Make the store usable: upgrade it if it is behind, refuse it if it is ahead."""
        try:
            version = self.version()
        except SQLAlchemyError as e:
            raise self.failure("cannot open the state store", e) from None
        if version > migrations.CURRENT:
            raise self._too_new(version)
        if version < migrations.CURRENT:
            self.upgrade()

    def _too_new(self, version: int) -> StateStoreError:
        return StateStoreError(
            f"the state store {self.where} is at schema version {version}, newer than this release of "
            f"retention understands ({migrations.CURRENT}): upgrade retention; the store was not touched")

    def failure(self, what: str, e: Exception) -> StateStoreError:
        from retention.execute import describe_error
        return StateStoreError(f"{what} ({self.where}): {mask_text(describe_error(e))}")

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A transaction in which this process is the store's only writer (audit chain, leases)."""
        with self.engine.connect() as conn:
            self.impl.hint_write(conn)
            try:
                with conn.begin():
                    self.impl.serialize_writers(conn)
                    yield conn
            finally:
                self.impl.clear_hints(conn)
                self.impl.end_serialized(conn)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            try:
                yield conn
            finally:
                conn.rollback()

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, policy_path: str | None = None, settings=None, *, migrate: bool = True) -> StateStore:
    """The state store at ``url`` (relative SQLite paths beside ``policy_path``), ready to use.

    With ``migrate`` (the default) an older store is upgraded first; a newer
    one is refused with :class:`StateStoreError`.
    """
    from retention.schema import make_engine
    resolved = resolve_state_url(url, policy_path)
    if make_url(resolved).get_backend_name() == "sqlite":
        Path(make_url(resolved).database).parent.mkdir(parents=True, exist_ok=True)
    try:
        engine = make_engine(resolved, settings)
        store = StateStore(engine)
    except (SQLAlchemyError, NotImplementedError) as e:
        raise StateStoreError(f"cannot open the state store {mask_text(resolved)}: {e}") from None
    if migrate:
        try:
            store.ensure()
        except BaseException:
            store.close()
            raise
    return store
