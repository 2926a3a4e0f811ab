"""MySQL 8 and MariaDB 10.6+ through PyMySQL.

SQLAlchemy names the dialect after the URL: ``mysql+pymysql://`` is "mysql"
(:class:`MySQLImpl`), ``mariadb+pymysql://`` is "mariadb" (:class:`MariaDBImpl`,
which relaxes what only MySQL forbids).  A MariaDB server reached through a
``mysql+pymysql://`` URL gets the MySQL statement shapes, which MariaDB runs
too; the session settings always follow the server actually reached.
"""

from __future__ import annotations

import hashlib
import math
import re
import weakref
from decimal import Decimal
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import Engine
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import KEY_SEPARATOR, DialectImpl, LockHolder, duration_ms, register

#: names under which the server keeps its own tables, never an application's
SYSTEM_DATABASES = frozenset({"mysql", "information_schema", "performance_schema", "sys"})

_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Zulu", "Etc/Zulu",
                        "GMT", "Etc/GMT", "Etc/GMT0", "Etc/GMT+0", "Etc/GMT-0", "GMT0", "Etc/Greenwich"})

_UNKNOWN_TIME_ZONE = 1298      # ER_UNKNOWN_TIME_ZONE
#: seconds a state store writer waits for another (its appends and lease updates are short)
STORE_LOCK_WAIT = 60
_UNSUPPORTED_SERVER = 2054    # CR_SERVER_HANDSHAKE_ERR: the client cannot work with this server
_CLIENT_FOUND_ROWS = 2         # the protocol's capability flag, the same for every driver

_PERIOD_FORMAT = {"year": "%Y-01-01", "month": "%Y-%m-01", "day": "%Y-%m-%d"}


def server_is_mariadb(dbapi_conn) -> bool:
    """Whether a PyMySQL connection reached MariaDB (its version string says so)."""
    return "mariadb" in str(getattr(dbapi_conn, "server_version", "")).lower()


#: the oldest servers the statements are written for: window functions (MySQL 8.0, MariaDB
#: 10.2), writes reading their own table (MariaDB 10.3), GET_LOCK per name (MySQL 5.7, MariaDB 10.0)
MINIMUM_VERSION = {"MySQL": (8, 0), "MariaDB": (10, 6)}


def server_version(text: str) -> tuple[str, tuple[int, ...]]:
    """``("MariaDB" | "MySQL", (major, minor, patch))`` from a server's version string.

    MariaDB announces itself as ``5.5.5-10.11.6-MariaDB...`` to old clients:
    its own number is the one before ``-MariaDB``.
    """
    if "mariadb" in text.lower():
        found = re.search(r"(\d+)\.(\d+)\.(\d+)-mariadb", text, re.I) or re.search(r"(\d+)\.(\d+)\.(\d+)", text)
        return "MariaDB", tuple(int(x) for x in found.groups()) if found else ()
    found = re.match(r"\s*(\d+)\.(\d+)\.(\d+)", text)
    return "MySQL", tuple(int(x) for x in found.groups()) if found else ()


def unsupported_server(text: str) -> str | None:
    """Why the job refuses a server of this version string, or None."""
    kind, version = server_version(text)
    least = MINIMUM_VERSION[kind]
    if version and version[:2] < least:
        return (f"{kind} {'.'.join(map(str, version))} is older than the {kind} {least[0]}.{least[1]} "
                f"the job's statements need")
    return None


#: longest name GET_LOCK accepts (MySQL 5.7+, MariaDB)
_LOCK_NAME_MAX = 64
#: wait_timeout's ceiling: the server must not end an idle lock session in the middle of a run
_IDLE_FOREVER = 31536000


def run_lock_name(database: str, scope: str) -> str:
    """GET_LOCK's name for a run lock: the server's namespace is shared by all its databases."""
    name = f"retention:{database}:{scope}"
    if len(name) <= _LOCK_NAME_MAX:
        return name
    return "retention:" + hashlib.sha256(f"{database}\0{scope}".encode()).hexdigest()[:_LOCK_NAME_MAX - 10]


