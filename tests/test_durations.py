from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, strategies as st

from retention.durations import Duration, DurationError, parse_duration


@pytest.mark.parametrize("text, months, days, seconds", [
    ("90d", 0, 90, 0), ("6w", 0, 42, 0), ("18mo", 18, 0, 0), ("3y", 36, 0, 0),
    ("12h", 0, 0, 43200), ("5min", 0, 0, 300), ("30s", 0, 0, 30), ("1y6mo", 18, 0, 0),
    ("P3Y", 36, 0, 0), ("P1Y2M3D", 14, 3, 0), ("PT12H", 0, 0, 43200), ("P2W", 0, 14, 0),
    ("PT5M", 0, 0, 300), ("p1d", 0, 1, 0), ("0d", 0, 0, 0),
])
def test_accepted_forms(text, months, days, seconds):
    d = parse_duration(text)
    assert (d.months, d.days, d.seconds) == (months, days, seconds)


def test_3m_is_rejected_as_ambiguous_and_suggests_both_readings():
    with pytest.raises(DurationError) as e:
        parse_duration("3m")
    assert "ambiguous" in str(e.value) and "3mo" in str(e.value) and "3min" in str(e.value)


@pytest.mark.parametrize("text", ["", "P", "PT", "3", "d3", "3 fortnights", "3y-", "P1H", 5])
def test_nonsense_is_rejected(text):
    with pytest.raises(DurationError):
        parse_duration(text)


def test_calendar_years_from_february_28_and_the_leap_day():
    three = parse_duration("3y")
    # a 3-year period that starts 2023-02-28 ends 2026-02-28
    assert three.after(datetime(2023, 2, 28)) == datetime(2026, 2, 28)
    # one that starts on the leap day ends 2027-03-01 (documented choice)
    assert three.after(datetime(2024, 2, 29)) == datetime(2027, 3, 1)
    # and decisions, which subtract, agree: on 2027-02-28 the leap-day clock is not yet due
    assert three.before(datetime(2027, 2, 28)) < datetime(2024, 2, 29)
    assert three.before(datetime(2027, 3, 1)) >= datetime(2024, 2, 29)


def test_a_day_the_shorter_month_lacks_becomes_that_months_end():
    assert parse_duration("1mo").before(datetime(2024, 3, 31, 12)) == datetime(2024, 3, 1)
    assert parse_duration("1mo").before(datetime(2023, 3, 30)) == datetime(2023, 3, 1)
    assert parse_duration("1mo").before(datetime(2023, 3, 28, 9)) == datetime(2023, 2, 28, 9)


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1)),
       st.integers(0, 120), st.integers(0, 400), st.integers(0, 86400 * 3))
def test_after_is_the_first_instant_whose_before_reaches_the_start(start, months, days, seconds):
    d = Duration(months=months, days=days, seconds=seconds)
    end = d.after(start)
    assert d.before(end) >= start
    assert d.before(end - timedelta(seconds=1)) < start or months == 0 and days == 0 and seconds == 0


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1),
                    timezones=st.just(timezone.utc)), st.integers(0, 60),
       st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)))
def test_before_is_monotonic(moment, months, later):
    # a row that is due stays due as time goes on
    d = Duration(months=months)
    assert d.before(moment) <= d.before(moment + later)
