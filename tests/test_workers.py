"""``retention run --workers N``: one rule's batches on N connections, over disjoint key ranges.

The guarantees are a single worker's: holds re-checked in each write, cascades
whole, counts exact, never more touched than counted and guarded, every batch
in the audit trail.  SQLite writes one transaction at a time: it runs with one.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from structlog.testing import capture_logs

from retention.cli import cli
from retention.events import RuleCounted
from tests.runkit import audit_rows, run_hearing, start, state_url_of, wait_for
from tests.shopkit import HASH_ENV, HOLDS, LOGS_PURGE, cascades, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)
USERS_PURGE = """
[[rules]]
name = "closed-users-purge"
table = "shop.users"
clock = "closed_at"
after = "1d"
action = "delete"
max_fraction = 1.0

[tables."shop.addresses"]
on_parent_delete = "delete"
"""


def concurrent(shop) -> None:
    if shop.engine.dialect.name == "sqlite":
        pytest.skip("SQLite writes one transaction at a time: --workers runs with 1 there (tested below)")


def held_logs(shop, users: int, per_user: int) -> None:
    """``users`` users with ``per_user`` old logs each; every third user under an active hold."""
    for u in range(1, users + 1):
        shop.user(u)
        if u % 3 == 0:
            shop.insert("legal_holds", dict(id=u, user_id=u, released_at=None))
    shop.insert("logs", *[dict(id=u * per_user + j, user_id=u, ip="10.1.2.3", created_at=OLD)
                          for u in range(1, users + 1) for j in range(per_user)])


def test_workers_delete_exactly_what_one_worker_would(shop):
    concurrent(shop)
    held_logs(shop, 30, 10)
    report = shop.run(shop.policy(LOGS_PURGE + HOLDS, settings="batch_size = 7"), now=NOW, workers=3)
    out = outcome(report, "logs-purge")
    assert (out.status, out.due, out.protected_total, out.touch) == ("ok", 300, 100, 200)
    assert out.batches >= 200 // 7 and out.remaining == 0
    assert sorted({r["user_id"] for r in shop.rows("logs")}) == list(range(3, 31, 3))


def test_workers_keep_cascades_whole(shop):
    concurrent(shop)
    for i in range(1, 61):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
    out = outcome(shop.run(shop.policy(USERS_PURGE, settings="batch_size = 4"), now=NOW, workers=4),
                  "closed-users-purge")
    assert (out.status, out.touch) == ("ok", 60)
    assert cascades(out) == {"shop.addresses:delete": 60}
    assert shop.ids("users") == [] and shop.ids("addresses") == [] and shop.dangling() == []


def test_workers_never_touch_more_than_counted(shop):
    # counted: the 10 logs of unheld users; then every hold is released. However the workers
    # share the ranges, together they stop at what was counted
    concurrent(shop)
    held_logs(shop, 30, 1)

    def app_releases_every_hold_once_counted(event):
        if isinstance(event, RuleCounted):
            with shop.engine.begin() as conn:
                conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2026, 6, 15)))

    out = outcome(run_hearing(shop.policy(LOGS_PURGE + HOLDS, settings="batch_size = 3"),
                              app_releases_every_hold_once_counted, now=NOW, workers=3), "logs-purge")
    assert (out.status, out.touch, out.protected_total) == ("ok", 20, 10)
    assert shop.count("logs") == 10


def test_workers_write_every_batch_to_the_audit_trail(shop, tmp_path):
    concurrent(shop)
    held_logs(shop, 12, 5)
    policy = shop.policy(LOGS_PURGE + HOLDS, settings="batch_size = 4")
    result = CliRunner().invoke(cli, ["--config", policy, "run", "--workers", "2", "--format", "json",
                                      "--now", NOW.isoformat()], env=HASH_ENV)
    assert result.exit_code == 0, result.output
    rule = json.loads(result.stdout)["rules"][0]
    assert rule["touch"] == 40
    verify = CliRunner().invoke(cli, ["--config", policy, "audit", "verify"], env=HASH_ENV)
    assert verify.exit_code == 0, verify.output


def test_sqlite_runs_with_one_worker_and_says_why(sqlite_shop):
    shop = sqlite_shop
    held_logs(shop, 6, 2)
    with capture_logs() as said:
        out = outcome(shop.run(shop.policy(LOGS_PURGE + HOLDS), now=NOW, workers=4), "logs-purge")
    assert (out.status, out.touch) == ("ok", 8)
    assert any(e.get("event") == "workers" and e.get("workers") == 1 and "one transaction at a time" in e["why"]
               for e in said)


def test_workers_must_be_at_least_one(shop):
    result = CliRunner().invoke(cli, ["--config", shop.policy(LOGS_PURGE), "run", "--workers", "0"], env=HASH_ENV)
    assert result.exit_code == 2


def test_sigterm_lets_each_worker_finish_its_batch_whole(pg_shop):
    shop = pg_shop
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=OLD) for i in range(1, 41)])
    policy = shop.policy(LOGS_PURGE, settings='batch_size = 2\nmax_batch_seconds = 1000\nlock_timeout = "60s"\n'
                                              'stop_timeout = "30s"')
    state = state_url_of(policy)
    blocker = shop.engine.connect()
    # the first batch takes keys 1-2; then each worker waits inside its next batch, on key 3 or key 5
    blocker.execute(sa.text("SELECT id FROM logs WHERE id IN (3, 5) FOR UPDATE"))
    proc = start("run", "-c", policy, "--workers", "2", "--now", NOW.isoformat(), "--format", "json")
    try:
        wait_for(lambda: _waiting(shop) == 2, what="both workers to wait inside a batch")
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        blocker.rollback()                        # both batches go on and commit whole
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        report = json.loads(out)
        assert report["interrupted"] == "SIGTERM"
        rule = report["rules"][0]
        assert rule["status"] == "interrupted" and rule["touch"] == 6
        assert shop.ids("logs") == list(range(7, 41))
        rows = audit_rows(state)
        committed = [json.loads(r["body"]) for r in rows if r["kind"] == "batch-committed"]
        assert sorted(b["touched"] for b in committed) == [2, 2, 2]
        assert [r["kind"] for r in rows].count("batch-intent") == 3
    finally:
        blocker.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _waiting(shop) -> int:
    with shop.engine.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock'")).scalar())
