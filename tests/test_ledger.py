"""The erasure ledger: one entry per erased subject, a keyed hash and never the key, with gone_by."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from retention.audit import keyed
from retention.requests.commands import file_request, list_requests
from tests.runkit import state_url_of
from tests.shopkit import HASH_ENV
from tests.test_requests import POLICY, T0, _fill

BACKUPS = """
[[backups]]
name = "nightly"
location = "{location}"
pattern = "shop-{{timestamp}}.dump"
keep_daily = 7
{max_age}
"""


def _backups(tmp_path, days: int) -> str:
    where = tmp_path / "backups"
    where.mkdir(exist_ok=True)
    for d in range(days):
        moment = T0 - timedelta(days=d + 1)
        (where / f"shop-{moment:%Y%m%dT%H%M%SZ}.dump").write_text("x")
    return str(where)


def _ledger(policy: str) -> list[dict]:
    engine = sa.create_engine(state_url_of(policy))
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM retention_ledger ORDER BY id"))]
    finally:
        engine.dispose()


def test_one_entry_per_erased_subject_with_a_keyed_hash_and_gone_by(shop, tmp_path):
    _fill(shop)
    location = _backups(tmp_path, 3)
    policy = shop.policy(POLICY + BACKUPS.format(location=location, max_age='max_age = "400d"'))
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    file_request(policy, "customer:5", now=T0, env=HASH_ENV)
    report = shop.run(policy, now=T0)
    assert report.exit_code == 0, report.errors
    rows = _ledger(policy)
    assert [r["request"] for r in rows] == ["dsr#1", "dsr#2"]
    first = rows[0]
    key = HASH_ENV["RETENTION_HASH_KEY"].encode()
    assert first["subject_hash"] == keyed(key, 1) and first["status"] == "done"
    assert first["database"] == "shop" and first["subject"] == "customer" and first["action"] == "delete"
    assert '"shop.users": 1' in first["tables"] and '"shop.addresses": 1' in first["tables"]
    # the newest backup before the erasure is a day old; it is gone 400 days after it was taken
    assert first["gone_by"].startswith((T0 - timedelta(days=1) + timedelta(days=400)).date().isoformat())
    assert first["gone_by_reason"] is None
    # in the report and in `retention requests`
    assert [e["request"] for e in report.to_dict()["requests"]["ledger"]] == ["dsr#1", "dsr#2"]
    assert [e["subject_hash"] for e in list_requests(policy, now=T0, env=HASH_ENV)["ledger"]] == \
        [keyed(key, 1), keyed(key, 5)]


def test_no_max_age_means_no_provable_date_and_says_why(sqlite_shop, tmp_path):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY + BACKUPS.format(location=_backups(tmp_path, 2), max_age=""))
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    (entry,) = _ledger(policy)
    assert entry["gone_by"] is None and "no max_age" in entry["gone_by_reason"]


def test_without_backups_the_data_is_gone_when_erased(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    (entry,) = _ledger(policy)
    assert datetime.fromisoformat(entry["gone_by"]) == datetime.fromisoformat(entry["erased_at"]) == T0


def test_no_ledger_entry_no_erasure(sqlite_shop):
    """An erasure whose ledger entry cannot be written is rolled back, and the request waits."""
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    engine = sa.create_engine(state_url_of(policy))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TRIGGER no_ledger BEFORE INSERT ON retention_ledger "
                             "BEGIN SELECT RAISE(ABORT, 'ledger is read-only'); END"))
    engine.dispose()
    before = shop.dump()
    report = shop.run(policy, now=T0)
    assert report.exit_code == 1 and any("ledger" in e for e in report.errors), report.errors
    assert shop.dump() == before
    assert list_requests(policy, now=T0, env=HASH_ENV)["requests"][0]["status"] == "pending"


def test_without_a_key_nothing_is_erased(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env={})
    before = shop.dump()
    from retention import commands
    report = commands.run(policy, now=T0, env={})
    assert report.exit_code == 1 and any("RETENTION_HASH_KEY" in e for e in report.errors)
    assert shop.dump() == before and _ledger(policy) == []
