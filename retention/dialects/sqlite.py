"""SQLite: the embedded default."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import event
from sqlalchemy.engine import Connection

from retention.dialects.base import DialectImpl, duration_ms, register
from retention.durations import Duration


@register
class SQLiteImpl(DialectImpl):
    name: ClassVar[str] = "sqlite"
    supports_lock_timeout = True      # as the busy timeout
    supports_statement_timeout = False
    datetimes_as_text = True

    def apply_timeouts(self, conn: Connection, lock_timeout: Duration | None,
                       statement_timeout: Duration | None) -> None:
        if lock_timeout is not None:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {int(duration_ms(lock_timeout))}")


def enable_foreign_keys(engine) -> None:
    """Make SQLite enforce foreign keys on every connection, as the other engines do."""

    @event.listens_for(engine, "connect")
    def _fk_on(dbapi_conn, _record):  # pragma: no cover - trivial
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()
