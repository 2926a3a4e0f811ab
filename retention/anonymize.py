"""Anonymization strategies: how an ``anonymize`` rule rewrites one column.

Each strategy is a small class registered by name in :data:`STRATEGIES`;
:func:`build` turns a policy-file value into an instance::

    columns.email = "hash"
    columns.phone = { strategy = "mask", keep_last = 4 }

Every strategy has two paths that must agree byte for byte: :meth:`Strategy.sql`
(a Core expression, used when the dialect can express it) and
:meth:`Strategy.apply` (Python, for one batch of values). NULL stays NULL: there
is nothing to anonymize. :meth:`Strategy.done` recognises values that need no
change, so a second run touches nothing; for every strategy but ``hash``,
``apply(apply(v)) == apply(v)``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation, localcontext
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


def _kind(t: TypeEngine) -> str:
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


def _int_param(key: str, value: Any, lo: int, hi: int | None = None) -> int:
    # bool is an int in Python but `keep_last = true` is a typo, not 1
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise StrategyParamError(key, f"'{key}' must be an integer {bound}, got {value!r}")
    return value


class Strategy:
    """Base class: validates parameters, and supplies NULL handling and defaults."""

    name: ClassVar[str] = ""
    #: accepted parameter names, in the order :meth:`describe` lists them
    params: ClassVar[tuple[str, ...]] = ()

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
        """The new value as a SQL expression of ``col``, or None if ``impl`` can't express it."""
        return None

    def done_sql(self, col: ColumnElement, impl) -> ColumnElement | None:
        """A SQL boolean: the row's value needs no change; None if not expressible."""
        expr = self.sql(col, impl)
        return None if expr is None else sa.or_(col.is_(None), expr == col)

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
        kind = _kind(column.type)
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


class Null(Strategy):
    """Replace the value with NULL.

    TOML::

        columns.avatar_url = "null"
    """

    name = "null"

    def _apply(self, value: Any) -> Any:
        return None

    def sql(self, col, impl):
        return sa.null()

    def done_sql(self, col, impl):
        return col.is_(None)

    def _conflicts(self, column):
        if column.nullable:
            return []  # even on a UNIQUE column: NULLs never collide
        return [f"column '{column.name}' is NOT NULL, so strategy 'null' cannot clear it; "
                f"use 'constant' or 'mask'"]


class Constant(Strategy):
    """Replace every value with one fixed ``value`` (NULL stays NULL).

    TOML::

        columns.name = { strategy = "constant", value = "deleted user" }
    """

    name = "constant"
    params = ("value",)
    # which column families accept a constant of each Python type (bool before int: bool is an int)
    _FITS = ((bool, ("boolean",), "a BOOLEAN"), (str, ("string", "enum"), "a text"),
             (datetime, ("datetime",), "a TIMESTAMP"), (date, ("date",), "a DATE"),
             (int, ("integer", "decimal", "float"), "a numeric"), ((float, Decimal), ("decimal", "float"), "a numeric"))

    def _setup(self, value: Any = None, **_: Any) -> None:
        if value is None:
            raise StrategyParamError("value", "strategy 'constant' needs 'value', e.g. value = \"deleted user\"")
        if not isinstance(value, (str, int, float, Decimal, date)):
            raise StrategyParamError("value", f"'value' must be a string, number or date, got {type(value).__name__}")
        self.value = value

    def _apply(self, value):
        return self.value

    def _literal(self, col):
        typed = not isinstance(col.type, sa.types.NullType)
        return sa.literal(self.value, type_=col.type if typed else None)

    def sql(self, col, impl):
        return sa.case((col.is_(None), sa.null()), else_=self._literal(col))

    def done_sql(self, col, impl):
        return sa.or_(col.is_(None), col == self._literal(col))

    def _conflicts(self, column):
        out = []
        kinds, what = next((k, w) for t, k, w in self._FITS if isinstance(self.value, t))
        out += self._needs_kind(column, "constant 'value'", kinds, f"{what} column for this value")
        if column.unique:
            out.append(f"column '{column.name}' is UNIQUE, and constant 'value' would give every row "
                       f"the same value; use 'hash' or 'null'")
        if isinstance(self.value, str) and column.length is not None and len(self.value) > column.length:
            out.append(f"column '{column.name}' holds at most {column.length} characters, but constant "
                       f"'value' is {len(self.value)}")
        return out


