"""``[[backups]]`` validation: each problem is exit 2 naming the file, the backup set and the key."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from retention.cli import cli
from retention.config import load_config
from retention.errors import ConfigError
from tests.backupkit import policy


def refused(tmp_path, **keys) -> str:
    path = policy(tmp_path, **keys)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert e.value.exit_code == 2
    return str(e.value)


def test_the_empty_policy_is_refused_never_remove_everything(tmp_path):
    message = refused(tmp_path)
    assert "policies.toml: backup 'nightly' key 'keep_*':" in message and "remove every backup" in message


def test_zero_counts_and_durations_are_still_the_empty_policy(tmp_path):
    assert "key 'keep_*'" in refused(tmp_path, keep_daily=0, keep_last=0, keep_within="0d")


def test_the_command_exits_2_and_removes_nothing(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "shop-20260101T000000Z.dump").write_text("x")
    result = CliRunner().invoke(cli, ["backups", "rotate", "-c", str(policy(tmp_path))])
    assert result.exit_code == 2 and "backup 'nightly' key 'keep_*'" in result.output
    assert (tmp_path / "store" / "shop-20260101T000000Z.dump").exists()


@pytest.mark.parametrize("key", ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly",
                                 "keep_yearly"])
def test_negative_counts_other_than_minus_one_are_refused(tmp_path, key):
    message = refused(tmp_path, **{"keep_within": "7d", key: -2})
    assert f"backup 'nightly' key '{key}':" in message and "-1 for all" in message


def test_minus_one_means_all(tmp_path):
    assert load_config(policy(tmp_path, keep_last=-1)).model.backups[0].keep_last == -1


@pytest.mark.parametrize("keys, key, text", [
    ({"pattern": "shop-{timestamp}-{timestamp}.dump"}, "pattern", "at most one"),
    ({"pattern": "shop-{time}.dump"}, "pattern", "only placeholder"),
    ({"pattern": "shop-{timestamp:%H%M}.dump"}, "pattern", "year and the day"),
    ({"pattern": "shop-{timestamp:%Y%m%d%Q}.dump"}, "pattern", "'%Q'"),
    ({"pattern": "dumps/shop-{timestamp}.dump"}, "pattern", "no '/'"),
    ({"location": "ftp://host/backups"}, "location", "directory or s3://"),
    ({"location": "s3:///prefix"}, "location", "names no bucket"),
    ({"keep_tags": [["monthly"]]}, "keep_tags", "needs an s3:// location"),
    ({"keep_tags": [[]], "location": "s3://b/p"}, "keep_tags", "empty tag set"),
    ({"max_age": "0d"}, "max_age", "longer than zero"),
    ({"max_gap": "0h"}, "max_gap", "longer than zero"),
    ({"max_gap": "3m"}, "max_gap", "ambiguous"),
    ({"anchor": "oldest"}, "anchor", ""),
    ({"keep_within_weekly": "soon"}, "keep_within_weekly", "not a duration"),
])
def test_each_bad_key_is_named(tmp_path, keys, key, text):
    message = refused(tmp_path, keep_daily=7, **keys)
    assert f"backup 'nightly' key '{key}':" in message and text in message


def test_a_full_set_is_accepted(tmp_path):
    cfg = load_config(policy(tmp_path, location="s3://bucket/shop", pattern="shop-{timestamp:%Y%m%d}.dump",
                             keep_last=3, keep_hourly=0, keep_daily=7, keep_weekly=4, keep_monthly=12,
                             keep_yearly=-1, keep_within="7d", keep_within_daily="1mo", keep_tags=[["keep"]],
                             max_age="400d", max_gap="36h", anchor="latest")).model.backups[0]
    assert cfg.max_gap.seconds == 36 * 3600 and cfg.keep_tags == [["keep"]]
