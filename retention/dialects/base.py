"""The dialect base class and its registry."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from retention.durations import Duration

_REGISTRY: dict[str, type["DialectImpl"]] = {}


def register(cls: type["DialectImpl"]) -> type["DialectImpl"]:
    _REGISTRY[cls.name] = cls
    return cls


def impl_for(bind: Engine | Connection) -> "DialectImpl":
    """The implementation for an engine or connection, by ``dialect.name``."""
    name = bind.dialect.name
    try:
        return _REGISTRY[name]()
    except KeyError:
        supported = ", ".join(sorted(_REGISTRY))
        raise NotImplementedError(f"database dialect '{name}' is not supported (supported: {supported})") from None


class DialectImpl:
    """What the job needs to know about one database engine."""

    name: ClassVar[str] = "default"
    #: SELECT ... FOR UPDATE locks the rows read (SQLite locks the whole file on write instead)
    supports_for_update: ClassVar[bool] = False
    #: most bound parameters one statement may carry (None: no practical limit)
    max_bind_params: ClassVar[int | None] = None

    def other_schemas(self, engine: Engine) -> list[str]:
        """Schemas besides the default one whose tables may reference the policy's tables."""
        return []

    # -- transaction hints (SQLite needs them; engines with MVCC and row locks do not) --

    def hint_write(self, conn: Connection) -> None:
        """The next transaction on ``conn`` will write: take the write lock up front where that matters."""

    def hint_unlocked_reads(self, conn: Connection) -> None:
        """The reads on ``conn`` need no common snapshot: don't hold a lock across them."""

    def clear_hints(self, conn: Connection) -> None:
        """Forget unused hints before the connection goes back to the pool."""

    def serialize_writers(self, conn: Connection) -> None:
        """Inside a transaction on the job's state store: wait until this is its only writer.

        The audit chain appends by reading its head; two runs must not both
        append after the same head.  The default relies on ``hint_write``
        having taken the database's write lock (SQLite's ``BEGIN IMMEDIATE``).
        """

    def in_transaction(self, conn: Connection) -> bool:
        """Whether the database still has ``conn``'s transaction open (it may end one on its own).

        The default suits drivers that open a transaction before any statement
        (psycopg): there a SAVEPOINT can never run outside one.
        """
        return True

    #: SQLSTATE classes and codes of failures of the moment, not of the statement: connection
    #: (08), resources (53), lock not available (55P03), cancelled by statement_timeout (57014),
    #: shutdown (57P), deadlock or serialization (40), login refused (28), missing privilege (42501)
    transient_states: ClassVar[tuple[str, ...]] = ("08", "53", "55P03", "57014", "57P", "40", "28", "42501")
    #: the same, for drivers without SQLSTATEs: words of their messages
    transient_words: ClassVar[tuple[str, ...]] = ()

    def is_transient(self, e: Exception) -> bool:
        """Whether a database error says something about the moment (a lock, a timeout, the
        connection, a privilege) rather than about the statement: a runtime failure, exit 1."""
        if getattr(e, "connection_invalidated", False):
            return True
        orig = getattr(e, "orig", None) or e
        code = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        if code and code.startswith(self.transient_states):
            return True
        text = str(orig).lower()
        return any(word in text for word in self.transient_words)

    def malformed_clock(self, col, date_only: bool):
        """A predicate matching clock values the engine would compare wrongly, or None.

        Engines with real timestamp types have none; SQLite compares text.
        """
        return None

    def prepare_engine(self, engine: Engine, settings=None) -> None:
        """Session settings for every connection the job opens (an engine is the job's own).

        ``settings`` is the policy's ``[settings]``: where the engine has them,
        the session time zone (so a naive ``:now`` means what the job means)
        and the lock and statement timeouts, which then bound every statement
        the job runs, reads included.
        """

    # -- building blocks for anonymization (retention.anonymize) -----------
    # Each returns a Core expression, or None when this engine can't express it
    # and the strategy must run in Python. NULL in gives NULL out.

    def repeat_text(self, text: ColumnElement, count: ColumnElement) -> ColumnElement | None:
        """``text`` repeated ``count`` times ('' for count <= 0)."""
        return sa.func.repeat(text, count, type_=sa.String)

    def last_position(self, col: ColumnElement, char: str) -> ColumnElement | None:
        """1-based position of the last ``char`` in ``col``; 0 when absent."""
        # rtrim strips trailing characters that are in the set "col without char",
        # so it stops right after the last char: portable, no reverse() needed.
        return sa.func.length(sa.func.rtrim(col, sa.func.replace(col, sa.literal(char, sa.String), "")))

    def floor_to_multiple(self, col: ColumnElement, step: Decimal) -> ColumnElement | None:
        """``col`` floored to a multiple of ``step``, exactly; integer columns only here."""
        if not isinstance(col.type, sa.Integer) or step != step.to_integral_value():
            return None
        s = sa.literal(int(step), col.type)
        # % truncates toward zero in SQL; adding s and taking % again gives a floor for negatives
        return col - ((col % s) + s) % s

    def truncate_datetime(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        """A DATE/TIMESTAMP ``col`` cut to the start of its year, month or day, same type."""
        return None

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        """True when ``col`` is ``prefix`` followed by exactly ``length`` lowercase hex digits."""
        return None


def duration_ms(d: Duration) -> int:
    """Milliseconds in a duration that has no calendar part (timeouts)."""
    return (d.days * 86400 + d.seconds) * 1000
