"""SQLite: the embedded default."""

from __future__ import annotations

import hashlib
import re
import sqlite3
import weakref
from datetime import date, datetime
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import (KEY_SEPARATOR, CatalogGraph, DialectImpl, RawForeignKey, duration_ms,
                                     register)


_BEGIN_MODE = "retention_begin"

#: the page cache of each job connection, in KiB (SQLite's default is 2,000 KiB).  A batch
#: dirties pages all over the table's secondary indexes; once they outgrow the cache, SQLite
#: writes them out mid-transaction (syncing its journal first) and reads them back: measured on
#: 200,000 rows, a batch's statements took half as long with a 64 MiB cache.  It is memory, not
#: durability, and bounded whatever the table's size; 32 MiB keeps a run's peak RSS near 110 MB.
CACHE_KIB = 32768

_D = "[0-9]"
_DAY = f"{_D * 4}-{_D * 2}-{_D * 2}"
_SECOND = f"{_DAY} {_D * 2}:{_D * 2}:{_D * 2}"
#: SQLAlchemy's own text for a DATETIME (a day, a second, a fraction of any length: the
#: forms the clock check accepts too); a DATE is the day alone
_CANONICAL = {
    "date": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}"),
    "datetime": re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?: [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)?"),
}


def _canonical_reader(kind: str, parse):
    pattern = _CANONICAL[kind]

    def process(value):
        if value is None:
            return None
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            # never echo the value: it is personal data
            raise ValueError(f"a stored {kind} is not written as SQLAlchemy writes one")
        return parse(value)
    return process


class _AsIs:
    """Keep this very type for the driver: the pysqlite dialect would otherwise swap in
    its own DATE/DATETIME class, and with it the lenient reader."""

    def _gen_dialect_impl(self, dialect):
        return self


class CanonicalDateTime(_AsIs, sqlite_dialect.DATETIME):
    """A DATETIME read only in the text form SQLAlchemy writes (``YYYY-MM-DD[ HH:MM:SS[.ffffff]]``).

    SQLAlchemy's own reader takes anything ``datetime.fromisoformat`` takes
    (a ``T``, an offset, ``19870314``, week dates: which, depends on the
    Python version); SQL cannot read all of that alike, and the job's SQL and
    Python paths must agree on every value.  So the job reads one form,
    checked in SQL by :meth:`SQLiteImpl.readable_datetime`, and refuses others.
    """

    def result_processor(self, dialect, coltype):
        # digits past the microsecond are dropped, as fromisoformat drops them where it takes them
        return _canonical_reader("datetime", lambda v: datetime.fromisoformat(v[:26]))


class CanonicalDate(_AsIs, sqlite_dialect.DATE):
    """A DATE read only as ``YYYY-MM-DD`` (see :class:`CanonicalDateTime`)."""

    def result_processor(self, dialect, coltype):
        return _canonical_reader("date", date.fromisoformat)


#: engines whose reflected dates are read canonically: the job's own (see prepare_engine)
_JOB_ENGINES: "weakref.WeakSet" = weakref.WeakSet()


@event.listens_for(sa.Table, "column_reflect")
def _canonical_dates(inspector, table, column_info):  # pragma: no cover - trivial
    bind = getattr(inspector.bind, "engine", inspector.bind)
    if bind not in _JOB_ENGINES:
        return
    kind = column_info["type"]
    if isinstance(kind, sa.DateTime) and not isinstance(kind, CanonicalDateTime):
        column_info["type"] = CanonicalDateTime()
    elif isinstance(kind, sa.Date) and not isinstance(kind, (sa.DateTime, CanonicalDate)):
        column_info["type"] = CanonicalDate()


def _rowid(table: sa.Table) -> str | None:
    """The name that reaches ``table``'s rowid: a column of the same name hides it."""
    names = {c.name.lower() for c in table.columns}
    return next((n for n in ("rowid", "_rowid_", "oid") if n not in names), None)


def _master(conn, table: sa.Table) -> str:
    """The catalog (``sqlite_master``) of the database file ``table`` is in."""
    if table.schema in (None, "main"):
        return "sqlite_master"
    return f"{conn.dialect.identifier_preparer.quote(table.schema)}.sqlite_master"


