"""The job holds at most one batch of keys: peak memory does not grow with the row count."""

from __future__ import annotations

import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy.engine import make_url

from retention import commands
from tests.shopkit import Shop

NOW = datetime(2026, 6, 15, tzinfo=timezone.utc)

POLICY = """
[[rules]]
name = "logs"
table = "shop.logs"
clock = "created_at"
after = "30d"
action = "delete"
max_fraction = 1.0
"""


def _peak_for(tmp_path, rows: int, url: str | None = None, batch: int = 1000) -> tuple[int, int]:
    shop = Shop(url or f"sqlite:///{tmp_path}/m{rows}.db", tmp_path)
    shop.user(1)
    old = datetime(2025, 1, 1)
    with shop.engine.begin() as conn:
        logs = shop.t("logs")
        for start in range(1, rows + 1, 20000):
            conn.execute(logs.insert(), [dict(id=i, user_id=1, ip="10.0.0.1", created_at=old + timedelta(seconds=i))
                                         for i in range(start, min(start + 20000, rows + 1))])
    policy = shop.policy(POLICY, settings=f"batch_size = {batch}\nmax_batch_seconds = 60", name=f"p{rows}.toml")
    # warm up the statement caches and imports once, on a rule with nothing to do
    commands.run(policy, now=datetime(2025, 1, 2, tzinfo=timezone.utc), env={})
    tracemalloc.start()
    try:
        report = commands.run(policy, now=NOW, env={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    out = report.rules[0]
    assert out.status == "ok" and out.touch == rows and out.batches >= rows // batch
    assert shop.count("logs") == 0
    shop.close()
    return peak, out.batches


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_number_of_rows_deleted(tmp_path):
    small_peak, small_batches = _peak_for(tmp_path, 50_000)
    large_peak, large_batches = _peak_for(tmp_path, 200_000)
    assert large_batches >= 4 * small_batches - 4
    # four times the rows (and batches) in the same memory, give or take allocator noise;
    # holding every key would cost ~28 bytes x 150k extra keys = ~4 MB more
    assert large_peak < small_peak * 1.25 + 256 * 1024, (small_peak, large_peak)
    assert large_peak < 8 * 1024 * 1024


@pytest.mark.slow
def test_peak_memory_on_mysql_statement_shapes_holds_one_batch_of_keys(mariadb_url, tmp_path):
    # through a mysql+pymysql:// URL every delete reads and locks its batch's keys first
    # (MySQL's error 1093): those keys, never all of them, are what the job holds
    url = make_url(mariadb_url).set(drivername="mysql+pymysql").render_as_string(hide_password=False)
    small_peak, small_batches = _peak_for(tmp_path, 2_000, url, batch=100)
    large_peak, large_batches = _peak_for(tmp_path, 8_000, url, batch=100)
    assert large_batches >= 4 * small_batches - 4
    assert large_peak < small_peak * 1.25 + 256 * 1024, (small_peak, large_peak)
