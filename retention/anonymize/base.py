"""The strategy contract: the base class, its parameter error, and what a column looks like."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeEngine


class StrategyParamError(ValueError):
    """A strategy parameter is missing or invalid; ``key`` names the parameter."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


@dataclass(frozen=True)
class ColumnInfo:
    """What ``retention check`` knows about a column, to judge a strategy against it.

    ``unique`` is true when the column alone is unique (a single-column unique
    constraint or index, or the whole primary key).
    """

    name: str
    type: TypeEngine
    nullable: bool = True
    unique: bool = False
    length: int | None = None
    primary_key: bool = False


def column_kind(t: TypeEngine) -> str:
    """The family of a column type, as far as strategies care."""
    if isinstance(t, sa.Boolean):
        return "boolean"
    if isinstance(t, sa.Enum):
        return "enum"
    if isinstance(t, sa.String):
        return "string"
    if isinstance(t, sa.Integer):
        return "integer"
    # SQLAlchemy 2.1: Float is not a Numeric subclass; Numeric(asdecimal=False) yields floats.
    if isinstance(t, sa.Float) or (isinstance(t, sa.Numeric) and not t.asdecimal):
        return "float"
    if isinstance(t, sa.Numeric):
        return "decimal"
    if isinstance(t, sa.DateTime):
        return "datetime"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.types.NullType):
        return "unknown"  # reflection could not tell; don't guess
    return "other"


def _type_name(t: TypeEngine) -> str:
    try:
        return str(t)
    except Exception:  # some types only compile against a dialect
        return type(t).__name__.upper()


def int_param(key: str, value: Any, lo: int, hi: int | None = None) -> int:
    """``value`` if it is an integer in [lo, hi], else a StrategyParamError naming ``key``."""
    # bool is an int in Python but `keep_last = true` is a typo, not 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise StrategyParamError(key, f"'{key}' must be an integer {bound}, got {value!r}")
    return value


class Strategy:
    """Base class: validates parameters, and supplies NULL handling and defaults.

    A subclass sets ``name`` and ``params``, validates in ``_setup``, and
    implements ``_apply`` (and ``sql`` where a dialect can compute the same
    value). The policy file names it in either form::

        columns.email = "hash"
        columns.phone = { strategy = "mask", keep_last = 4 }
    """

    name: ClassVar[str] = ""
    #: accepted parameter names, in the order :meth:`describe` lists them
    params: ClassVar[tuple[str, ...]] = ()
    #: :meth:`sql` gives a value that is already done back exactly as it is (same characters,
    #: same case), so an UPDATE may write it to every row it selects without testing
    #: :meth:`done_sql` per column first (hash is not: it would hash a hash again)
    idempotent: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        for key in params:
            if key not in self.params:
                expected = f"expected one of: {', '.join(sorted(self.params))}" if self.params else "it takes none"
                raise StrategyParamError(key, f"unknown parameter '{key}' for strategy '{self.name}'; {expected}")
        self._given = {k: params[k] for k in self.params if k in params}
        self._setup(**params)

    def _setup(self, **params: Any) -> None:
        """Validate and store parameters (subclasses)."""

    def bind(self, env: Mapping[str, str]) -> None:
        """Resolve secrets from the environment before any value is touched."""

    def apply(self, value: Any) -> Any:
        """The anonymized form of one value, as the column should store it."""
        return None if value is None else self._apply(value)

    def _apply(self, value: Any) -> Any:
        raise NotImplementedError

    def done(self, value: Any) -> bool:
        """True when ``value`` needs no change (already anonymized, or NULL)."""
        if value is None:
            return True
        out = self.apply(value)
        return out is value or out == value  # `is` covers NaN, which equals nothing

    def sql(self, col: ColumnElement, impl) -> ColumnElement | None:
        """The new value as a SQL expression of ``col``, or None if ``impl`` can't express it.

        Values outside :meth:`handled_sql` come out unchanged.
        """
        return None

    def handled_sql(self, col: ColumnElement, impl) -> ColumnElement | None:
        """A SQL boolean: the value is NULL or one :meth:`sql` rewrites exactly as :meth:`apply` would.

        False exactly for the values :meth:`apply` refuses (raises on): a date
        the driver cannot read, text with a NUL, a number stored as text.  The
        SQL path leaves those as they are and the run reports them, as the
        Python path does.  None: every value is handled.
        """
        pred = self._handled_sql(col, impl)
        return None if pred is None else sa.or_(col.is_(None), pred)

    def _handled_sql(self, col: ColumnElement, impl) -> ColumnElement | None:
        """The dialect's test for values the SQL expression reads as Python does (subclasses)."""
        return None

    def _guarded(self, col: ColumnElement, impl, expr: ColumnElement | None) -> ColumnElement | None:
        """``expr`` for handled values, the value itself for the others."""
        handled = self._handled_sql(col, impl)
        return expr if expr is None or handled is None else sa.case((handled, expr), else_=col)

    def done_sql(self, col: ColumnElement, impl) -> ColumnElement | None:
        """A SQL boolean: the row's value needs no change; None if not expressible.

        A value the strategy cannot handle is not done (its :meth:`done` raises):
        the executor keeps such rows out of the SQL path with :meth:`handled_sql`.
        """
        expr = self.sql(col, impl)
        if expr is None:
            return None
        handled = self._handled_sql(col, impl)
        same = impl.equal(expr, col)
        return sa.or_(col.is_(None), same if handled is None else sa.and_(handled, same))

    @staticmethod
    def _whole_text(value: str) -> str:
        """``value``, refused if it holds a NUL: SQLite's SQL functions stop there, so no engine's
        SQL path could agree with Python on it (PostgreSQL text cannot hold one at all)."""
        if "\x00" in value:
            raise ValueError("a value holds a NUL character (not shown)")
        return value

    def conflicts(self, column: ColumnInfo) -> list[str]:
        """Problems this strategy would cause on ``column``, for ``retention check``."""
        if column.primary_key:
            return [f"column '{column.name}' is part of the primary key; rows are found by it, "
                    f"so '{self.describe()}' must not rewrite it (anonymize the data, not the key)"]
        return self._conflicts(column)

    def _conflicts(self, column: ColumnInfo) -> list[str]:
        return []

    def _needs_kind(self, column: ColumnInfo, label: str, kinds: tuple[str, ...], what: str) -> list[str]:
        """A type mismatch; ``label`` names the parameter, e.g. "generalize 'step'"."""
        kind = column_kind(column.type)
        if kind in kinds or kind == "unknown":
            return []
        return [f"column '{column.name}' is {_type_name(column.type)}, but {label} needs {what}"]

    def _may_collide(self, column: ColumnInfo, label: str) -> list[str]:
        if not column.unique:
            return []
        return [f"column '{column.name}' is UNIQUE, and {label} can give different rows the same "
                f"value; the update would fail on a duplicate (use 'hash' or 'null')"]

    def describe(self) -> str:
        """Short text for reports, e.g. ``mask(keep_last=4)``; never shows a secret."""
        if not self._given:
            return self.name
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self._given.items())})"

    __repr__ = describe
    __str__ = describe
