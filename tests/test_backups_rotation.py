"""Backup rotation: calendar periods in the policy's zone (across DST), max_age, anchor,
the refusals (max_gap, the last backup), names and times, and what a rotation removes."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from retention import commands
from retention.backups import LocalStore, StoreError, rotate_set
from retention.cli import cli
from retention.config import load_config
from tests.backupkit import daily, dumps, hourly, left, policy

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def kept(report) -> list[dict]:
    (result,) = report.to_dict()["backups"]
    return result["keep"]


def local(entry: dict, tz=BERLIN) -> datetime:
    return datetime.fromisoformat(entry["time"]).astimezone(tz)


# --- calendar periods across daylight-saving changes -----------------------------------------------

def test_daily_periods_are_local_days_across_the_spring_change(tmp_path):
    # Berlin moves from +01:00 to +02:00 at 2026-03-29 02:00 local: that day has 23 hours
    times = hourly(datetime(2026, 3, 26, 23, 30, tzinfo=UTC), 24 * 5 - 2)   # 27 March 00:30 .. 31 March 22:30 local
    dumps(tmp_path / "store", times)
    path = policy(tmp_path, timezone_name="Europe/Berlin", keep_daily=5)
    report = commands.backups_rotate(str(path), dry_run=True, now=times[-1])
    days = [local(k) for k in kept(report)]
    # the newest backup of each local day: 23:30 local, whatever the UTC offset that day
    assert [d.date().isoformat() for d in days] == ["2026-03-31", "2026-03-30", "2026-03-29", "2026-03-28",
                                                    "2026-03-27"]
    assert all(d.strftime("%H:%M") == "23:30" for d in days[1:])
    assert {d.utcoffset() for d in days[1:]} == {timedelta(hours=1), timedelta(hours=2)}
    # the 23-hour day is one period holding 23 backups, 22 of them removed
    (result,) = report.to_dict()["backups"]
    per_day = Counter(local(r).date().isoformat() for r in result["remove"] + result["keep"])
    assert per_day["2026-03-29"] == 23 and per_day["2026-03-28"] == 24


def test_the_same_backups_cut_in_utc_keep_other_ones(tmp_path):
    times = hourly(datetime(2026, 3, 26, 23, 30, tzinfo=UTC), 24 * 5)
    dumps(tmp_path / "store", times)
    path = policy(tmp_path, timezone_name="UTC", keep_daily=5)
    report = commands.backups_rotate(str(path), dry_run=True, now=times[-1])
    assert all(local(k, UTC).strftime("%H:%M") == "23:30" for k in kept(report)[1:])


def test_the_hour_repeated_in_autumn_is_two_hourly_periods(tmp_path):
    # 2026-10-25: Berlin goes back from 03:00 +02:00 to 02:00 +01:00; 02:30 local happens twice
    times = hourly(datetime(2026, 10, 24, 20, 30, tzinfo=UTC), 12)
    dumps(tmp_path / "store", times)
    path = policy(tmp_path, timezone_name="Europe/Berlin", keep_hourly=12)
    report = commands.backups_rotate(str(path), dry_run=True, now=times[-1])
    entries = kept(report)
    assert len(entries) == 12           # twelve real hours, twelve periods
    twice = [k for k in entries if local(k).strftime("%H:%M") == "02:30"]
    assert len(twice) == 2 and {local(k).utcoffset() for k in twice} == {timedelta(hours=1), timedelta(hours=2)}
    assert all(k["reasons"] == ["hourly snapshot"] for k in entries[:-1])


def test_the_25_hour_autumn_day_is_one_daily_period(tmp_path):
    times = hourly(datetime(2026, 10, 23, 22, 30, tzinfo=UTC), 24 * 3 + 1)
    dumps(tmp_path / "store", times)
    path = policy(tmp_path, timezone_name="Europe/Berlin", keep_daily=-1)
    report = commands.backups_rotate(str(path), dry_run=True, now=times[-1])
    (result,) = report.to_dict()["backups"]
    per_day = Counter(local(r).date().isoformat() for r in result["remove"] + result["keep"])
    assert per_day["2026-10-25"] == 25
    assert [local(k).date().isoformat() for k in result["keep"]] == [
        "2026-10-26", "2026-10-25", "2026-10-24", "2026-10-24"]     # -1: every day; the oldest is kept too
    assert result["keep"][-1]["reasons"] == ["oldest daily snapshot"]


def test_keep_within_a_day_is_a_calendar_day_across_the_spring_change(tmp_path):
    times = hourly(datetime(2026, 3, 27, 0, 30, tzinfo=UTC), 60)
    dumps(tmp_path / "store", times)
    now = datetime(2026, 3, 29, 12, 0, tzinfo=BERLIN)    # 10:00 UTC; a day before is 28 March 12:00 +01:00
    path = policy(tmp_path, timezone_name="Europe/Berlin", keep_within="1d")
    report = commands.backups_rotate(str(path), dry_run=True, now=now)
    entries = kept(report)
    assert local(entries[-1]) == datetime(2026, 3, 28, 12, 30, tzinfo=BERLIN)   # 23 real hours back
    assert all(k["reasons"] == ["within 1d"] for k in entries)


# --- max_age, anchor ---------------------------------------------------------------------------------

def test_max_age_removes_what_every_keep_rule_would_keep(tmp_path):
    end = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    times = daily(end, 800)
    dumps(tmp_path / "store", times)
    path = policy(tmp_path, keep_daily=-1, keep_monthly=-1, keep_yearly=-1, max_age="400d")
    report = commands.backups_rotate(str(path), now=end + timedelta(hours=1))
    (result,) = report.to_dict()["backups"]
    limit = datetime(2025, 4, 27, 3, 0, tzinfo=UTC)            # 400 days before now
    assert all(datetime.fromisoformat(k["time"]) > limit for k in result["keep"])
    assert len(result["keep"]) == 400
    capped = [r for r in result["remove"] if r["why"].startswith("older than max_age 400d")]
    assert len(capped) == 400 and "would be daily snapshot" in capped[0]["why"]
    assert len(left(tmp_path / "store")) == 400


def test_anchor_latest_counts_keep_within_from_the_newest_backup(tmp_path):
    end = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)
    dumps(tmp_path / "store", daily(end, 30))
    now = end + timedelta(days=20)                # the backups stopped 20 days ago
    latest = policy(tmp_path, keep_within="7d", anchor="latest")
    assert len(kept(commands.backups_rotate(str(latest), dry_run=True, now=now))) == 7
    by_now = policy(tmp_path, keep_within="7d", keep_last=1, anchor="now")
    entries = kept(commands.backups_rotate(str(by_now), dry_run=True, now=now))
    assert [k["reasons"] for k in entries] == [["last snapshot"]]


# --- refusals -----------------------------------------------------------------------------------------

def test_the_only_remaining_backup_is_never_removed(tmp_path):
    names = dumps(tmp_path / "store", [datetime(2025, 1, 1, tzinfo=UTC)])
    path = policy(tmp_path, keep_daily=7, max_age="30d")
    report = commands.backups_rotate(str(path), now=datetime(2026, 1, 1, tzinfo=UTC))
    (result,) = report.to_dict()["backups"]
    assert report.exit_code == 3 and result["status"] == "refused"
    assert "only remaining backup" in result["message"]
    assert left(tmp_path / "store") == names


def test_a_policy_that_would_remove_every_backup_is_refused(tmp_path):
    names = dumps(tmp_path / "store", daily(datetime(2026, 1, 10, tzinfo=UTC), 10))
    path = policy(tmp_path, keep_within="7d")       # anchor now: nothing is within a week of mid-2026
    report = commands.backups_rotate(str(path), now=datetime(2026, 7, 1, tzinfo=UTC))
    assert report.exit_code == 3 and "all 10 backups" in report.sets[0].message
    assert left(tmp_path / "store") == sorted(names)


def test_max_gap_refuses_when_the_newest_backup_is_too_old(tmp_path):
    end = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    names = dumps(tmp_path / "store", daily(end, 30))
    path = policy(tmp_path, keep_daily=7, max_gap="2d")
    stale = commands.backups_rotate(str(path), now=end + timedelta(days=3))
    assert stale.exit_code == 3
    assert "older than max_gap 2d" in stale.sets[0].message and len(stale.sets[0].remove) == 23
    assert left(tmp_path / "store") == sorted(names)                 # nothing removed
    fresh = commands.backups_rotate(str(path), now=end + timedelta(days=1))
    assert fresh.exit_code == 0 and len(left(tmp_path / "store")) == 7


def test_max_gap_with_no_backup_at_all_is_refused(tmp_path):
    (tmp_path / "store").mkdir()
    path = policy(tmp_path, keep_daily=7, max_gap="2d")
    report = commands.backups_rotate(str(path), now=datetime(2026, 1, 1, tzinfo=UTC))
    assert report.exit_code == 3 and "no backup found" in report.sets[0].message


# --- names, times, entries ----------------------------------------------------------------------------

def test_names_outside_the_pattern_and_unreadable_times_are_left_alone(tmp_path):
    store = tmp_path / "store"
    dumps(store, daily(datetime(2026, 1, 10, tzinfo=UTC), 5))
    for other in ("notes.txt", "shop-20261345T000000Z.dump", "shop-20260101T000000Z.dump.partial"):
        (store / other).write_text("x")
    (store / "shop-20200101T000000Z.dump.d").mkdir()
    path = policy(tmp_path, keep_last=1)
    report = commands.backups_rotate(str(path), now=datetime(2026, 1, 11, tzinfo=UTC))
    assert report.sets[0].unreadable == ["shop-20261345T000000Z.dump"]
    assert left(store) == ["notes.txt", "shop-20200101T000000Z.dump.d", "shop-20260101T000000Z.dump.partial",
                           "shop-20260110T000000Z.dump", "shop-20261345T000000Z.dump"]


def test_a_strftime_pattern_is_read_in_the_policy_zone(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    for name in ("db_20260329_0130.sql.gz", "db_20260329_0330.sql.gz", "db_20260328_2330.sql.gz"):
        (store / name).write_text("x")
    path = policy(tmp_path, timezone_name="Europe/Berlin", pattern="db_{timestamp:%Y%m%d_%H%M}.sql.gz",
                  keep_last=-1)
    entries = kept(commands.backups_rotate(str(path), dry_run=True, now=datetime(2026, 3, 30, tzinfo=UTC)))
    assert [e["time"] for e in entries] == ["2026-03-29T03:30:00+02:00", "2026-03-29T01:30:00+01:00",
                                           "2026-03-28T23:30:00+01:00"]


@pytest.mark.parametrize("name, expected", [
    ("shop-2026-03-29T02:30:00Z.dump", "2026-03-29T02:30:00+00:00"),
    ("shop-2026-03-29T02-30-00+05:30.dump", "2026-03-28T21:00:00+00:00"),
    ("shop-20260329T023000.5Z.dump", "2026-03-29T02:30:00.500000+00:00"),
    ("shop-2026-03-29.dump", "2026-03-28T23:00:00+00:00"),            # a date alone: local midnight
])
def test_iso_timestamps_in_names(tmp_path, name, expected):
    store = tmp_path / "store"
    store.mkdir()
    (store / name).write_text("x")
    path = policy(tmp_path, timezone_name="Europe/Berlin", keep_last=1)
    (entry,) = kept(commands.backups_rotate(str(path), dry_run=True, now=datetime(2026, 4, 1, tzinfo=UTC)))
    assert datetime.fromisoformat(entry["time"]) == datetime.fromisoformat(expected)


def test_without_a_timestamp_the_modification_time_counts(tmp_path):
    import os
    store = tmp_path / "store"
    store.mkdir()
    for i, name in enumerate(["c.dump", "a.dump", "b.dump"]):
        (store / name).write_text("x")
        moment = datetime(2026, 1, 1 + i, tzinfo=UTC).timestamp()
        os.utime(store / name, (moment, moment))
    path = policy(tmp_path, pattern="*.dump", keep_last=2)
    report = commands.backups_rotate(str(path), now=datetime(2026, 2, 1, tzinfo=UTC))
    assert [k["name"] for k in kept(report)] == ["b.dump", "a.dump"]
    assert left(store) == ["a.dump", "b.dump"]


def test_two_backups_with_the_same_time_are_two_entries(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    for name in ("shop-20260101T000000Z-a.dump", "shop-20260101T000000Z-b.dump", "shop-20251231T000000Z-a.dump"):
        (store / name).write_text("x")
    path = policy(tmp_path, pattern="shop-{timestamp}-*.dump", keep_last=2)
    (result,) = commands.backups_rotate(str(path), dry_run=True,
                                        now=datetime(2026, 1, 2, tzinfo=UTC)).to_dict()["backups"]
    assert [k["name"] for k in result["keep"]] == ["shop-20260101T000000Z-a.dump", "shop-20260101T000000Z-b.dump"]
    assert result["keep"][0]["time"] == result["keep"][1]["time"]
    assert [r["name"] for r in result["remove"]] == ["shop-20251231T000000Z-a.dump"]


# --- removal ------------------------------------------------------------------------------------------

class _FailingStore(LocalStore):
    """A real directory whose removal of one name fails, as a full or read-only disk would."""

    def __init__(self, location: str, bad: str) -> None:
        super().__init__(location)
        self.bad = bad

    def remove(self, name: str) -> None:
        if name == self.bad:
            raise StoreError(f"cannot remove {name} from {self.location}: Read-only file system")
        super().remove(name)


def test_a_failed_removal_stops_the_set_and_reports_what_was_removed(tmp_path):
    names = dumps(tmp_path / "store", daily(datetime(2026, 1, 10, tzinfo=UTC), 6))   # newest first
    config = load_config(policy(tmp_path, keep_last=2))
    store = _FailingStore(str(tmp_path / "store"), bad=names[3])
    result = rotate_set(config.model.backups[0], store, tz=UTC, now=datetime(2026, 1, 11, tzinfo=UTC),
                        dry_run=False)
    assert result.status == "failed" and "Read-only" in result.message
    assert result.removed == [names[5], names[4]]                    # oldest first, up to the failure
    assert left(tmp_path / "store") == sorted(names[:4])
    assert [r["removed"] for r in result.to_dict()["remove"]] == [False, False, True, True]


# --- the command --------------------------------------------------------------------------------------

def test_rotate_command_json_and_dry_run(tmp_path):
    end = datetime(2026, 1, 10, 2, 0, tzinfo=UTC)
    names = dumps(tmp_path / "store", daily(end, 20))
    path = policy(tmp_path, keep_last=2, keep_weekly=2)
    runner = CliRunner()
    args = ["backups", "rotate", "-c", str(path), "--now", "2026-01-10T12:00:00Z", "--format", "json"]
    dry = runner.invoke(cli, args + ["--dry-run"])
    assert dry.exit_code == 0, dry.output
    doc = json.loads(dry.stdout)
    (entry,) = doc["backups"]
    assert entry["name"] == "nightly" and entry["location"] == str(tmp_path / "store")
    assert set(entry["keep"][0]) >= {"name", "time", "reasons"} and set(entry["remove"][0]) >= {"name", "time"}
    assert entry["keep"][0]["reasons"] == ["last snapshot", "weekly snapshot"]
    assert len(entry["keep"]) + len(entry["remove"]) == 20
    assert left(tmp_path / "store") == sorted(names)                  # dry run: nothing removed
    real = runner.invoke(cli, args)
    assert real.exit_code == 0
    assert left(tmp_path / "store") == sorted(k["name"] for k in json.loads(real.stdout)["backups"][0]["keep"])


def test_rotate_command_text_lists_reasons_and_removals(tmp_path):
    dumps(tmp_path / "store", daily(datetime(2026, 1, 10, 2, 0, tzinfo=UTC), 10))
    path = policy(tmp_path, keep_daily=3, keep_within="5d")
    result = CliRunner().invoke(cli, ["backups", "rotate", "--dry-run", "-c", str(path), "--now",
                                      "2026-01-10T12:00:00Z"])
    assert result.exit_code == 0
    assert "within 5d, daily snapshot" in result.stdout and "no keep rule keeps it" in result.stdout
    assert "keep 5 backup(s)" in result.stdout and "remove 5 backup(s)" in result.stdout


def test_refused_rotation_exits_3_and_says_why(tmp_path):
    dumps(tmp_path / "store", [datetime(2025, 1, 1, tzinfo=UTC)])
    path = policy(tmp_path, keep_daily=1, max_gap="2d")
    result = CliRunner().invoke(cli, ["backups", "rotate", "-c", str(path), "--now", "2026-01-01T00:00:00Z"])
    assert result.exit_code == 3 and "[refused]" in result.stdout and "max_gap 2d" in result.stdout


def test_only_names_backup_sets(tmp_path):
    dumps(tmp_path / "store", [datetime(2026, 1, 1, tzinfo=UTC)])
    path = policy(tmp_path, keep_daily=1)
    result = CliRunner().invoke(cli, ["backups", "rotate", "-c", str(path), "--only", "weekly"])
    assert result.exit_code == 2 and "no backup set named 'weekly'" in result.output
