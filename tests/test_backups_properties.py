"""Invariants of the rotation policy, for any backups and any non-empty policy (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from retention.backups.policy import PERIODS, Backup, Policy, apply_policy
from retention.durations import Duration

UTC = timezone.utc
ZONES = [ZoneInfo("UTC"), ZoneInfo("Europe/Berlin"), ZoneInfo("America/New_York"), ZoneInfo("Australia/Lord_Howe")]
START = datetime(2024, 1, 1, tzinfo=UTC)

backups = st.lists(st.integers(0, 2 * 365 * 24 * 60), min_size=1, max_size=60).map(
    lambda minutes: [Backup(f"b{i:03d}", START + timedelta(minutes=m)) for i, m in enumerate(minutes)])
counts = st.one_of(st.none(), st.just(-1), st.integers(0, 8))
spans = st.one_of(st.none(), st.builds(Duration, months=st.integers(0, 6), days=st.integers(0, 40),
                                       seconds=st.integers(0, 48).map(lambda h: h * 3600)))
policies = st.builds(Policy, last=counts, hourly=counts, daily=counts, weekly=counts, monthly=counts,
                     yearly=counts, within=spans, within_daily=spans, within_weekly=spans,
                     max_age=st.one_of(st.none(), spans.filter(lambda d: d is not None)),
                     anchor=st.sampled_from(["now", "latest"])).filter(lambda p: not p.is_empty())
NOW = START + timedelta(days=2 * 365 + 3)


@settings(max_examples=150, deadline=None)
@given(backups, policies, st.sampled_from(ZONES))
def test_every_backup_is_kept_with_reasons_or_removed_with_a_why(items, policy, tz):
    outcome = apply_policy(items, policy, tz=tz, now=NOW)
    assert sorted(d.backup.name for d in outcome.decisions) == sorted(b.name for b in items)
    assert all(bool(d.reasons) != bool(d.why) for d in outcome.decisions)


@settings(max_examples=150, deadline=None)
@given(backups, policies, st.sampled_from(ZONES))
def test_nothing_at_or_beyond_max_age_is_kept(items, policy, tz):
    outcome = apply_policy(items, policy, tz=tz, now=NOW)
    if policy.max_age is not None and (policy.max_age.months or policy.max_age.days or policy.max_age.seconds):
        limit = policy.max_age.before(NOW.astimezone(tz))
        assert all(d.backup.time > limit for d in outcome.keep)


@settings(max_examples=150, deadline=None)
@given(backups, st.integers(1, 8), st.sampled_from(sorted(PERIODS)), st.sampled_from(ZONES))
def test_a_count_keeps_one_per_period_and_more_never_keeps_less(items, n, period, tz):
    fewer = apply_policy(items, Policy(**{period: n}), tz=tz, now=NOW)
    more = apply_policy(items, Policy(**{period: n + 1}), tz=tz, now=NOW)
    kept = fewer.keep
    assert len(kept) <= n + 1                         # n periods, and perhaps the oldest backup
    key = PERIODS[period]
    regular = [d for d in kept if not d.reasons[0].startswith("oldest")]
    assert len({key(d.backup.time.astimezone(tz)) for d in regular}) == len(regular)
    assert {d.backup.name for d in kept} <= {d.backup.name for d in more.keep}
    assert kept[0].backup.time == max(b.time for b in items)      # the newest is always kept
