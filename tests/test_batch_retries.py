"""A batch the database ends with a failure of the moment (deadlock, serialization) is tried again.

The failures are raised by the server itself (``RAISE ... USING ERRCODE``) inside
the batch's transaction, so the driver's real exception reaches the retry path.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from retention.execute import rules
from tests.shopkit import LOGS_PURGE, USERS_PURGE, outcome

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


def test_a_deadlock_in_a_mariadb_cascade_is_retried_as_itself(mariadb_shop, monkeypatch):
    """InnoDB ends the whole transaction on a deadlock, savepoints included: the batch must reach
    the retry with the deadlock (1213), not fail on a savepoint that no longer exists."""
    from retention.execute import batch as batches
    shop = mariadb_shop
    shop.user(1, closed_at=OLD)
    shop.user(2, closed_at=OLD)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.1.2.3", created_at=OLD))
    original, staged = batches._cascade, []

    def cascade(conn, *args, **kw):
        if not staged:
            staged.append(1213)
            # what InnoDB does to the victim of a deadlock: the transaction is rolled back, and then
            # the statement fails with 1213
            conn.exec_driver_sql("ROLLBACK")
            conn.exec_driver_sql("BEGIN NOT ATOMIC SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, "
                                 "MESSAGE_TEXT = 'Deadlock found when trying to get lock (staged)'; END")
        return original(conn, *args, **kw)

    monkeypatch.setattr(batches, "_cascade", cascade)
    retried, log = [], rules.log

    class Log:
        """The rules' logger, keeping what each retry said."""

        def warning(self, event, **kw):
            if event == "batch_retry":
                retried.append(kw["error"])
            return log.warning(event, **kw)

        def __getattr__(self, name):
            return getattr(log, name)

    monkeypatch.setattr(rules, "log", Log())
    policy = shop.policy(USERS_PURGE + '\n[tables."shop.logs"]\non_parent_delete = "delete"\n')
    out = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert staged == [1213]
    assert (out.status, out.touch, out.error) == ("ok", 2, None)
    assert len(retried) == 1 and "Deadlock found" in retried[0] and "SAVEPOINT" not in retried[0]
    assert shop.count("users") == 0 and shop.count("logs") == 0
