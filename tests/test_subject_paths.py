"""A subject path names how a row reaches its subject, and it must stay in one database.

Holds and erasure requests find a row's subject by joining along the path in one
database's SQL: a path into another database could never be joined, so holds
would protect nothing there.  It is refused, naming the table and the key.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV, HOLDS, LOGS_PURGE


def test_a_subject_path_into_another_database_is_refused_and_nothing_runs(sqlite_shop, tmp_path):
    crm = tmp_path / "crm.db"
    engine = sa.create_engine(f"sqlite:///{crm}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO users (id) VALUES (1)")
        conn.exec_driver_sql("CREATE TABLE holds (id INTEGER PRIMARY KEY, user_id INTEGER, released_at TIMESTAMP)")
        conn.exec_driver_sql("INSERT INTO holds (id, user_id) VALUES (1, 1)")
    engine.dispose()
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    before = sqlite_shop.dump()
    # contact 1 is held in the CRM; the shop's log rows name that contact through user_id,
    # but no SQL of the shop database can join the CRM's register
    policy = sqlite_shop.policy(LOGS_PURGE + f"""
        [databases.crm]
        url = "sqlite:///{crm}"

        [subjects.contact]
        table = "crm.users"
        key = "id"

        [[holds]]
        name = "crm-litigation"
        table = "crm.holds"
        subject = "contact"
        subject_column = "user_id"
        active_where = {{ released_at = {{ is_null = true }} }}

        [tables."shop.logs"]
        subject_path = ["user_id -> crm.users.id"]
        """)
    for verb in ("check", "run"):
        result = CliRunner().invoke(cli, ["--config", policy, verb], env=HASH_ENV)
        assert result.exit_code == 2, result.output
        assert "[tables.\"shop.logs\"] key 'subject_path'" in result.output
        assert "another database" in result.output
    assert sqlite_shop.dump() == before


def test_a_subject_path_within_the_database_protects_the_held_row(sqlite_shop):
    sqlite_shop.user(1)
    sqlite_shop.user(2)
    sqlite_shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)),
                       dict(id=2, user_id=2, ip="10.0.0.2", created_at=datetime(2020, 1, 1)))
    sqlite_shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    policy = sqlite_shop.policy(LOGS_PURGE + HOLDS + """
        [tables."shop.logs"]
        subject_path = ["user_id -> users.id"]
        """)
    report = sqlite_shop.run(policy, now=datetime(2025, 1, 1))
    assert report.exit_code == 0
    assert sqlite_shop.ids("logs") == [1]
