"""``gone_by``: the date by which every backup taken before an erasure has been removed.

The date is checked against the rotation itself: one second before it a
backup that predates the erasure is still there; at it, none is.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from freezegun import freeze_time

from retention import commands
from retention.backups import erasure_gone_by, gone_by, take_inventory
from retention.backups.stores import LocalStore
from retention.config import load_config
from tests.backupkit import daily, dumps, left, policy

UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")


def predating(directory, erased_at: datetime) -> list[str]:
    stamp = erased_at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return [n for n in left(directory) if n < f"shop-{stamp}.dump"]


def test_gone_by_is_when_the_rotation_removes_the_last_backup_before_the_erasure(tmp_path):
    store = tmp_path / "store"
    dumps(store, daily(datetime(2026, 3, 20, 1, 0, tzinfo=UTC), 90))     # 01:00 UTC nightly
    path = policy(tmp_path, timezone_name="Europe/Berlin", keep_daily=-1, max_age="1mo")
    config = load_config(path)
    erased_at = datetime(2026, 3, 14, 15, 0, tzinfo=UTC)
    with freeze_time(datetime(2026, 3, 20, 12, 0, tzinfo=UTC)):
        when = erasure_gone_by(config, erased_at, now=datetime.now(UTC))
    # the last backup before the erasure: 14 March 01:00 UTC (02:00 +01:00); a calendar month later,
    # after the spring change, is 14 April 02:00 +02:00
    assert when == datetime(2026, 4, 14, 2, 0, tzinfo=BERLIN)
    with freeze_time(when - timedelta(seconds=1)):
        assert commands.backups_rotate(str(path)).exit_code == 0
    assert predating(store, erased_at) == ["shop-20260314T010000Z.dump"]
    with freeze_time(when):
        assert commands.backups_rotate(str(path)).exit_code == 0
    assert predating(store, erased_at) == []


def test_an_erasure_after_the_listing_is_bounded_by_its_own_time(tmp_path):
    dumps(tmp_path / "store", daily(datetime(2026, 3, 20, 1, 0, tzinfo=UTC), 10))
    config = load_config(policy(tmp_path, keep_daily=7, max_age="30d"))
    backup = config.model.backups[0]
    inventory = take_inventory(backup, LocalStore(backup.location), UTC)
    listed = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    later = listed + timedelta(days=2)       # backups not taken yet may still come before it
    assert gone_by(backup, inventory.backups, later, tz=UTC, listed_at=listed) == later + timedelta(days=30)
    first = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # no backup predates it: nothing holds the data
    assert gone_by(backup, inventory.backups, first, tz=UTC, listed_at=listed) == first


def test_without_max_age_there_is_no_provable_date(tmp_path):
    dumps(tmp_path / "store", daily(datetime(2026, 3, 20, tzinfo=UTC), 3))
    config = load_config(policy(tmp_path, keep_daily=7))
    assert erasure_gone_by(config, datetime(2026, 3, 19, tzinfo=UTC), now=datetime(2026, 3, 20, tzinfo=UTC)) is None


def test_the_latest_set_decides_and_one_set_without_max_age_makes_it_unprovable(tmp_path):
    fast, slow = tmp_path / "fast", tmp_path / "slow"
    dumps(fast, daily(datetime(2026, 3, 20, tzinfo=UTC), 5))
    dumps(slow, daily(datetime(2026, 3, 20, tzinfo=UTC), 5))
    base = ["version = 1", "[databases]"]
    sets = [("fast", fast, 'max_age = "7d"'), ("slow", slow, 'max_age = "90d"')]
    text = base + [line for name, where, cap in sets for line in (
        "[[backups]]", f'name = "{name}"', f'location = "{where}"', 'pattern = "shop-{timestamp}.dump"',
        "keep_daily = 7", cap)]
    (tmp_path / "p.toml").write_text("\n".join(text) + "\n")
    erased, now = datetime(2026, 3, 19, 12, 0, tzinfo=UTC), datetime(2026, 3, 20, 12, 0, tzinfo=UTC)
    assert erasure_gone_by(load_config(tmp_path / "p.toml"), erased, now=now) == datetime(2026, 6, 17, tzinfo=UTC)
    (tmp_path / "p.toml").write_text("\n".join(text[:-1]) + "\n")
    assert erasure_gone_by(load_config(tmp_path / "p.toml"), erased, now=now) is None


def test_check_warns_about_a_backup_set_without_max_age(tmp_path):
    db = tmp_path / "app.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    (tmp_path / "store").mkdir()
    lines = ["version = 1", f'[databases.app]\nurl = "sqlite:///{db}"',
             "[[backups]]", 'name = "nightly"', f'location = "{tmp_path / "store"}"', "keep_daily = 7",
             "[[backups]]", 'name = "capped"', f'location = "{tmp_path / "store"}"', "keep_daily = 7",
             'max_age = "400d"']
    (tmp_path / "p.toml").write_text("\n".join(lines) + "\n")
    warnings = commands.check(str(tmp_path / "p.toml")).warnings
    assert [w for w in warnings if "backup" in w] == [
        "backup 'nightly' has no max_age: it gives no provable date by which erased data leaves its backups "
        "(gone_by); set max_age, e.g. max_age = \"400d\""]
