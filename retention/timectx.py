"""One instant per run, and how it meets each column's type.

"Now" is read once from the clock (so freezegun freezes it in tests) and every
cutoff derives from it.  SQL receives cutoffs as bound parameters, never the
database's ``NOW()``.  Naive timestamp columns are read in
``settings.timezone``; calendar periods are cut in that zone too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from retention.durations import Duration


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

    def cutoff(self, period: Duration, *, ahead_days: int = 0) -> datetime:
        """``now + ahead_days - period`` on the calendar, in the run's time zone (aware).

        Past the calendar's ends the result is clamped: a cutoff before year 1
        ("keep 5000y") is earlier than any clock, so nothing is due and a floor
        protects everything, which is what such a period means.
        """
        try:
            moment = self.now + timedelta(days=ahead_days)
        except OverflowError:
            moment = datetime(9999, 12, 30, tzinfo=self.tz)
        try:
            return period.before(moment)
        except (OverflowError, ValueError):
            return datetime(1, 1, 2, tzinfo=self.tz)

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
