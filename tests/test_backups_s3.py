"""Backups in S3-compatible object storage, against moto's in-process server on 127.0.0.1."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone

import pytest

from retention import commands
from retention.errors import ConfigError
from tests.backupkit import daily, policy
from tests.s3kit import keys, moto_endpoint, put, s3, s3_bucket  # noqa: F401 (fixtures)

UTC = timezone.utc
END = datetime(2026, 1, 31, 2, 0, tzinfo=UTC)


def stamp(t: datetime) -> str:
    return t.strftime("%Y%m%dT%H%M%SZ")


def test_rotation_removes_objects_under_the_prefix_only(tmp_path, s3, s3_bucket):
    for t in daily(END, 40):
        put(s3, s3_bucket, f"shop/shop-{stamp(t)}.dump")
    put(s3, s3_bucket, "shop/README")                                  # not a backup: no match
    put(s3, s3_bucket, "shop/old/shop-20200101T000000Z.dump")          # below the prefix: not listed
    put(s3, s3_bucket, "other/shop-20200101T000000Z.dump")             # another prefix
    path = policy(tmp_path, location=f"s3://{s3_bucket}/shop", keep_daily=7, keep_weekly=4, max_age="30d")
    dry = commands.backups_rotate(str(path), dry_run=True, now=END + timedelta(hours=1))
    (result,) = dry.to_dict()["backups"]
    assert result["location"] == f"s3://{s3_bucket}/shop" and len(result["keep"]) == 9
    assert len(keys(s3, s3_bucket)) == 43
    report = commands.backups_rotate(str(path), now=END + timedelta(hours=1))
    assert report.exit_code == 0
    assert keys(s3, s3_bucket) == sorted(
        ["shop/README", "shop/old/shop-20200101T000000Z.dump", "other/shop-20200101T000000Z.dump"]
        + [f"shop/{k['name']}" for k in result["keep"]])


def test_object_tags_keep_backups_by_key_or_key_value(tmp_path, s3, s3_bucket):
    times = daily(END, 10)
    for i, t in enumerate(times):
        tags = {"legal": "case-17"} if i == 6 else {"monthly": ""} if i == 8 else {}
        put(s3, s3_bucket, f"shop-{stamp(t)}.dump", tags)
    path = policy(tmp_path, location=f"s3://{s3_bucket}", keep_last=2,
                  keep_tags=[["legal=case-17"], ["monthly"], ["legal=case-99"]])
    report = commands.backups_rotate(str(path), now=END)
    entries = report.to_dict()["backups"][0]["keep"]
    assert [(e["name"], e["reasons"]) for e in entries] == [
        (f"shop-{stamp(times[0])}.dump", ["last snapshot"]),
        (f"shop-{stamp(times[1])}.dump", ["last snapshot"]),
        (f"shop-{stamp(times[6])}.dump", ["has tags [legal=case-17]"]),
        (f"shop-{stamp(times[8])}.dump", ["has tags [monthly]"]),
    ]
    assert keys(s3, s3_bucket) == sorted(e["name"] for e in entries)


def test_a_missing_bucket_fails_the_set_with_exit_1(tmp_path, s3):
    path = policy(tmp_path, location="s3://no-such-bucket/shop", keep_daily=7)
    report = commands.backups_rotate(str(path), now=END)
    assert report.exit_code == 1
    assert report.sets[0].status == "failed" and "NoSuchBucket" in report.sets[0].message


def test_without_boto3_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)          # as if the extra were not installed
    path = policy(tmp_path, location="s3://bucket/shop", keep_daily=7)
    with pytest.raises(ConfigError) as e:
        commands.backups_rotate(str(path), now=END)
    assert e.value.exit_code == 2
    assert "backup 'nightly' key 'location'" in str(e.value) and "pip install 'retention[s3]'" in str(e.value)
