"""A report's counts add up and the guard still bounds the run when a rule fails or when the
application changes rows between the counting and the batches.
"""

from __future__ import annotations

from datetime import datetime, timezone

from retention.events import RuleCounted
from tests.runkit import run_hearing
from tests.shopkit import HOLDS, LOGS_PURGE, USERS_PURGE, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def test_failed_run_counts_still_add_up(sqlite_shop):
    shop = sqlite_shop
    shop.insert("logs", *[dict(id=i, user_id=None, ip="10.1.2.3", created_at=OLD) for i in range(1, 5)])
    with shop.engine.begin() as conn:   # the app forbids deleting one log line
        conn.exec_driver_sql("CREATE TRIGGER logs_keep_3 BEFORE DELETE ON logs WHEN old.id = 3 "
                             "BEGIN SELECT RAISE(ABORT, 'kept'); END")
    report = shop.run(shop.policy(LOGS_PURGE, settings="batch_size = 1"), now=NOW)
    out = outcome(report, "logs-purge")
    assert out.status == "failed" and out.touch == 2 and out.remaining == 2
    assert out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def test_guard_still_bounds_the_run_when_rows_become_workable_after_counting(shop):
    for i in range(1, 6):
        shop.user(i)
        shop.insert("logs", *[dict(id=2 * i + j, user_id=i, ip="10.1.2.3", created_at=OLD) for j in (0, 1)])
        if i > 1:
            shop.insert("legal_holds", dict(id=i, user_id=i, released_at=None))
    policy = shop.policy(LOGS_PURGE + "max_rows = 2\n" + HOLDS)

    def app_releases_every_hold_once_counted(event):
        if isinstance(event, RuleCounted):
            with shop.engine.begin() as conn:
                conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2026, 6, 15)))

    out = outcome(run_hearing(policy, app_releases_every_hold_once_counted, now=NOW), "logs-purge")
    assert (out.due, out.protected_total) == (10, 8)
    assert shop.count("logs") >= 8, "max_rows = 2, yet the run deleted more"
    assert out.touch <= 2 and adds_up(out)


def test_counts_add_up_when_rows_stop_being_due_during_the_run(shop):
    for i in range(1, 5):
        shop.user(i, status="closed", closed_at=OLD)

    def app_reopens_two_accounts_once_counted(event):
        if isinstance(event, RuleCounted):
            with shop.engine.begin() as conn:
                users = shop.t("users")
                conn.execute(users.update().where(users.c.id > 2).values(status="active", closed_at=None))

    out = outcome(run_hearing(shop.policy(USERS_PURGE), app_reopens_two_accounts_once_counted, now=NOW),
                  "closed-users-purge")
    assert out.touch == 2 and shop.ids("users") == [3, 4]
    assert adds_up(out), (out.due, out.protected_total, out.touch, out.unchanged, out.remaining)
