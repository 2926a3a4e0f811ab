"""One instant per run, and how it meets each column's type.

"Now" is read once from the clock (so freezegun freezes it in tests) and every
cutoff derives from it.  SQL receives cutoffs as bound parameters, never the
database's ``NOW()``.  Naive timestamp columns are read in
``settings.timezone``; calendar periods are cut in that zone too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from retention.durations import Duration


class Beyond(enum.Enum):
    """A cutoff past an end of the calendar, kept exact instead of clamped to a date.

    ``PAST``: earlier than any clock a column can hold ("keep 9999y"): nothing
    is due, and a floor protects every row whose clock has started.
    ``FUTURE``: later than any clock (a forecast window past year 9999): every
    started clock is due, and a floor protects nothing.
    """

    PAST = "before every clock"
    FUTURE = "after every clock"


#: what :meth:`TimeContext.cutoff` returns
Cutoff = datetime | Beyond

#: the Gregorian calendar repeats every 400 years, weekdays and leap days included
_CYCLE_YEARS = 400


def utcnow() -> datetime:
    """The clock. The only place the job reads the time."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class TimeContext:
    now: datetime          # aware
    tz: ZoneInfo

    @classmethod
    def create(cls, tz: ZoneInfo, now: datetime | None = None) -> "TimeContext":
        now = now or utcnow()
        if now.tzinfo is None:
            now = now.replace(tzinfo=tz)
        return cls(now.astimezone(tz), tz)

    def cutoff(self, period: Duration, *, ahead_days: int = 0) -> Cutoff:
        """``now + ahead_days - period`` on the calendar, in the run's time zone (aware).

        A result before year 1 is :attr:`Beyond.PAST`, one after year 9999
        :attr:`Beyond.FUTURE`: never a clamped date, which a clock at the
        calendar's edge (a ``0001-01-01`` sentinel) would compare wrongly with.
        """
        if self.now.year > 9999 - _CYCLE_YEARS:
            # near the top: compute one 400-year cycle earlier, where nothing overflows, then shift back
            earlier = TimeContext(self.now.replace(year=self.now.year - _CYCLE_YEARS), self.tz)
            result = earlier.cutoff(period, ahead_days=ahead_days)
            if isinstance(result, Beyond):
                return result
            if result.year + _CYCLE_YEARS > 9999:
                return Beyond.FUTURE
            return result.replace(year=result.year + _CYCLE_YEARS)
        try:
            return period.before(self.now + timedelta(days=ahead_days))
        except (OverflowError, ValueError):
            return Beyond.PAST

    def moment_for(self, col_type: sa.types.TypeEngine, moment: datetime):
        """``moment`` as the value a column of this type compares with."""
        if is_date_only(col_type):
            return moment.astimezone(self.tz).date()
        if getattr(col_type, "timezone", False):
            return moment
        return moment.astimezone(self.tz).replace(tzinfo=None)

    def from_column(self, col_type: sa.types.TypeEngine, value) -> datetime | None:
        """A value read from a clock column, as an aware datetime (for reports)."""
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                return None
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=self.tz)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=self.tz)
        return None


def is_date_only(col_type: sa.types.TypeEngine) -> bool:
    try:
        return col_type.python_type is date
    except NotImplementedError:
        return False


def is_temporal_type(col_type: sa.types.TypeEngine) -> bool:
    """A date or timestamp column (whatever the engine stores it as)."""
    return isinstance(col_type, (sa.Date, sa.DateTime))
