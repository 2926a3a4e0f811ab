"""A trigger that silently keeps a row a request erases: reported as not done, never counted as erased.

SQLite: a BEFORE DELETE trigger with ``RAISE(IGNORE)``; PostgreSQL: a BEFORE
DELETE trigger returning NULL.  (MariaDB and MySQL have no silent cancel: a
trigger there can only fail the statement, which rolls the erasure back.)
The request stays ``partial``, the run exits 1, the ledger lists only the
rows that are gone and names the rows the database kept.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from retention.requests.commands import file_request, list_requests
from tests.shopkit import HASH_ENV
from tests.test_requests import POLICY, T0, _fill

KEEP_USER_1 = {
    "sqlite": ["CREATE TRIGGER keep_user BEFORE DELETE ON users WHEN old.id = 1 BEGIN SELECT RAISE(IGNORE); END"],
    "postgresql": ["CREATE FUNCTION keep_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
                   "CREATE TRIGGER keep_user BEFORE DELETE ON users FOR EACH ROW WHEN (OLD.id = 1) "
                   "EXECUTE FUNCTION keep_row()"],
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def trigger_shop(request):
    shop = request.getfixturevalue("sqlite_shop" if request.param == "sqlite" else "pg_shop")
    with shop.engine.begin() as conn:
        for statement in KEEP_USER_1[request.param]:
            conn.execute(sa.text(statement))
    return shop


def test_rows_a_trigger_keeps_leave_the_request_partial_and_the_ledger_honest(trigger_shop):
    shop = trigger_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    logs_before = shop.rows("logs")
    report = shop.run(policy, now=T0)
    assert report.exit_code == 1
    item = report.to_dict()["requests"]["items"][0]
    assert item["status"] == "partial"
    assert [(n["table"], n["reason"], n["rows"]) for n in item["not_done"]] == [("shop.users", "cancelled", 1)]
    # the user row is still there; its detach was undone with it, so nothing dangles; its address went first
    assert 1 in shop.ids("users") and shop.rows("logs") == logs_before and shop.dangling() == []
    assert 1 not in [a["user_id"] for a in shop.rows("addresses")]
    # the ledger claims only what is gone, and says what the database kept
    entry = report.ledger[0]
    assert entry["status"] == "partial" and entry["tables"] == {"shop.addresses": 1}
    assert {"kind": "not_done", "name": "cancelled", "table": "shop.users", "rows": 1, "until": None,
            "restricted": 0} in entry["protected"]
    assert "not done" in _text(report) and "incomplete" in _text(report)
    # the queue says partial: the next run tries again
    assert list_requests(policy, now=T0, env=HASH_ENV)["requests"][0]["status"] == "partial"
    again = shop.run(policy, now=T0)
    assert again.to_dict()["requests"]["items"][0]["status"] == "partial" and again.ledger == []
    # once the trigger is gone, the request completes
    with shop.engine.begin() as conn:
        conn.execute(sa.text("DROP TRIGGER keep_user" + (" ON users" if shop.engine.dialect.name == "postgresql"
                                                          else "")))
    done = shop.run(policy, now=T0)
    assert done.exit_code == 0 and done.to_dict()["requests"]["items"][0]["status"] == "done"
    assert 1 not in shop.ids("users") and shop.dangling() == []


def _text(report) -> str:
    from retention.report.text import render_text
    return render_text(report)
