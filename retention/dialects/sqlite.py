"""SQLite: the embedded default."""

from __future__ import annotations

from datetime import date, datetime
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import DialectImpl, duration_ms, register


_BEGIN_MODE = "retention_begin"


@register
class SQLiteImpl(DialectImpl):
    name: ClassVar[str] = "sqlite"
    max_bind_params = 30000   # SQLite >= 3.32 allows 32766 per statement
    transient_words = ("database is locked", "database table is locked", "unable to open database",
                       "disk i/o error", "interrupted")

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

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        # GLOB is case-sensitive and, without '*', matches the whole string: exact length
        return col.op("GLOB", is_comparison=True)(sa.literal(prefix + "[0-9a-f]" * length, sa.String))


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

    def in_transaction(self, conn) -> bool:
        # SQLite ends a transaction by itself on some errors (RAISE(ROLLBACK),
        # ON CONFLICT ROLLBACK, a full disk); a SAVEPOINT after that would open a
        # new one, and its RELEASE would commit
        return bool(conn.connection.dbapi_connection.in_transaction)

    def malformed_clock(self, col, date_only: bool):
        """Values not in the text form SQLAlchemy writes: SQLite compares timestamps as text,
        so '2026-06-14T10:00', '... 10:00-05:00' or an epoch number would sort wrongly."""
        d = "[0-9]"
        day = f"{d * 4}-{d * 2}-{d * 2}"
        if date_only:
            good = sa.and_(sa.func.typeof(col) == "text", col.op("GLOB")(day))
        else:
            clock = f"{day} {d * 2}:{d * 2}:{d * 2}"
            good = sa.and_(sa.func.typeof(col) == "text", sa.or_(
                col.op("GLOB")(day),
                col.op("GLOB")(clock),
                sa.and_(col.op("GLOB")(clock + ".*"), sa.func.length(col) > 20,
                        sa.not_(sa.func.substr(col, 21).op("GLOB")("*[^0-9]*")))))
        return sa.and_(col.is_not(None), sa.not_(good))

    def prepare_engine(self, engine, settings=None) -> None:
        enable_foreign_keys(engine)
        if settings is not None:
            busy_ms = int(duration_ms(settings.lock_timeout))

            @event.listens_for(engine, "connect")
            def _busy(dbapi_conn, _record):  # pragma: no cover - trivial
                dbapi_conn.execute(f"PRAGMA busy_timeout = {busy_ms}")


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
