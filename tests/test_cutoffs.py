"""Cutoffs past an end of the calendar stay exact instead of being clamped to a date.

``keep = "9999y"`` means "earlier than every clock": a floor then protects
every row whose clock has started, including a ``0001-01-01`` sentinel, and
``after = "9999y"`` makes nothing due.  A forecast window past year 9999 (a
far-future ``--now``) counts every clock the window reaches.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from zoneinfo import ZoneInfo

from retention import commands
from retention.durations import parse_duration
from retention.timectx import Beyond, TimeContext
from tests.shopkit import HASH_ENV, outcome

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)
SENTINEL = datetime(1, 1, 1)


def _logs(shop, *clocks: datetime) -> None:
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=c) for i, c in enumerate(clocks, 1)])


def _rule(after: str) -> str:
    return f"""
    [[rules]]
    name = "logs-purge"
    table = "shop.logs"
    clock = "created_at"
    after = "{after}"
    action = "delete"
    max_fraction = 1.0
    """


def test_a_floor_longer_than_the_calendar_protects_a_year_one_sentinel(shop):
    _logs(shop, SENTINEL, datetime(2020, 1, 1))
    policy = shop.policy(_rule("1d") + """
    [[floors]]
    name = "forever"
    table = "shop.logs"
    clock = "created_at"
    keep = "9999y"
    """)
    out = outcome(shop.run(policy, now=NOW), "logs-purge")
    assert out.error is None, out.error
    assert (out.due, out.protected_total, out.touch) == (2, 2, 0)
    assert shop.ids("logs") == [1, 2]


def test_a_rule_longer_than_the_calendar_makes_nothing_due(shop):
    _logs(shop, SENTINEL, datetime(2020, 1, 1))
    out = outcome(shop.run(shop.policy(_rule("9999y")), now=NOW), "logs-purge")
    assert out.error is None, out.error
    assert (out.due, out.touch) == (0, 0)
    assert shop.ids("logs") == [1, 2]


def test_a_period_reaching_just_past_the_sentinel_makes_it_due(shop):
    # now - 2025y is 0001-03-01: the sentinel's clock has run, the 2020 row's has not
    _logs(shop, SENTINEL, datetime(2020, 1, 1))
    out = outcome(shop.run(shop.policy(_rule("2025y")), now=NOW), "logs-purge")
    assert (out.due, out.touch) == (1, 1)
    assert shop.ids("logs") == [2]


def test_forecast_windows_past_year_9999_count_every_clock_they_reach(shop):
    far = datetime(9999, 12, 1, tzinfo=timezone.utc)
    # due now: clock <= 9999-08-23; within 365 days the cutoff passes the calendar's end
    _logs(shop, datetime(9999, 8, 1), datetime(9999, 10, 1), datetime(9999, 11, 30))
    report = commands.plan(shop.policy(_rule("100d")), env=HASH_ENV, now=far)
    out = outcome(report, "logs-purge")
    assert out.error is None, out.error
    assert out.due == 1
    assert out.forecast == {"7d": 0, "30d": 0, "90d": 1, "365d": 2}


@pytest.mark.parametrize("now, period, ahead, expected", [
    (datetime(2026, 3, 1), "9999y", 0, Beyond.PAST),
    (datetime(2026, 3, 1), "2025y", 0, datetime(1, 3, 1)),
    (datetime(9999, 12, 1), "100d", 0, datetime(9999, 8, 23)),
    (datetime(9999, 12, 1), "100d", 365, Beyond.FUTURE),
    (datetime(9999, 12, 1), "1d", 30, datetime(9999, 12, 30)),
    (datetime(9999, 12, 1), "9999y", 365, Beyond.PAST),
    (datetime(9996, 2, 29), "1y", 365, datetime(9996, 2, 28)),     # a leap day near the top
])
def test_cutoff_is_exact_at_both_ends_of_the_calendar(now, period, ahead, expected):
    ctx = TimeContext.create(ZoneInfo("UTC"), now.replace(tzinfo=timezone.utc))
    got = ctx.cutoff(parse_duration(period), ahead_days=ahead)
    if isinstance(expected, Beyond):
        assert got is expected
    else:
        assert got == expected.replace(tzinfo=timezone.utc)