@register
class SQLiteImpl(DialectImpl):
    name: ClassVar[str] = "sqlite"
    max_bind_params = 30000   # SQLite >= 3.32 allows 32766 per statement
    transient_words = ("database is locked", "database table is locked", "unable to open database",
                       "disk i/o error", "interrupted")

    # -- batches over rowid ranges (retention.execute.pages) ------------------------------------
    #
    # A rowid table's rows sit in its b-tree in rowid order, and an UPDATE keeps a row's rowid:
    # over a key that is not an integer (text, UUID, several columns), batches walk ranges of
    # rowids as PostgreSQL's walk ranges of pages. No query looks for a batch's bound, and each
    # batch writes rows that lie together in the table instead of scattered by their key.

    page_ranges = True
    page_unit = "rowid"

    def heap_pages(self, conn, table: sa.Table) -> int | None:
        rowid = _rowid(table)
        if rowid is None:
            return None
        sql = conn.execute(sa.text(f"SELECT sql FROM {_master(conn, table)} WHERE type = 'table' AND name = :t"),
                           {"t": table.name}).scalar()
        if not sql or re.search(r"\bWITHOUT\s+ROWID\b", sql, re.IGNORECASE):
            return None
        col = sa.literal_column(rowid, sa.Integer)
        # apart, each is one step down the b-tree; together they would read the whole table
        low, top = (conn.execute(sa.select(f(col)).select_from(table)).scalar() for f in (sa.func.min, sa.func.max))
        if low is not None and low < 0:
            return None         # rowids set below zero by hand: the walk starts at 0, so walk keys
        return 0 if top is None else int(top) + 1

    def page_range(self, table: sa.Table, lo: int, hi: int) -> ColumnElement:
        rowid = sa.sql.expression.ColumnClause(_rowid(table), type_=sa.Integer, _selectable=table)
        return sa.and_(rowid >= int(lo), rowid < int(hi))

    def repeat_text(self, text: ColumnElement, count: ColumnElement) -> ColumnElement | None:
        # SQLite has no repeat(): zeroblob(n) is n zero bytes, hex() makes that "00" n times
        return sa.func.replace(sa.func.hex(sa.func.zeroblob(count)), "00", text, type_=sa.String)

    def truncate_datetime(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        # Dates live here as ISO text. Rather than hard-code SQLAlchemy's storage
        # format, ask the column type how it writes the first instant of a period:
        # the SQL result must be the very text the Python path would store.
        if isinstance(col.type, sa.DateTime):
            sample = datetime(2000, 1, 1)
        elif isinstance(col.type, sa.Date):
            sample = date(2000, 1, 1)
        else:
            return None
        dialect = sqlite_dialect.dialect()
        process = col.type.dialect_impl(dialect).bind_processor(dialect)
        text = process(sample) if process else None
        if not isinstance(text, str) or not text.startswith("2000-01-01"):
            return None
        keep = {"year": 4, "month": 7, "day": 10}[unit]
        return sa.func.substr(col, 1, keep, type_=sa.String).concat(sa.literal(text[keep:], sa.String))

    def catalog_graph(self, engine) -> CatalogGraph:
        """Every table's columns and foreign keys in two queries (table-valued pragmas)."""
        with engine.connect() as conn:
            conn.info[_BEGIN_MODE] = "none"
            cols = conn.exec_driver_sql(
                "SELECT m.name, c.name, c.\"notnull\", c.pk FROM sqlite_master m, pragma_table_info(m.name) c "
                "WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY m.name, c.pk").all()
            fks = conn.exec_driver_sql(
                "SELECT m.name, f.id, f.\"table\", f.\"from\", f.\"to\" FROM sqlite_master m, "
                "pragma_foreign_key_list(m.name) f WHERE m.type = 'table' ORDER BY m.name, f.id, f.seq").all()
        graph = CatalogGraph()
        notnull: dict[tuple[str, str], bool] = {}
        pk: dict[str, list[str]] = {}
        for table, col, nn, in_pk in cols:
            if table not in pk:
                pk[table] = []
                graph.tables.append((None, table))
            notnull[(table, col)] = bool(nn)
            if in_pk:
                pk[table].append(col)
        # a REFERENCES clause may spell the parent in another case than its CREATE TABLE
        names = {name.lower(): name for _s, name in graph.tables}
        declared: dict[tuple[str, int], list] = {}
        for table, fk_id, parent, col, pcol in fks:
            declared.setdefault((table, fk_id), []).append((names.get(parent.lower(), parent), col, pcol))
        for (table, _id), pairs in declared.items():
            parent = pairs[0][0]
            # "REFERENCES users" without columns means the parent's primary key
            pcols = [p for _t, _c, p in pairs] if all(p for _t, _c, p in pairs) else pk.get(parent, [])
            columns = tuple(c for _t, c, _p in pairs)
            graph.fks.append(RawForeignKey((None, table), columns, (None, parent), tuple(pcols),
                                           not any(notnull.get((table, c)) for c in columns)))
        return graph

    def open_below(self, columns: list, upto: ColumnElement) -> ColumnElement:
        # SQLite's planner takes "key <= ?" alone for half the key's index and may prefer an
        # index of the rule's clock: a first batch over a text key then read half the table
        # (3.8 s on a million rows, holding the write lock). "key IS NOT NULL", which
        # "key <= ?" implies, makes it a range of the key's index from its first entry.
        return sa.and_(upto, columns[0].is_not(None))

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        # GLOB is case-sensitive and, without '*', matches the whole string up to a NUL:
        # exact length, once a NUL is ruled out
        return sa.and_(col.op("GLOB", is_comparison=True)(sa.literal(prefix + "[0-9a-f]" * length, sa.String)),
                       self.plain_text(col))

    # SQLite's text functions (length, substr, replace, GLOB) stop at the first NUL
    # character, Python's str does not; and a column stores whatever type it is given.
    # The SQL path may only rewrite what both read alike.

    def plain_text(self, col: ColumnElement) -> ColumnElement | None:
        return sa.and_(sa.func.typeof(col) == "text",
                       sa.func.instr(sa.cast(col, sa.LargeBinary), sa.literal(b"\x00", sa.LargeBinary)) == 0)

    def whole_number(self, col: ColumnElement) -> ColumnElement | None:
        return sa.func.typeof(col) == "integer"

    def at_period_start(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        # text equality would call '1987-01-01 00:00:00' not done (SQLAlchemy writes
        # '.000000'), where Python reads the very instant it would write: compare what
        # Python reads instead: the day's digits past the period, then the time up to the
        # microsecond (later digits are dropped on reading)
        keep = {"year": 4, "month": 7, "day": 10}[unit]
        rest = "-01-01"[: 10 - keep]
        return sa.and_(sa.func.substr(col, keep + 1, 10 - keep) == rest,
                       sa.not_(sa.func.substr(col, 11, 16).op("GLOB")("*[1-9]*")))

    def readable_datetime(self, col: ColumnElement) -> ColumnElement | None:
        """Dates in the one text form the Python path reads (see :class:`CanonicalDateTime`)."""
        if isinstance(col.type, sa.DateTime):
            shapes = [col.op("GLOB")(_DAY), col.op("GLOB")(_SECOND), sa.and_(
                col.op("GLOB")(_SECOND + ".[0-9]*"), sa.not_(sa.func.substr(col, 21).op("GLOB")("*[^0-9]*")))]
        elif isinstance(col.type, sa.Date):
            shapes = [col.op("GLOB")(_DAY)]
        else:
            return None
        day = sa.func.substr(col, 1, 10)
        valid_day = sa.func.coalesce(sa.func.date(day, "+0 days") == day, False)
        valid_time = sa.or_(sa.func.length(col) == 10, sa.and_(
            sa.func.substr(col, 12, 2) <= "23", sa.func.substr(col, 15, 2) <= "59",
            sa.func.substr(col, 18, 2) <= "59"))
        return sa.and_(self.plain_text(col), sa.or_(*shapes),
                       valid_day, sa.func.substr(col, 1, 4) != "0000", valid_time)


    # A batch reads (its key range) before it writes. With a deferred BEGIN, an
    # application commit in between makes the write fail at once (a stale WAL
    # snapshot; busy_timeout cannot help), so batches take the write lock first.
    def hint_write(self, conn) -> None:
        conn.info[_BEGIN_MODE] = "immediate"

    # A dry run's counts need no common snapshot; holding SQLite's shared lock
    # across all of them would keep the application's writers waiting.
    def hint_unlocked_reads(self, conn) -> None:
        conn.info[_BEGIN_MODE] = "none"

    def clear_hints(self, conn) -> None:
        conn.info.pop(_BEGIN_MODE, None)

    # one writer at a time: a second worker would only wait for the first one's write lock
    concurrent_writers: ClassVar[bool] = False
    # COUNT(*) is the b-tree's own count and a clock range a walk of its index; one pass over the
    # table evaluates every per-row expression (the clock's readability above all) on every row
    counts_by_index: ClassVar[bool] = True

    def rewrites_writes(self, conn, table: sa.Table) -> bool:
        master = _master(conn, table)
        return bool(conn.execute(sa.text(f"SELECT count(*) FROM {master} WHERE type = 'trigger' AND tbl_name = :t"),
                                 {"t": table.name}).scalar())

    def in_transaction(self, conn) -> bool:
        # SQLite ends a transaction by itself on some errors (RAISE(ROLLBACK),
        # ON CONFLICT ROLLBACK, a full disk); a SAVEPOINT after that would open a
        # new one, and its RELEASE would commit
        return bool(conn.connection.dbapi_connection.in_transaction)

    def representable(self, col: ColumnElement, col_type) -> ColumnElement | None:
        # text that passes the clock check's shape but names no real moment ('0000-01-01',
        # '2024-13-45', '2018-02-30', '... 24:00:00'). date() alone keeps a day up to 31 in
        # any month; with a modifier it normalizes it ('2018-02-30' becomes '2018-03-02'),
        # so a day that does not exist differs from the text. Only the day part is shifted:
        # the whole value would round '23:59:59.999999' into the next day.
        if not isinstance(col_type, (sa.Date, sa.DateTime)):
            return None
        day = sa.func.substr(col, 1, 10)
        # most days are the 1st to the 28th of a month 01-12, real in every year: compared as text,
        # without parsing (the value's digits are known: the clock check refuses any other form)
        common = sa.and_(sa.func.substr(col, 9, 2).between("01", "28"), sa.func.substr(col, 6, 2).between("01", "12"))
        real_day = sa.and_(col >= "0001-01-01", sa.or_(common, sa.func.date(day, "+0 days") == day))
        if not isinstance(col_type, sa.DateTime):
            return real_day
        # a bare date reads as midnight; a time is read as written, so each field must be in range
        return sa.and_(real_day, sa.or_(sa.func.length(col) == 10, sa.and_(
            sa.func.substr(col, 12, 2) <= "23", sa.func.substr(col, 15, 2) <= "59",
            sa.func.substr(col, 18, 2) <= "59")))

    def malformed_clock(self, col, date_only: bool):
        """Values not in the text form SQLAlchemy writes: SQLite compares timestamps as text,
        so '2026-06-14T10:00', '... 10:00-05:00' or an epoch number would sort wrongly."""
        d = "[0-9]"
        day = f"{d * 4}-{d * 2}-{d * 2}"
        if date_only:
            good = sa.and_(sa.func.typeof(col) == "text", col.op("GLOB")(day))
        else:
            clock = f"{day} {d * 2}:{d * 2}:{d * 2}"
            # the form SQLAlchemy writes first: most values match it, and the test stops there
            good = sa.and_(sa.func.typeof(col) == "text", sa.or_(
                col.op("GLOB")(clock),
                col.op("GLOB")(day),
                sa.and_(col.op("GLOB")(clock + ".*"), sa.func.length(col) > 20,
                        sa.not_(sa.func.substr(col, 21).op("GLOB")("*[^0-9]*")))))
        return sa.and_(col.is_not(None), sa.not_(good))

    def storage_access(self, conn, table):
        """SQLite has no grants: the job needs the file (and its directory, for the journal) writable.

        Probed, not guessed from permission bits (which say nothing to root, nor
        of a read-only open): a DELETE that matches nothing, rolled back.
        """
        path = conn.engine.url.database or ":memory:"
        notes = [f"SQLite has no grants: the job needs to read and write {path} and to create its "
                 f"journal in the same directory"]
        if table is None:
            return notes, []
        try:
            conn.execute(sa.delete(table).where(sa.false()))
        except sa.exc.OperationalError:
            shown = path.split("?")[0]
            return notes, [(shown, f"make {shown} and its directory writable by the job's user "
                                   f"(and do not open it read-only, mode=ro)")]
        finally:
            conn.rollback()
        return notes, []

    def comparable_moment(self, col: ColumnElement) -> ColumnElement:
        """Timestamps are text here, written with or without fractional seconds (or as a bare
        date); compared as written, equal instants differ. Pad each to the 26-character form
        SQLAlchemy writes ('YYYY-MM-DD HH:MM:SS.ffffff'), which sorts as the instants do."""
        text = sa.type_coerce(col, sa.String)
        return sa.type_coerce(sa.case(
            (sa.func.length(text) == 10, text.concat(" 00:00:00.000000")),
            (sa.func.length(text) == 19, text.concat(".000000")),
            else_=sa.func.substr(text.concat("000000"), 1, 26)), sa.String)

    def stable_hash(self, texts: list) -> ColumnElement | None:
        # SQLite has no MD5: the function is the job's own, registered on each connection
        return sa.func.retention_key_hash(*texts, type_=sa.BigInteger)

    def prepare_engine(self, engine, settings=None) -> None:
        enable_foreign_keys(engine)
        _JOB_ENGINES.add(engine)

        @event.listens_for(engine, "connect")
        def _key_hash(dbapi_conn, _record):  # pragma: no cover - trivial
            dbapi_conn.create_function("retention_key_hash", -1, key_hash, deterministic=True)
            _raise_cache(dbapi_conn, CACHE_KIB)
        if settings is not None:
            busy_ms = int(duration_ms(settings.lock_timeout))

            @event.listens_for(engine, "connect")
            def _busy(dbapi_conn, _record):  # pragma: no cover - trivial
                dbapi_conn.execute(f"PRAGMA busy_timeout = {busy_ms}")

    def prepare_store(self, engine) -> None:
        # A write-ahead log synced at each commit: as durable as the rollback journal, with one
        # fsync per commit instead of two and a file deletion (retention.state.store says why).
        # Only the job's own store: an application database's journal mode is the operator's.
        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record):  # pragma: no cover - trivial
            try:
                dbapi_conn.execute("PRAGMA journal_mode = WAL")    # kept in the file: a no-op once set
            except sqlite3.OperationalError:
                pass        # another process is switching it or holds it: this connection keeps the journal
            # after journal_mode: a build may default WAL connections to NORMAL, which a power cut can undo
            dbapi_conn.execute("PRAGMA synchronous = FULL")


def _raise_cache(dbapi_conn, kib: int) -> None:
    """Give the connection a page cache of at least ``kib`` KiB (never shrink a larger one)."""
    size = dbapi_conn.execute("PRAGMA cache_size").fetchone()[0]
    if size > 0:        # a count of pages, not KiB
        size = -size * dbapi_conn.execute("PRAGMA page_size").fetchone()[0] // 1024
    if -size < kib:
        dbapi_conn.execute(f"PRAGMA cache_size = -{int(kib)}")


def key_hash(*texts) -> int:
    """The first 32 bits of the MD5 of ``texts`` joined by the unit separator, as PostgreSQL and MySQL compute it."""
    joined = KEY_SEPARATOR.join("" if t is None else str(t) for t in texts)
    return int(hashlib.md5(joined.encode("utf-8")).hexdigest()[:8], 16)


def enable_foreign_keys(engine) -> None:
    """Make SQLite enforce foreign keys, and let SQLAlchemy, not the driver, begin transactions.

    The sqlite3 module otherwise begins transactions on its own and only before
    DML: a SAVEPOINT (a simulated run's batch) would then open the transaction
    itself, and releasing it would commit.  With the driver in autocommit mode
    and an explicit BEGIN, every transaction is exactly the one we asked for.
    """

    @event.listens_for(engine, "connect")
    def _fk_on(dbapi_conn, _record):  # pragma: no cover - trivial
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):  # pragma: no cover - trivial
        mode = conn.info.pop(_BEGIN_MODE, "deferred")
        if mode == "none":
            return      # each statement runs in its own implicit transaction
        conn.exec_driver_sql("BEGIN IMMEDIATE" if mode == "immediate" else "BEGIN")
