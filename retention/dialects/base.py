"""The dialect base class and its registry."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy.engine import Connection, Engine

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
    #: the engine can bound how long a statement waits for a row lock
    supports_lock_timeout: ClassVar[bool] = False
    #: the engine can bound how long one statement runs
    supports_statement_timeout: ClassVar[bool] = False
    #: naive datetimes are stored as text and compared as text
    datetimes_as_text: ClassVar[bool] = False

    def apply_timeouts(self, conn: Connection, lock_timeout: Duration | None,
                       statement_timeout: Duration | None) -> None:
        """Apply per-transaction timeouts, where the engine supports them."""

    def engine_options(self) -> dict:
        """Extra keyword arguments for :func:`sqlalchemy.create_engine`."""
        return {}


def duration_ms(d: Duration) -> int:
    """Milliseconds in a duration that has no calendar part (timeouts)."""
    return (d.days * 86400 + d.seconds) * 1000