def session_time_zone(name: str) -> str:
    """The ``time_zone`` value for a policy ``timezone``.

    UTC is written as an offset, which every server knows; any other zone by
    name, which needs the server's time-zone tables (``mariadb-tzinfo-to-sql``,
    ``mysql_tzinfo_to_sql``): a fixed offset cannot follow daylight saving time.
    """
    return "+00:00" if name in _UTC_NAMES else name


def session_settings(settings, mariadb: bool) -> list[tuple[str, object]]:
    """``SET SESSION`` variable assignments for the job's connections (the policy's ``[settings]``)."""
    if settings is None:
        return []
    out: list[tuple[str, object]] = [("time_zone", session_time_zone(settings.timezone))]
    lock_s = max(1, math.ceil(duration_ms(settings.lock_timeout) / 1000))
    # row locks, and metadata locks (an application's ALTER TABLE)
    out += [("innodb_lock_wait_timeout", lock_s), ("lock_wait_timeout", lock_s)]
    stmt_ms = int(duration_ms(settings.statement_timeout))
    if mariadb:
        out.append(("max_statement_time", stmt_ms / 1000))     # seconds, every statement
    else:
        out.append(("max_execution_time", stmt_ms))            # milliseconds, SELECT only
    return out


class _Readable:
    """A temporal column whose every value reaches Python as a date, or fails to be read.

    PyMySQL hands a value Python cannot hold (the zero date ``0000-00-00``, a
    zero month or day, year 0, which a permissive ``sql_mode`` lets an
    application store) back as its text, where a date was due: the job would
    pass a string to a strategy.  Failing the read instead lets the batch count
    the row as unreadable, never show it, and go on with the others.
    """

    def result_processor(self, dialect, coltype):
        inner = super().result_processor(dialect, coltype)

        def process(value):
            if isinstance(value, str):
                raise ValueError("a stored date Python cannot represent")   # the value is not shown
            return inner(value) if inner else value

        return process


class ReadableDate(_Readable, mysql_types.DATE):
    """A DATE read only as a date (see :class:`_Readable`)."""


class ReadableDateTime(_Readable, mysql_types.DATETIME):
    """A DATETIME read only as a datetime (see :class:`_Readable`)."""


class ReadableTimestamp(_Readable, mysql_types.TIMESTAMP):
    """A TIMESTAMP read only as a datetime (see :class:`_Readable`)."""


#: engines whose reflected dates are read strictly: the job's own (see prepare_engine)
_JOB_ENGINES: "weakref.WeakSet" = weakref.WeakSet()


@event.listens_for(sa.Table, "column_reflect")
def _readable_dates(inspector, table, column_info):  # pragma: no cover - trivial
    bind = getattr(inspector.bind, "engine", inspector.bind)
    if bind not in _JOB_ENGINES:
        return
    kind = column_info["type"]
    if isinstance(kind, _Readable):
        return
    if isinstance(kind, mysql_types.TIMESTAMP):
        column_info["type"] = ReadableTimestamp(timezone=kind.timezone, fsp=kind.fsp)
    elif isinstance(kind, mysql_types.DATETIME):
        column_info["type"] = ReadableDateTime(timezone=kind.timezone, fsp=kind.fsp)
    elif isinstance(kind, mysql_types.DATE):
        column_info["type"] = ReadableDate()


