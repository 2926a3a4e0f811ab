"""A batch the database ends with a failure of the moment (deadlock, serialization) is tried again.

The failures are raised by the server itself (``RAISE ... USING ERRCODE``) inside
the batch's transaction, so the driver's real exception reaches the retry path.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from retention.execute import rules
from tests.shopkit import LOGS_PURGE, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)


def _failing_first(monkeypatch, sqlstate: str, times: int) -> list:
    """The first ``times`` batches fail with ``sqlstate``, raised by the server mid-batch."""
    original, failed = rules._batch, []

    def batch(conn, *args, **kw):
        if len(failed) < times:
            failed.append(sqlstate)
            conn.execute(sa.text(f"DO $$ BEGIN RAISE EXCEPTION 'staged' USING ERRCODE = '{sqlstate}'; END $$"))
        return original(conn, *args, **kw)

    monkeypatch.setattr(rules, "_batch", batch)
    return failed


def _logs(shop, n: int) -> None:
    shop.insert("logs", *[dict(id=i, user_id=None, ip="10.1.2.3", created_at=OLD) for i in range(1, n + 1)])


def test_a_deadlocked_batch_is_tried_again_and_the_run_ends_whole(pg_shop, monkeypatch):
    _logs(pg_shop, 30)
    failed = _failing_first(monkeypatch, "40P01", times=2)
    out = outcome(pg_shop.run(pg_shop.policy(LOGS_PURGE), now=NOW), "logs-purge")
    assert failed == ["40P01", "40P01"]
    assert (out.status, out.touch, out.remaining) == ("ok", 30, 0)
    assert pg_shop.count("logs") == 0


def test_a_batch_failing_every_attempt_fails_the_rule_with_nothing_half_done(pg_shop, monkeypatch):
    _logs(pg_shop, 30)
    failed = _failing_first(monkeypatch, "40001", times=rules.BATCH_ATTEMPTS)
    out = outcome(pg_shop.run(pg_shop.policy(LOGS_PURGE), now=NOW), "logs-purge")
    assert len(failed) == rules.BATCH_ATTEMPTS
    assert (out.status, out.touch) == ("failed", 0)
    assert pg_shop.count("logs") == 30


def test_a_failure_of_the_statement_is_not_tried_again(pg_shop, monkeypatch):
    _logs(pg_shop, 30)
    failed = _failing_first(monkeypatch, "22012", times=rules.BATCH_ATTEMPTS)
    out = outcome(pg_shop.run(pg_shop.policy(LOGS_PURGE), now=NOW), "logs-purge")
    assert failed == ["22012"]
    assert (out.status, out.touch) == ("failed", 0)
    assert pg_shop.count("logs") == 30