class Hash(Strategy):
    """Keyed HMAC-SHA256: ``"h_"`` + the first ``length`` hex digits.

    The same input gives the same output under one key, so joins on the column
    keep working; without the key the job refuses to run. The output is
    recognised (``h_`` + exactly ``length`` lowercase hex digits) and not hashed
    again. Non-text values are hashed as their ``str()``.

    TOML::

        columns.email = "hash"
        columns.referrer = { strategy = "hash", key_env = "REFERRER_HASH_KEY", length = 16 }
    """

    name = "hash"
    params = ("key_env", "length")

    def _setup(self, key_env: str = "RETENTION_HASH_KEY", length: int = 32, **_: Any) -> None:
        if not isinstance(key_env, str) or not key_env:
            raise StrategyParamError("key_env", f"'key_env' must name an environment variable, got {key_env!r}")
        self.key_env = key_env
        self.length = _int_param("length", length, 1, 64)
        self._key: bytes | None = None
        self._pattern = re.compile(f"h_[0-9a-f]{{{self.length}}}")

    def bind(self, env):
        key = env.get(self.key_env)
        if not key:
            raise StrategyParamError("key_env", f"environment variable {self.key_env} is not set; "
                                                f"the hash strategy refuses to run without a key")
        self._key = key.encode("utf-8")

    def _apply(self, value):
        if self._key is None:
            raise RuntimeError(f"{self.describe()} was used before bind(); its key is not loaded")
        data = value.encode("utf-8") if isinstance(value, str) else str(value).encode("utf-8")
        return "h_" + hmac.new(self._key, data, hashlib.sha256).hexdigest()[: self.length]

    def done(self, value):
        return value is None or (isinstance(value, str) and self._pattern.fullmatch(value) is not None)

    def done_sql(self, col, impl):
        match = impl.hex_token_match(col, "h_", self.length)
        return None if match is None else sa.or_(col.is_(None), match)

    def _conflicts(self, column):
        out = self._needs_kind(column, "strategy 'hash'", ("string",), "a text column (its output is text)")
        if column.length is not None and column.length < 2 + self.length:
            out.append(f"column '{column.name}' holds at most {column.length} characters, but hash output "
                       f"is {2 + self.length} ('h_' + 'length' = {self.length}); lower 'length' or widen the column")
        return out


class Mask(Strategy):
    """Replace characters with ``char``, keeping ``keep_first`` and ``keep_last``.

    A value no longer than ``keep_first + keep_last`` is masked entirely, so a
    masked value stays masked (``"****"`` -> ``"****"``). Length is kept.

    TOML::

        columns.card = { strategy = "mask", keep_first = 4, keep_last = 4 }
        columns.phone = { strategy = "mask", keep_last = 2, char = "#" }
    """

    name = "mask"
    params = ("keep_first", "keep_last", "char")

    def _setup(self, keep_first: int = 0, keep_last: int = 4, char: str = "*", **_: Any) -> None:
        self.keep_first = _int_param("keep_first", keep_first, 0)
        self.keep_last = _int_param("keep_last", keep_last, 0)
        if not isinstance(char, str) or len(char) != 1:
            raise StrategyParamError("char", f"'char' must be exactly one character, got {char!r}")
        self.char = char

    def _apply(self, value):
        if not isinstance(value, str):
            raise TypeError(f"{self.describe()} masks text, not {type(value).__name__} values")
        n, kf, kl = len(value), self.keep_first, self.keep_last
        if n <= kf + kl:
            return self.char * n
        return value[:kf] + self.char * (n - kf - kl) + value[n - kl:]

    def sql(self, col, impl):
        n, kf, kl = sa.func.length(col), self.keep_first, self.keep_last
        char = sa.literal(self.char, sa.String)
        whole, middle = impl.repeat_text(char, n), impl.repeat_text(char, n - (kf + kl))
        if whole is None or middle is None:
            return None
        if kf:
            middle = sa.func.substr(col, 1, kf, type_=sa.String).concat(middle)
        if kl:
            middle = middle.concat(sa.func.substr(col, n - (kl - 1), type_=sa.String))
        return sa.case((n <= kf + kl, whole), else_=middle)

    def _conflicts(self, column):
        return (self._needs_kind(column, "strategy 'mask'", ("string",), "a text column")
                + self._may_collide(column, "mask 'keep_first'/'keep_last'"))


