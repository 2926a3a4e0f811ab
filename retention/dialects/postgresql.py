"""PostgreSQL through psycopg 3."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy.engine import Connection

from retention.dialects.base import DialectImpl, duration_ms, register
from retention.durations import Duration


@register
class PostgreSQLImpl(DialectImpl):
    name: ClassVar[str] = "postgresql"
    supports_lock_timeout = True
    supports_statement_timeout = True

    def apply_timeouts(self, conn: Connection, lock_timeout: Duration | None,
                       statement_timeout: Duration | None) -> None:
        # SET LOCAL lasts for the current transaction only: every batch sets it again.
        if lock_timeout is not None:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(duration_ms(lock_timeout))}")
        if statement_timeout is not None:
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(duration_ms(statement_timeout))}")
