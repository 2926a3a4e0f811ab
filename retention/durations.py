"""Durations as operators write them, with calendar arithmetic.

Accepted forms (case-insensitive, may be combined: ``"1y6mo"``)::

    "90d"  "6w"  "18mo"  "3y"  "12h"  "5min"  "30s"
    "P3Y"  "P1Y2M3D"  "PT12H"  "P2W"          (ISO 8601)

``"3m"`` is rejected as ambiguous (months or minutes?).

Years and months are calendar units.  A period *ends* at the first instant
``t`` for which ``t - period`` reaches the clock.  Subtracting months keeps
the day of the month; where the shorter month has no such day, the result is
the end of that month (the first instant of the next one), which keeps the
subtraction monotonic: a row that is due never becomes "not due" an hour
later.  So a 3-year period that starts 2023-02-28 ends 2026-02-28, and one
that starts on the leap day 2024-02-29 ends 2027-03-01 (2027-02-28 minus
3 years is 2024-02-28, still before the leap day).

The job only ever subtracts: "due" means ``clock <= now - after`` and
"protected" means ``clock > now - keep``, so the database gets one bound
cutoff per rule and never evaluates calendar arithmetic itself.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

_UNITS = {
    "y": ("months", 12), "yr": ("months", 12), "year": ("months", 12), "years": ("months", 12),
    "mo": ("months", 1), "mon": ("months", 1), "month": ("months", 1), "months": ("months", 1),
    "w": ("days", 7), "week": ("days", 7), "weeks": ("days", 7),
    "d": ("days", 1), "day": ("days", 1), "days": ("days", 1),
    "h": ("seconds", 3600), "hour": ("seconds", 3600), "hours": ("seconds", 3600),
    "min": ("seconds", 60), "mins": ("seconds", 60), "minute": ("seconds", 60), "minutes": ("seconds", 60),
    "s": ("seconds", 1), "sec": ("seconds", 1), "second": ("seconds", 1), "seconds": ("seconds", 1),
}
_PART = re.compile(r"(\d+)\s*([a-z]+)")
_ISO = re.compile(
    r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<mi>\d+)M)?(?:(?P<s>\d+)S)?)?$"
)


@dataclass(frozen=True, order=True)
class Duration:
    """A calendar-aware length of time: whole months, days and seconds."""

    months: int = 0
    days: int = 0
    seconds: int = 0
    text: str = ""

    def __str__(self) -> str:
        return self.text or self.canonical()

    def canonical(self) -> str:
        out = []
        years, months = divmod(self.months, 12)
        if years:
            out.append(f"{years}y")
        if months:
            out.append(f"{months}mo")
        if self.days:
            out.append(f"{self.days}d")
        hours, rest = divmod(self.seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        if hours:
            out.append(f"{hours}h")
        if minutes:
            out.append(f"{minutes}min")
        if seconds:
            out.append(f"{seconds}s")
        return "".join(out) or "0d"

    def before(self, moment: datetime) -> datetime:
        """``moment - self``: months and days on the local calendar, hours and less as elapsed time.

        So "1d" across a daylight-saving change is the same wall-clock time the
        day before, while "12h" is always twelve real hours.
        """
        local = subtract_months(moment, self.months) - timedelta(days=self.days)
        if not self.seconds:
            return local
        if local.tzinfo is None:
            return local - timedelta(seconds=self.seconds)
        return (local.astimezone(timezone.utc) - timedelta(seconds=self.seconds)).astimezone(local.tzinfo)

    def after(self, moment: datetime) -> datetime:
        """``moment + self``: the first instant ``t`` with ``self.before(t) >= moment``.

        Used for display (e.g. "protected until"); decisions use :meth:`before`.
        """
        step = timedelta(days=self.days, seconds=self.seconds)
        if not self.months:
            return moment + step
        # before() is monotonic, so search around the naive guess (months differ by <= 3 days)
        guess = _shift_months(moment, self.months) + step
        lo, hi = guess - timedelta(days=8), guess + timedelta(days=8)
        one = timedelta(microseconds=1)
        while hi - lo > one:
            mid = lo + (hi - lo) // 2
            if self.before(mid) >= moment:
                hi = mid
            else:
                lo = mid
        return hi


def _shift_months(moment: datetime, months: int) -> datetime:
    """Move by whole months keeping the day, clamped to the month's last day (a guess only)."""
    index = moment.year * 12 + (moment.month - 1) + months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    return moment.replace(year=year, month=month0 + 1, day=min(moment.day, last))


def subtract_months(moment: datetime, months: int) -> datetime:
    """``moment`` minus whole months; a day the target month lacks becomes that month's end."""
    if not months:
        return moment
    index = moment.year * 12 + (moment.month - 1) - months
    year, month0 = divmod(index, 12)
    last = calendar.monthrange(year, month0 + 1)[1]
    if moment.day <= last:
        return moment.replace(year=year, month=month0 + 1)
    # the end of the shorter month is the first instant of the next one
    year, month0 = divmod(index + 1, 12)
    return moment.replace(year=year, month=month0 + 1, day=1, hour=0, minute=0, second=0, microsecond=0)


class DurationError(ValueError):
    """Raised for text that is not a duration; the message says what to write."""


def parse_duration(text: str) -> Duration:
    """Parse an operator-written duration.

    >>> parse_duration("18mo").months
    18
    >>> parse_duration("P1Y2M3D")
    Duration(months=14, days=3, seconds=0, text='P1Y2M3D')
    """
    if not isinstance(text, str):
        raise DurationError(f"expected a duration string such as '90d' or 'P3Y', got {text!r}")
    raw = text.strip()
    if not raw:
        raise DurationError("empty duration; write e.g. '90d', '18mo', '3y' or 'P3Y'")
    iso = _ISO.match(raw.upper())
    if raw[:1] in "Pp" and iso and raw.upper() not in ("P", "PT") and not raw.upper().endswith("T"):
        g = {k: int(v) if v else 0 for k, v in iso.groupdict().items()}
        return Duration(months=g["y"] * 12 + g["mo"], days=g["w"] * 7 + g["d"],
                        seconds=g["h"] * 3600 + g["mi"] * 60 + g["s"], text=raw)
    if raw[:1] in "Pp":
        raise DurationError(f"'{raw}' is not a valid ISO 8601 duration (e.g. 'P3Y', 'P1Y2M3D', 'PT12H')")
    lowered = raw.lower()
    totals = {"months": 0, "days": 0, "seconds": 0}
    pos = 0
    for m in _PART.finditer(lowered):
        if lowered[pos:m.start()].strip():
            break
        number, unit = int(m.group(1)), m.group(2)
        if unit == "m":
            raise DurationError(f"'{raw}' is ambiguous: write '{number}mo' for months or '{number}min' for minutes")
        if unit not in _UNITS:
            raise DurationError(f"unknown unit '{unit}' in '{raw}'; use y, mo, w, d, h, min or s")
        field, factor = _UNITS[unit]
        totals[field] += number * factor
        pos = m.end()
    if pos == 0 or lowered[pos:].strip():
        raise DurationError(f"'{raw}' is not a duration; write e.g. '90d', '6w', '18mo', '3y', '12h', '5min', '30s' or 'P3Y'")
    return Duration(text=raw, **totals)
