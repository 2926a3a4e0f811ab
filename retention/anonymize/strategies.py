"""Strategies that replace or hide text: null, constant, hash, mask, redact_email."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from retention.anonymize.base import Strategy, StrategyParamError, int_param


class Null(Strategy):
    """Replace the value with NULL.

    TOML::

        columns.avatar_url = "null"
    """

    name = "null"
    idempotent = True

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
    idempotent = True
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
        return sa.or_(col.is_(None), impl.equal(col, self._literal(col)))

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
        self.length = int_param("length", length, 1, 64)
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
        if column.unique and self.length < 16:
            # birthday bound: 4 * length bits collide after about 2 ** (2 * length) rows
            out.append(f"column '{column.name}' is UNIQUE, and hash 'length' = {self.length} keeps "
                       f"{4 * self.length} bits: different values may collide; use 'length' >= 16")
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
    idempotent = True
    params = ("keep_first", "keep_last", "char")

    def _setup(self, keep_first: int = 0, keep_last: int = 4, char: str = "*", **_: Any) -> None:
        self.keep_first = int_param("keep_first", keep_first, 0)
        self.keep_last = int_param("keep_last", keep_last, 0)
        if not isinstance(char, str) or len(char) != 1:
            raise StrategyParamError("char", f"'char' must be exactly one character, got {char!r}")
        self.char = char

    def _apply(self, value):
        if not isinstance(value, str):
            raise TypeError(f"{self.describe()} masks text, not {type(value).__name__} values")
        n, kf, kl = len(self._whole_text(value)), self.keep_first, self.keep_last
        if n <= kf + kl:
            return self.char * n
        return value[:kf] + self.char * (n - kf - kl) + value[n - kl:]

    def sql(self, col, impl):
        n, kf, kl = impl.text_length(col), self.keep_first, self.keep_last
        char = sa.literal(self.char, sa.String)
        whole, middle = impl.repeat_text(char, n), impl.repeat_text(char, n - (kf + kl))
        if whole is None or middle is None:
            return None
        if kf:
            middle = sa.func.substr(col, 1, kf, type_=sa.String).concat(middle)
        if kl:
            middle = middle.concat(sa.func.substr(col, n - (kl - 1), type_=sa.String))
        return self._guarded(col, impl, sa.case((n <= kf + kl, whole), else_=middle))

    def _handled_sql(self, col, impl):
        return impl.plain_text(col)

    def _conflicts(self, column):
        return (self._needs_kind(column, "strategy 'mask'", ("string",), "a text column")
                + self._may_collide(column, "mask 'keep_first'/'keep_last'"))


class RedactEmail(Strategy):
    """Keep an e-mail's domain and the local part's first character; star the rest.

    ``alice@x.com`` -> ``a****@x.com``: at most four stars, so long local parts
    all look alike, and never longer than the input, so the result fits any
    column the address fitted (``al@x.com`` -> ``a*@x.com``, ``a@x.com`` ->
    ``*@x.com``).  The split is at the last ``@``; a value without ``@`` is
    masked entirely (``*`` per character).

    TOML::

        columns.contact_email = "redact_email"
    """

    name = "redact_email"
    idempotent = True

    def _apply(self, value):
        if not isinstance(value, str):
            raise TypeError(f"{self.describe()} redacts text, not {type(value).__name__} values")
        at = self._whole_text(value).rfind("@")
        if at < 0:
            return "*" * len(value)
        if at <= 1:
            return "*" * at + value[at:]
        return value[:1] + "*" * (min(at, 5) - 1) + value[at:]

    def sql(self, col, impl):
        at = impl.last_position(col, "@")  # 1-based; 0 when absent
        if at is None:
            return None
        n = at - 1                          # length of the local part
        star = sa.literal("*", sa.String)
        stars_all = impl.repeat_text(star, impl.text_length(col))
        stars_short = impl.repeat_text(star, n)
        stars_tail = impl.repeat_text(star, sa.case((n > 5, 4), else_=n - 1))
        if stars_all is None or stars_short is None or stars_tail is None:
            return None
        domain = sa.func.substr(col, at, type_=sa.String)
        head = sa.case((n <= 1, stars_short),
                       else_=sa.func.substr(col, 1, 1, type_=sa.String).concat(stars_tail))
        return self._guarded(col, impl, sa.case((at == 0, stars_all), else_=head.concat(domain)))

    def _handled_sql(self, col, impl):
        return impl.plain_text(col)

    def _conflicts(self, column):
        label = "strategy 'redact_email'"
        return self._needs_kind(column, label, ("string",), "a text column") + self._may_collide(column, label)
