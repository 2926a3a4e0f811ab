"""MariaDB/MySQL: a batch that waits longer than ``lock_timeout`` fails its rule whole.

InnoDB's lock wait timeout rolls back only the statement that waited
(``innodb_rollback_on_timeout`` is off by default), so the statements the
batch ran before it would stay in its transaction.  The batch must roll back
all of it: here the cascade has already deleted a user's addresses when the
user's own DELETE waits (a trigger of the application's updates a row
another connection holds) and times out.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.shopkit import LOGS_PURGE, Shop, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

POLICY = LOGS_PURGE + """
[[rules]]
name = "closed-accounts"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0

[tables."shop.addresses"]
on_parent_delete = "delete"

[tables."shop.logs"]
on_parent_delete = "detach"
"""


@pytest.fixture(params=["mariadb", "mysql"])
def shop(request, mariadb_url, tmp_path):
    url = mariadb_url if request.param == "mariadb" else \
        make_url(mariadb_url).set(drivername="mysql+pymysql").render_as_string(hide_password=False)
    s = Shop(url, tmp_path)
    with s.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE user_counters (id integer PRIMARY KEY, n integer NOT NULL)")
        conn.exec_driver_sql("INSERT INTO user_counters VALUES (1, 2)")
        conn.exec_driver_sql("CREATE TRIGGER users_count BEFORE DELETE ON users FOR EACH ROW "
                             "UPDATE user_counters SET n = n - 1 WHERE id = 1")
    yield s
    s.close()


def test_a_batch_that_times_out_midway_leaves_nothing_half_done(shop):
    shop.user(1, closed_at=OLD)
    shop.user(2, closed_at=OLD)
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Main St"), dict(id=2, user_id=2, line1="2 Main St"))
    shop.insert("logs", dict(id=1, user_id=None, ip="10.0.0.1", created_at=OLD))
    policy = shop.policy(POLICY, settings='lock_timeout = "1s"')
    before = shop.dump()
    app = shop.engine.connect()
    seen: list[str] = []

    def record(conn, cursor, statement, *_):
        seen.append(" ".join(statement.split()))

    try:
        app.exec_driver_sql("BEGIN")
        app.exec_driver_sql("SELECT n FROM user_counters WHERE id = 1 FOR UPDATE")   # the application holds it
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
        try:
            report = shop.run(policy, now=NOW)
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    finally:
        app.rollback()
        app.close()
    users = outcome(report, "closed-accounts")
    assert users.status == "failed" and "Lock wait timeout" in users.error
    assert users.touch == 0 and report.exit_code == 1
    # the cascade's DELETE of the addresses ran and succeeded before the user's DELETE waited
    assert any(s.startswith("DELETE FROM addresses") for s in seen)
    after = shop.dump()
    assert after["users"] == before["users"] and after["addresses"] == before["addresses"]
    assert shop.dangling() == []
    # the other rule ran
    assert outcome(report, "logs-purge").touch == 1 and shop.ids("logs") == []
    # and with the row free, the next run does the whole batch
    again = outcome(shop.run(policy, now=NOW), "closed-accounts")
    assert (again.status, again.touch) == ("ok", 2)
    assert shop.ids("users") == [] and shop.ids("addresses") == []
    with shop.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT n FROM user_counters").scalar() == 0
