"""PostgreSQL through psycopg 3."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import DialectImpl, duration_ms, register


#: advisory lock keys (two int4): the state store's writers, and a run on an application database
STORE_LOCK = (0x52544E53, 1)       # 'RTNS'
RUN_LOCK = (0x52544E52, 1)         # 'RTNR'


@register
class PostgreSQLImpl(DialectImpl):
    name: ClassVar[str] = "postgresql"
    supports_for_update = True
    max_bind_params = 30000   # psycopg sends at most 65535 parameters

    def prepare_engine(self, engine: Engine, settings=None) -> None:
        # The job runs many short statements whose predicates look expensive to
        # the planner (correlated EXISTS through the cascade); JIT-compiling each
        # one costs ~0.5 s, more than the statement itself. Off for our sessions only.
        # The session time zone is the policy's, so a naive :now compared with a
        # timestamptz column means the same instant the job means; the timeouts
        # bound every statement, the counting reads as well as the batches.
        options = {"jit": "off"}
        if settings is not None:
            options["TimeZone"] = settings.timezone
            options["lock_timeout"] = str(int(duration_ms(settings.lock_timeout)))
            options["statement_timeout"] = str(int(duration_ms(settings.statement_timeout)))

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn, _record):  # pragma: no cover - trivial
            with dbapi_conn.cursor() as cur:
                for name, value in options.items():
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            dbapi_conn.commit()

    def serialize_writers(self, conn) -> None:
        # a transaction-scoped advisory lock: released by COMMIT, ROLLBACK or a dead session
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": STORE_LOCK[0], "k2": STORE_LOCK[1]})

    def other_schemas(self, engine: Engine) -> list[str]:
        inspector = sa.inspect(engine)
        default = inspector.default_schema_name
        return [name for name in inspector.get_schema_names()
                if name != default and name != "information_schema" and not name.startswith("pg_")]

    def floor_to_multiple(self, col: ColumnElement, step: Decimal) -> ColumnElement | None:
        # numeric % is exact here, so NUMERIC columns floor exactly too (not floats:
        # their Python path needs care with binary rounding that SQL can't mirror)
        t = col.type
        if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float) and t.asdecimal:
            s = sa.literal(step, sa.Numeric())
            return sa.cast(col - ((col % s) + s) % s, t)
        return super().floor_to_multiple(col, step)

    def truncate_datetime(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        # date_trunc works in the session time zone, as the Python path does with
        # the zone-aware values psycopg returns; the cast keeps DATE a DATE
        if isinstance(col.type, (sa.Date, sa.DateTime)):
            return sa.cast(sa.func.date_trunc(sa.literal(unit, sa.Text), col), col.type)
        return None

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        return col.op("~", is_comparison=True)(sa.literal(f"^{prefix}[0-9a-f]{{{length}}}$", sa.Text))