class RedactEmail(Strategy):
    """Keep an e-mail's domain and the local part's first character, then ``****``.

    Always four stars, whatever the local part's length, so the length leaks
    nothing: ``alice@x.com`` -> ``a****@x.com``, ``al@x.com`` -> ``a****@x.com``.
    The split is at the last ``@``; an empty local part gives ``*****@x.com``;
    a value without ``@`` is masked entirely (``*`` per character).

    TOML::

        columns.contact_email = "redact_email"
    """

    name = "redact_email"

    def _apply(self, value):
        if not isinstance(value, str):
            raise TypeError(f"{self.describe()} redacts text, not {type(value).__name__} values")
        at = value.rfind("@")
        if at < 0:
            return "*" * len(value)
        return (value[:1] if at else "*") + "****" + value[at:]

    def sql(self, col, impl):
        at = impl.last_position(col, "@")  # 1-based; 0 when absent
        stars = impl.repeat_text(sa.literal("*", sa.String), sa.func.length(col))
        if at is None or stars is None:
            return None
        head = sa.case((at == 1, sa.literal("*", sa.String)), else_=sa.func.substr(col, 1, 1, type_=sa.String))
        redacted = head.concat(sa.literal("****", sa.String)).concat(sa.func.substr(col, at, type_=sa.String))
        return sa.case((at == 0, stars), else_=redacted)

    def _conflicts(self, column):
        label = "strategy 'redact_email'"
        return self._needs_kind(column, label, ("string",), "a text column") + self._may_collide(column, label)


_PERIOD_CHARS = {"year": 4, "month": 7, "day": 10}  # prefix of ISO text that a period keeps
_DATE_TEXT = re.compile(r"(\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?)?)(Z|[+-]\d{2}:?\d{2})?")
_DATE_ZERO = "0000-01-01 00:00:00.000000000"  # the digit each position resets to