@register
class MySQLImpl(DialectImpl):
    name: ClassVar[str] = "mysql"
    supports_for_update = True
    # PyMySQL interpolates parameters itself: the limit is the packet size, and
    # 30000 keys stay far below the 16 MB default max_allowed_packet
    max_bind_params = 30000
    #: MySQL refuses an UPDATE/DELETE whose subquery reads the table it writes
    #: (error 1093): batches lock and read their keys first, then write by key
    writes_may_read_their_table: ClassVar[bool] = False
    # a BEFORE DELETE trigger can only SIGNAL, which fails the whole statement
    cancels_row_writes: ClassVar[bool] = False
    # InnoDB counts a table through its smallest secondary index and a clock range through the
    # clock's index; one pass over the table reads every row's clustered record
    counts_by_index: ClassVar[bool] = True
    #: a deadlock (1213, which ends the whole transaction; met inside a savepoint, it surfaces as
    #: that savepoint being gone, 1305), a child committed under a row being deleted (1451)
    retry_errnos: ClassVar[frozenset[int]] = frozenset({1213, 1305, 1451})

    def prepare_engine(self, engine: Engine, settings=None) -> None:
        _JOB_ENGINES.add(engine)

        @event.listens_for(engine, "do_connect")
        def _changed_rows(_dialect, _record, _cargs, cparams):  # pragma: no cover - trivial
            # SQLAlchemy asks for CLIENT.FOUND_ROWS: an UPDATE's count is then the rows it
            # matched, and a row a BEFORE UPDATE trigger put back unchanged counts as done.
            # The job needs the rows the database really changed (every row a batch writes
            # differs: done rows are never selected), so a shortfall makes it look again
            cparams["client_flag"] = cparams.get("client_flag", 0) & ~_CLIENT_FOUND_ROWS

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn, _record):  # pragma: no cover - trivial
            problem = unsupported_server(str(getattr(dbapi_conn, "server_version", "")))
            if problem:
                raise dbapi_conn.OperationalError(_UNSUPPORTED_SERVER, problem)
            with dbapi_conn.cursor() as cur:
                # as on PostgreSQL: a batch's second look at the rows it locked must see
                # children committed meanwhile, not REPEATABLE READ's snapshot of its first read
                cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                for name, value in session_settings(settings, server_is_mariadb(dbapi_conn)):
                    try:
                        # names are ours; the values are bound
                        cur.execute(f"SET SESSION {name} = %s", (value,))
                    except dbapi_conn.OperationalError as e:
                        if name != "time_zone" or e.args[0] != _UNKNOWN_TIME_ZONE:
                            raise
                        raise dbapi_conn.OperationalError(e.args[0], (
                            f"the server knows no time zone named {value}: load its time-zone tables "
                            "(mariadb-tzinfo-to-sql or mysql_tzinfo_to_sql), or set timezone = UTC")) from None
            dbapi_conn.commit()

    def rewrites_writes(self, conn, table: sa.Table) -> bool:
        return bool(conn.execute(sa.text(
            "SELECT count(*) FROM information_schema.TRIGGERS "
            "WHERE EVENT_OBJECT_SCHEMA = COALESCE(:s, DATABASE()) AND EVENT_OBJECT_TABLE = :t"),
            {"s": table.schema, "t": table.name}).scalar())

    def write_sets(self, conn, table: sa.Table, where: ColumnElement, by: list) -> list[ColumnElement]:
        # error 1093: a cascade that reaches the table it came from (a self-referencing key,
        # or a path back to a table above) would write it while its subquery reads it
        if self.writes_may_read_their_table or not any(e is table for e in visitors.iterate(where)):
            return [where]
        rows = [tuple(r) for r in conn.execute(sa.select(*by).distinct().where(where))]
        size = max(1, (self.max_bind_params or len(rows) or 1) // len(by))
        chunks = [rows[i:i + size] for i in range(0, len(rows), size)]
        if len(by) == 1:
            return [by[0].in_([r[0] for r in chunk]) for chunk in chunks]
        return [self.row_values_in(by, chunk) for chunk in chunks]

    # -- the run lock: GET_LOCK, which ends with the session (MySQL 5.7+ and MariaDB alike) --

    session_locks = True
    shows_lock_holder = False      # no session can read another's variables or lock names

    @staticmethod
    def _lock_name(conn, scope: str) -> str:
        return run_lock_name(conn.exec_driver_sql("SELECT DATABASE()").scalar() or "", scope)

    def try_session_lock(self, conn, scope: str, tag: str) -> bool:
        conn.exec_driver_sql(f"SET SESSION wait_timeout = {_IDLE_FOREVER}")
        # 1 taken, 0 held by another session, NULL an error (the server says which)
        got = conn.execute(sa.text("SELECT GET_LOCK(:name, 0)"), {"name": self._lock_name(conn, scope)}).scalar()
        return got == 1

    def release_session_lock(self, conn, scope: str) -> None:
        conn.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self._lock_name(conn, scope)})

    def session_lock_holder(self, conn, scope: str) -> LockHolder | None:
        session = conn.execute(sa.text("SELECT IS_USED_LOCK(:name)"), {"name": self._lock_name(conn, scope)}).scalar()
        return None if session is None else LockHolder(session=str(session))

    def representable(self, col: ColumnElement, col_type) -> ColumnElement | None:
        # zero dates and dates with a zero month or day (a permissive sql_mode stores them)
        if not isinstance(col_type, (sa.Date, sa.DateTime)):
            return None
        return sa.and_(sa.func.year(col) >= 1, sa.func.month(col) >= 1, sa.func.dayofmonth(col) >= 1)

    def other_schemas(self, engine: Engine) -> list[str]:
        """Databases on the same server whose tables reference the URL's database, transitively.

        A MySQL "schema" is a database, and one server often hosts many
        unrelated applications: reflecting all of them would be slow and need
        privileges the job should not have.  Only databases holding a foreign
        key into the ones already reflected matter (their rows must block or
        be cascaded, never left to an ``ON DELETE CASCADE`` unseen); parents
        in other databases are reflected with the tables that reference them.
        """
        with engine.connect() as conn:
            default = conn.exec_driver_sql("SELECT DATABASE()").scalar()
            if default is None:
                return []
            seen, frontier = {default}, [default]
            found: list[str] = []
            while frontier:
                rows = conn.execute(sa.text(
                    "SELECT DISTINCT table_schema FROM information_schema.key_column_usage "
                    "WHERE referenced_table_schema IN :targets AND table_schema NOT IN :seen "
                    "ORDER BY table_schema").bindparams(sa.bindparam("targets", expanding=True),
                                                        sa.bindparam("seen", expanding=True)),
                    {"targets": frontier, "seen": sorted(seen)}).scalars().all()
                frontier = [r for r in rows if r not in SYSTEM_DATABASES and r not in seen]
                seen.update(frontier)
                found += frontier
            return found

    # -- strategy building blocks ----------------------------------------------

    # The state store's writers (the audit chain's appends, the leases, the first migration): a
    # named lock, since InnoDB has no transaction-scoped advisory lock and READ COMMITTED takes no
    # gap lock that would keep two appends from reading the same head.  The name is server-wide,
    # so it carries the store's database; GET_LOCK is the session's, released once the transaction ends.
    _WRITER_LOCK = "CONCAT('retention-state:', MD5(DATABASE()))"

    def serialize_writers(self, conn) -> None:
        got = conn.execute(sa.text(f"SELECT GET_LOCK({self._WRITER_LOCK}, :wait)"),
                           {"wait": STORE_LOCK_WAIT}).scalar()
        if got != 1:
            raise sa.exc.OperationalError("GET_LOCK", {}, TimeoutError(
                f"another writer held the state store's lock for {STORE_LOCK_WAIT} s"))

    def end_serialized(self, conn) -> None:
        try:
            conn.execute(sa.text(f"SELECT RELEASE_LOCK({self._WRITER_LOCK})"))
            conn.rollback()
        except sa.exc.SQLAlchemyError:
            pass        # a broken session has lost the lock with it

    def stable_hash(self, texts: list) -> ColumnElement | None:
        joined = texts[0] if len(texts) == 1 else sa.func.concat_ws(sa.literal(KEY_SEPARATOR), *texts)
        return sa.cast(sa.func.conv(sa.func.substring(sa.func.md5(joined), 1, 8), 16, 10), sa.BigInteger)

    def text_length(self, col: ColumnElement) -> ColumnElement:
        # LENGTH() counts bytes here
        return sa.func.char_length(col)

    def equal(self, a: ColumnElement, b: ColumnElement) -> ColumnElement:
        if not isinstance(a.type, sa.String) and not isinstance(b.type, sa.String):
            return a == b
        # '=' on text follows the collation: usually case-insensitive and blind to
        # trailing spaces, where Python's == is not; byte equality of the UTF-8 forms is exact
        return _utf8_bytes(a) == _utf8_bytes(b)

    def last_position(self, col: ColumnElement, char: str) -> ColumnElement | None:
        # RTRIM takes no character set here; SUBSTRING_INDEX(col, char, -1) is the text after
        # the last char (all of it when absent) and matches its delimiter case-sensitively
        return sa.func.char_length(col) - sa.func.char_length(
            sa.func.substring_index(col, sa.literal(char, sa.String), -1))

    def floor_to_multiple(self, col: ColumnElement, step: Decimal) -> ColumnElement | None:
        # DECIMAL arithmetic is exact here, so DECIMAL columns floor exactly too (not floats)
        t = col.type
        if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float) and t.asdecimal:
            s = sa.literal(step, sa.Numeric())
            return sa.cast(col - ((col % s) + s) % s, t)
        return super().floor_to_multiple(col, step)

    def truncate_datetime(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        # DATE_FORMAT reads a TIMESTAMP in the session time zone, as PyMySQL hands it to
        # the Python path; DATETIME and DATE carry no zone at all
        if isinstance(col.type, sa.DateTime):
            target = sa.DateTime()
        elif isinstance(col.type, sa.Date):
            target = sa.Date()
        else:
            return None
        return sa.cast(sa.func.date_format(col, sa.literal(_PERIOD_FORMAT[unit], sa.String)), target)

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        # a binary collation makes the match case-sensitive on MySQL's and MariaDB's regex
        # engines alike; '$' also matches before a final newline there, hence the length
        text = sa.cast(col, mysql_types.CHAR(charset="utf8mb4")).collate("utf8mb4_bin")
        pattern = sa.literal(f"^{prefix}[0-9a-f]{{{length}}}$", sa.String)
        return sa.and_(text.op("REGEXP", is_comparison=True)(pattern),
                       sa.func.char_length(col) == len(prefix) + length)

    def row_compare(self, columns: list, op: str, values: list) -> ColumnElement:
        """A row-value comparison spelled out column by column.

        MySQL and MariaDB do not use an index for ``(a, b) > (1, 2)``: every
        batch of a composite key scanned the whole table (a partitioned table,
        whose key holds its partitioning column, took minutes for what one
        DELETE did in a second).  ``a >= 1 AND (a > 1 OR b > 2)`` is the same
        set, and its first term is an index range on the key's first column.
        """
        strict = op == ">"
        first, value = columns[0], values[0]
        if len(columns) == 1:
            return first > value if strict else first <= value
        rest = self.row_compare(columns[1:], op, values[1:])
        if strict:
            return sa.and_(first >= value, sa.or_(first > value, rest))
        return sa.and_(first <= value, sa.or_(first < value, rest))


def _utf8_bytes(expr: ColumnElement) -> ColumnElement:
    return sa.cast(sa.cast(expr, mysql_types.CHAR(charset="utf8mb4")), sa.LargeBinary)


@register
class MariaDBImpl(MySQLImpl):
    """MariaDB: what differs from MySQL 8."""

    name: ClassVar[str] = "mariadb"
    # MariaDB (10.3+) lets an UPDATE/DELETE read its own table in a subquery
    writes_may_read_their_table = True
