"""``generalize``: coarsen dates, numbers, IP addresses and codes, keeping the type."""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import date, datetime
from decimal import Decimal, InvalidOperation, localcontext
from typing import Any

import sqlalchemy as sa

from retention.anonymize.base import Strategy, StrategyParamError, column_kind, int_param


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
        if to is not None and (not isinstance(to, str) or to not in _PERIOD_CHARS):
            raise StrategyParamError("to", f"'to' must be one of: year, month, day; got {to!r}")
        self.to = to
        self.step = self._parse_step(step) if step is not None else None
        self.ipv4_prefix = int_param("ipv4_prefix", 24 if ipv4_prefix is None else ipv4_prefix, 0, 32)
        self.ipv6_prefix = int_param("ipv6_prefix", 48 if ipv6_prefix is None else ipv6_prefix, 0, 128)
        self.keep_prefix = int_param("keep_prefix", keep_prefix, 0) if keep_prefix is not None else None

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
            return self._whole_text(value)[: self.keep_prefix]
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
        if not (value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)):
            return value  # NaN and infinities have no multiple to floor to
        # Enough digits for exact arithmetic; any float's exact expansion ends by 10**-1074.
        exact = Decimal(value)
        low = min(exact.as_tuple().exponent, step.as_tuple().exponent, -1080 if isinstance(value, float) else 0)
        with localcontext(prec=max(exact.adjusted(), step.adjusted(), 0) + 5 - low):
            if isinstance(value, Decimal):
                r = value % step  # exact, but with the dividend's sign: make it a floor
                return value - (r + step if r < 0 else r)
            # Floats: a multiple of step is rarely a float, so take the nearest float,
            # and repeat until that is stable: apply() must be a fixed point.
            for _ in range(64):
                below = self._float_floor(value, step)
                if below == value:
                    break
                value = below
            return value

    @staticmethod
    def _float_floor(value: float, step: Decimal) -> float:
        exact = Decimal(value)
        r = exact % step
        q = (exact - r) / step - (1 if r < 0 else 0)
        if float((q + 1) * step) == value:  # value is itself the float nearest a multiple
            return value
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
        if ip.version == 6 and ip.ipv4_mapped is not None:
            # how dual-stack servers log IPv4 clients: an IPv4 address, so the IPv4 prefix applies
            v4 = ipaddress.ip_network((ip.ipv4_mapped, self.ipv4_prefix), strict=False).network_address
            return f"::ffff:{v4}"
        prefix = self.ipv4_prefix if ip.version == 4 else self.ipv6_prefix
        net = ipaddress.ip_network((ip, prefix), strict=False).network_address
        return str(net) if net.version == 4 else _ipv6_text(net)

    def sql(self, col, impl):
        if self.mode == "to":
            return self._guarded(col, impl, impl.truncate_datetime(col, self.to))
        if self.mode == "step":
            return self._guarded(col, impl, impl.floor_to_multiple(col, self.step))
        if self.mode == "keep_prefix":
            return self._guarded(col, impl, sa.func.substr(col, 1, self.keep_prefix, type_=sa.String))
        # IPs: Python only. SQL (PostgreSQL's inet) would fail on a non-address with
        # an error that quotes the value, and errors end up in logs.
        return None

    def done_sql(self, col, impl):
        start = impl.at_period_start(col, self.to) if self.mode == "to" else None
        if start is None or self.sql(col, impl) is None:
            return super().done_sql(col, impl)
        return sa.or_(col.is_(None), sa.and_(self._handled_sql(col, impl), start))

    def _handled_sql(self, col, impl):
        # what the Python path reads: dates the driver can load (a SQLite text date in the
        # form SQLAlchemy writes, a PostgreSQL date within Python's years), integers stored
        # as integers, text without a NUL
        if self.mode == "to":
            return impl.readable_datetime(col)
        if self.mode == "step":
            return impl.whole_number(col) if isinstance(col.type, sa.Integer) else None
        if self.mode == "keep_prefix":
            return impl.plain_text(col)
        return None

    def _conflicts(self, column):
        if self.mode == "to":
            # text is allowed: SQLite apps often keep ISO dates in TEXT columns
            out = self._needs_kind(column, "generalize 'to'", ("date", "datetime", "string"),
                                   "a DATE or TIMESTAMP column")
        elif self.mode == "step":
            out = self._needs_kind(column, "generalize 'step'", ("integer", "decimal", "float"), "a numeric column")
            kind, scale = column_kind(column.type), getattr(column.type, "scale", None)
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