class Generalize(Strategy):
    """Coarsen a value, keeping the column's type. Exactly one mode:

    - ``to`` = year | month | day: dates and timestamps become the first
      instant of that period (``1987-03-14`` -> ``1987-01-01``). Timestamps
      keep their zone; ISO text (SQLite TEXT columns) keeps its shape.
    - ``step``: numbers floor to a multiple of ``step`` (``37`` step 10 ->
      ``30``; ``-1`` -> ``-10``), keeping int / Decimal / float.
    - ``ipv4_prefix`` / ``ipv6_prefix``: IP address text becomes its network
      address (``10.2.3.4`` /16 -> ``10.2.0.0``; ``2001:db8:1:2::5`` /48 ->
      ``2001:db8:1::``). Giving one enables both; the other defaults to /24
      (IPv4) or /48 (IPv6). Empty text stays empty; other text fails the rule.
    - ``keep_prefix`` = N: text keeps its first N characters, the rest is
      dropped (``SW1A 1AA`` with 3 -> ``SW1``).

    TOML::

        columns.birth_date = { strategy = "generalize", to = "year" }
        columns.salary = { strategy = "generalize", step = 1000 }
        columns.last_ip = { strategy = "generalize", ipv4_prefix = 16, ipv6_prefix = 48 }
        columns.postcode = { strategy = "generalize", keep_prefix = 3 }
    """

    name = "generalize"
    params = ("to", "step", "ipv4_prefix", "ipv6_prefix", "keep_prefix")

    def _setup(self, to=None, step=None, ipv4_prefix=None, ipv6_prefix=None, keep_prefix=None, **_):
        modes = [k for k, v in (("to", to), ("step", step), ("ipv4_prefix", ipv4_prefix),
                                ("ipv6_prefix", ipv6_prefix), ("keep_prefix", keep_prefix)) if v is not None]
        if {"ipv4_prefix", "ipv6_prefix"} <= set(modes):
            modes.remove("ipv6_prefix")  # one IP mode, two prefixes
        if len(modes) != 1:
            raise StrategyParamError(modes[1] if modes else "to",
                                     "generalize needs exactly one of 'to', 'step', 'ipv4_prefix'/'ipv6_prefix', "
                                     f"'keep_prefix'; got {', '.join(modes) or 'none'}")
        self.mode = "ip" if modes[0].startswith("ipv") else modes[0]
        if to is not None and to not in _PERIOD_CHARS:
            raise StrategyParamError("to", f"'to' must be one of: year, month, day; got {to!r}")
        self.to = to
        self.step = self._parse_step(step) if step is not None else None
        self.ipv4_prefix = _int_param("ipv4_prefix", 24 if ipv4_prefix is None else ipv4_prefix, 0, 32)
        self.ipv6_prefix = _int_param("ipv6_prefix", 48 if ipv6_prefix is None else ipv6_prefix, 0, 128)
        self.keep_prefix = _int_param("keep_prefix", keep_prefix, 0) if keep_prefix is not None else None

    @staticmethod
    def _parse_step(step: Any) -> Decimal:
        try:
            # str() first: a TOML 0.1 means the decimal 0.1, not the binary float nearest it
            d = Decimal(str(step)) if not isinstance(step, bool) else None
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite() or d <= 0:
            raise StrategyParamError("step", f"'step' must be a positive number, got {step!r}")
        return d

    def _apply(self, value):
        if self.mode == "to":
            return self._to_period(value)
        if self.mode == "step":
            return self._floor(value)
        if not isinstance(value, str):
            raise TypeError(f"{self.describe()} works on text, not {type(value).__name__} values")
        if self.mode == "keep_prefix":
            return value[: self.keep_prefix]
        return self._ip_network(value)

    def _to_period(self, value):
        unit = self.to
        if isinstance(value, date):  # datetime too
            out = value.replace(day=1) if unit != "day" else value
            out = out.replace(month=1) if unit == "year" else out
            if isinstance(out, datetime):
                out = out.replace(hour=0, minute=0, second=0, microsecond=0, fold=0)
            return out
        if isinstance(value, str):
            m = _DATE_TEXT.fullmatch(value)
            if m is None or not _is_date(value[:10]):  # never echo the value: it is personal data
                raise ValueError(f"{self.describe()}: a value is not an ISO date or timestamp")
            keep, end = _PERIOD_CHARS[unit], m.end(1)
            # reset digits past the period, keep separators, so the text keeps its shape
            rest = "".join(_DATE_ZERO[i] if value[i].isdigit() else value[i] for i in range(keep, end))
            return value[:keep] + rest + value[end:]
        raise TypeError(f"{self.describe()} works on dates and timestamps, not {type(value).__name__} values")

    def _floor(self, value):
        step = self.step
        if isinstance(value, bool) or not isinstance(value, (int, Decimal, float)):
            raise TypeError(f"{self.describe()} works on numbers, not {type(value).__name__} values")
        if isinstance(value, int):
            if step != step.to_integral_value():
                raise ValueError(f"{self.describe()}: an integer column needs a whole-number 'step'")
            return value - value % int(step)  # Python's % floors, also for negatives
        if not math.isfinite(value):
            return value
        with localcontext(prec=1100):  # enough for any float's exact decimal expansion
            exact = Decimal(value)
            r = exact % step  # exact, but with the dividend's sign: make it a floor
            r = r + step if r < 0 else r
            if isinstance(value, Decimal):
                return value - r
            q = (exact - r) / step
            # the largest multiple whose nearest float is still <= value: that makes
            # the result a fixed point, although q * step is rarely a float itself
            while float((q + 1) * step) <= value:
                q += 1
            return float(q * step)

    def _ip_network(self, value: str) -> str:
        if value == "":
            return value
        try:
            if "%" in value:  # scoped IPv6 (fe80::1%eth0): the database's inet type has no scope
                raise ValueError
            ip = ipaddress.ip_interface(value).ip
        except ValueError:
            raise ValueError(f"{self.describe()}: a value is not an IPv4 or IPv6 address") from None
        prefix = self.ipv4_prefix if ip.version == 4 else self.ipv6_prefix
        net = ipaddress.ip_network((ip, prefix), strict=False).network_address
        return str(net) if net.version == 4 else _ipv6_text(net)

    def sql(self, col, impl):
        if self.mode == "to":
            return impl.truncate_datetime(col, self.to)
        if self.mode == "step":
            return impl.floor_to_multiple(col, self.step)
        if self.mode == "keep_prefix":
            return sa.func.substr(col, 1, self.keep_prefix, type_=sa.String)
        # IPs: Python only. SQL (PostgreSQL's inet) would fail on a non-address with
        # an error that quotes the value, and errors end up in logs.
        return None

    def _conflicts(self, column):
        if self.mode == "to":
            # text is allowed: SQLite apps often keep ISO dates in TEXT columns
            out = self._needs_kind(column, "generalize 'to'", ("date", "datetime", "string"),
                                   "a DATE or TIMESTAMP column")
        elif self.mode == "step":
            out = self._needs_kind(column, "generalize 'step'", ("integer", "decimal", "float"), "a numeric column")
            kind, scale = _kind(column.type), getattr(column.type, "scale", None)
            if kind == "integer" and self.step != self.step.to_integral_value():
                out.append(f"column '{column.name}' holds integers, but generalize 'step' = {self.step} is "
                           f"not a whole number")
            elif kind == "decimal" and scale is not None and -self.step.as_tuple().exponent > scale:
                out.append(f"column '{column.name}' keeps {scale} decimal places, fewer than generalize "
                           f"'step' = {self.step}; the stored value would be rounded off the step")
        else:
            param = "keep_prefix" if self.mode == "keep_prefix" else "ipv4_prefix"
            out = self._needs_kind(column, f"generalize '{param}'", ("string",), "a text column")
        param = {"ip": "ipv4_prefix"}.get(self.mode, self.mode)
        return out + self._may_collide(column, f"generalize '{param}'")


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _ipv6_text(addr: ipaddress.IPv6Address) -> str:
    """RFC 5952 text, with PostgreSQL's dotted tail for IPv4-mapped/compatible forms.

    Python's own str() changed in 3.13 for mapped addresses; pinning one form
    keeps stored values stable and equal to what ``host(inet)`` gives.
    """
    words = [int(addr) >> (112 - 16 * i) & 0xFFFF for i in range(8)]
    best, i = (-1, 0), 0
    while i < 8:
        j = i
        while j < 8 and words[j] == 0:
            j += 1
        if j - i > best[1]:
            best = (i, j - i)
        i = max(j, i + 1)
    start, run = best if best[1] >= 2 else (-1, 0)
    if start == 0 and (run == 6 or (run == 5 and words[5] == 0xFFFF)):
        tail = ".".join(str(b) for b in addr.packed[12:])
        return ("::ffff:" if run == 5 else "::") + tail
    hexes = [f"{w:x}" for w in words]
    if start < 0:
        return ":".join(hexes)
    return ":".join(hexes[:start]) + "::" + ":".join(hexes[start + run:])


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (Null, Constant, Hash, Mask, Generalize, RedactEmail)
}


def build(spec: str | Mapping[str, Any]) -> Strategy:
    """A strategy from its policy-file form: ``"hash"`` or ``{strategy = "mask", keep_last = 4}``."""
    if isinstance(spec, str):
        name, params = spec, {}
    elif isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("strategy", None)
        if name is None:
            raise StrategyParamError("strategy", f"missing 'strategy'; choose from: {', '.join(sorted(STRATEGIES))}")
    else:
        raise StrategyParamError("strategy", "expected a strategy name or a table such as "
                                             "{ strategy = \"mask\", keep_last = 4 }")
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise StrategyParamError("strategy", f"unknown strategy '{name}'; choose from: {', '.join(sorted(STRATEGIES))}")
    return cls(**params)
