"""MySQL / MariaDB: what the dialect module decides, and that the server honours it.

The scenario suite runs on MariaDB through ``backend``; these tests cover what
only this engine family has: the two URL forms, the session settings (time
zone, lock and statement timeouts), writes that may not read their own table
(MySQL), and the databases reflected besides the URL's.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention.config import Settings
from retention.dialects import impl_for
from retention.dialects.mysql import MariaDBImpl, MySQLImpl, session_settings, session_time_zone
from retention.schema import Catalog, make_engine
from tests.shopkit import HOLDS, Shop, outcome, protected

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url)   # no connection is made


# -- deciding, without a server ----------------------------------------------------------------

def test_both_url_forms_get_their_own_implementation():
    mysql, mariadb = impl_for(_engine("mysql+pymysql://u@h/db")), impl_for(_engine("mariadb+pymysql://u@h/db"))
    assert type(mysql) is MySQLImpl and type(mariadb) is MariaDBImpl
    assert mysql.supports_for_update and mariadb.supports_for_update
    # MySQL refuses error 1093 (an UPDATE/DELETE reading its own table); MariaDB allows it
    assert not mysql.writes_may_read_their_table and mariadb.writes_may_read_their_table


def test_session_settings_per_server():
    settings = Settings(timezone="Europe/Paris", lock_timeout="2s", statement_timeout="90s")
    assert dict(session_settings(settings, mariadb=True)) == {
        "time_zone": "Europe/Paris", "innodb_lock_wait_timeout": 2, "lock_wait_timeout": 2,
        "max_statement_time": 90.0}                        # MariaDB: seconds, every statement
    assert dict(session_settings(settings, mariadb=False)) == {
        "time_zone": "Europe/Paris", "innodb_lock_wait_timeout": 2, "lock_wait_timeout": 2,
        "max_execution_time": 90000}                       # MySQL: milliseconds, SELECT only
    assert session_settings(None, mariadb=True) == []


def test_utc_needs_no_time_zone_tables_and_other_zones_keep_their_name():
    assert session_time_zone("UTC") == "+00:00" and session_time_zone("Etc/UTC") == "+00:00"
    # a fixed offset would be wrong half the year: named zones stay named
    assert session_time_zone("Europe/Berlin") == "Europe/Berlin"


def test_strategy_building_blocks_compile_to_mysql_functions():
    dialect = _engine("mysql+pymysql://").dialect
    impl = MySQLImpl()
    s = sa.column("s", sa.String(50))
    sql = lambda e: str(e.compile(dialect=dialect))  # noqa: E731
    assert sql(impl.text_length(s)) == "char_length(s)"                 # LENGTH() counts bytes here
    assert "substring_index(s" in sql(impl.last_position(s, "@"))        # RTRIM takes no character set
    assert "COLLATE utf8mb4_bin REGEXP" in sql(impl.hex_token_match(s, "h_", 32))
    assert sql(impl.equal(s, sa.literal("x"))).count("AS BINARY") == 2
    d = sa.column("d", sa.Date)
    assert sql(impl.truncate_datetime(d, "month")).startswith("CAST(date_format(d, ")
    assert impl.truncate_datetime(s, "year") is None
    assert impl.floor_to_multiple(sa.column("f", sa.Float), 1) is None


# -- on the server -------------------------------------------------------------------------------

@pytest.fixture
def mysql_url(mariadb_url):
    """The same database through a ``mysql+pymysql://`` URL: the MySQL statement shapes on MariaDB."""
    return make_url(mariadb_url).set(drivername="mysql+pymysql").render_as_string(hide_password=False)


@pytest.mark.parametrize("form", ["mariadb", "mysql"])
def test_job_connections_carry_the_policy_settings(mariadb_url, mysql_url, form):
    url = mariadb_url if form == "mariadb" else mysql_url
    engine = make_engine(url, Settings(timezone="Asia/Shanghai", lock_timeout="3s", statement_timeout="45s"))
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT @@time_zone, @@innodb_lock_wait_timeout, @@lock_wait_timeout, "
                                       "@@max_statement_time, @@tx_isolation").one()
    finally:
        engine.dispose()
    # a mysql+pymysql:// URL that reaches MariaDB still gets MariaDB's variables (no unknown-variable error)
    assert tuple(row) == ("Asia/Shanghai", 3, 3, 45.0, "READ-COMMITTED")


def test_text_equality_is_exact_where_the_collation_is_not(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    impl = impl_for(engine)
    a, b = sa.literal("Deleted User", sa.String), sa.literal("deleted user ", sa.String)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(a == b)).scalar() == 1        # the collation: case and pad blind
            assert conn.execute(sa.select(impl.equal(a, b))).scalar() == 0
            assert conn.execute(sa.select(impl.equal(a, sa.literal("Deleted User", sa.String)))).scalar() == 1
    finally:
        engine.dispose()


def test_a_timestamp_clock_is_read_in_the_policy_time_zone(shop_mariadb):
    shop = shop_mariadb
    with shop.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE events (id integer PRIMARY KEY, happened_at TIMESTAMP NULL)")
        conn.exec_driver_sql("SET time_zone = '+00:00'")
        conn.exec_driver_sql("INSERT INTO events VALUES (1, '2026-01-01 00:00:00')")   # midnight UTC
    policy = shop.policy("""
    [[rules]]
    name = "events-1d"
    table = "shop.events"
    clock = "happened_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """, settings='timezone = "Asia/Shanghai"')
    due = lambda now: outcome(shop.run(policy, dry_run=True, now=now), "events-1d").due  # noqa: E731
    # TIMESTAMP values are instants: the server reads the job's naive Shanghai cutoff in the session zone
    assert due(datetime(2026, 1, 2, 0, 0, tzinfo=UTC)) == 1
    assert due(datetime(2026, 1, 1, 23, 59, 59, tzinfo=UTC)) == 0


@pytest.fixture
def shop_mariadb(mariadb_url, tmp_path):
    s = Shop(mariadb_url, tmp_path)
    yield s
    s.close()


def test_a_lock_held_longer_than_lock_timeout_fails_its_rule_and_the_others_run(shop_mariadb):
    shop = shop_mariadb
    shop.user(1)
    old = datetime(2020, 1, 1)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=old))
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Main St"))
    shop.insert("merchants", dict(id=1, name="M", closed_at=old))
    policy = shop.policy("""
    [[rules]]
    name = "logs"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0

    [[rules]]
    name = "merchants"
    table = "shop.merchants"
    clock = "closed_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """, settings='lock_timeout = "1s"')
    app = shop.engine.connect()
    try:
        app.exec_driver_sql("BEGIN")
        app.exec_driver_sql("SELECT id FROM logs WHERE id = 1 FOR UPDATE")    # the application holds the row
        report = shop.run(policy, now=NOW)
    finally:
        app.rollback()
        app.close()
    logs, merchants = outcome(report, "logs"), outcome(report, "merchants")
    assert logs.status == "failed" and "Lock wait timeout" in logs.error
    assert logs.touch == 0 and shop.ids("logs") == [1]
    assert merchants.status == "ok" and merchants.touch == 1
    assert report.exit_code == 1


def test_a_statement_over_statement_timeout_fails_its_rule_and_the_others_run(shop_mariadb):
    shop = shop_mariadb
    shop.user(1)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    shop.insert("merchants", dict(id=1, name="M", closed_at=datetime(2020, 1, 1)))
    policy = shop.policy("""
    [[rules]]
    name = "slow"
    table = "shop.logs"
    clock = "created_at"
    after = "1d"
    action = "delete"
    where_sql = "SLEEP(1.2) = 0"
    max_fraction = 1.0

    [[rules]]
    name = "merchants"
    table = "shop.merchants"
    clock = "closed_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
    """, settings='statement_timeout = "1s"')
    report = shop.run(policy, now=NOW)
    slow = outcome(report, "slow")
    assert slow.status == "failed" and "max_statement_time" in slow.error
    assert shop.ids("logs") == [1]
    assert outcome(report, "merchants").touch == 1


# -- MySQL's statement shapes (error 1093), run on MariaDB through a mysql+pymysql:// URL ----------

RELEASED_HOLDS = HOLDS + """
[[rules]]
name = "released-holds"
table = "shop.legal_holds"
clock = "released_at"
after = "1y"
action = "delete"
max_fraction = 1.0

[[rules]]
name = "restrict-closed"
table = "shop.users"
clock = "closed_at"
after = "1d"
action = "restrict"
restrict_column = "restricted_at"
max_fraction = 1.0

[[rules]]
name = "anonymize-closed"
table = "shop.users"
clock = "closed_at"
after = "1d"
action = "anonymize"
columns.name = { strategy = "constant", value = "deleted user" }
columns.phone = "mask"
max_fraction = 1.0
"""


def _writes(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if s.startswith((f"DELETE FROM {table} ", f"UPDATE {table} "))]


@pytest.mark.parametrize("form", ["mariadb", "mysql"])
def test_writes_never_read_their_own_table_under_the_mysql_url(mariadb_url, mysql_url, tmp_path, form):
    # the hold register's own rows: a released hold of a subject still held by another
    # hold is protected, so the DELETE's predicate reads legal_holds itself
    shop = Shop(mariadb_url if form == "mariadb" else mysql_url, tmp_path)
    try:
        closed = datetime(2020, 1, 1)
        shop.user(1, closed_at=closed)
        shop.user(2, closed_at=closed)
        shop.insert("legal_holds", dict(id=1, user_id=1, released_at=datetime(2021, 1, 1)),
                    dict(id=2, user_id=1, released_at=None),
                    dict(id=3, user_id=2, released_at=datetime(2021, 1, 1)))
        policy = shop.policy(RELEASED_HOLDS)
        seen: list[str] = []

        def record(conn, cursor, statement, *_):
            seen.append(" ".join(statement.split()))

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
        try:
            report = shop.run(policy, now=NOW)
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
        holds, restrict, anon = (outcome(report, r) for r in ("released-holds", "restrict-closed",
                                                              "anonymize-closed"))
        assert (holds.status, holds.touch, protected(holds)) == ("ok", 1, {"hold:litigation": 1})
        assert shop.ids("legal_holds") == [1, 2]
        assert (restrict.touch, protected(restrict)) == (1, {"hold:litigation": 1})
        assert (anon.touch, protected(anon)) == (1, {"hold:litigation": 1})
        users = {r["id"]: r for r in shop.rows("users")}
        assert users[1]["name"] == "User 1" and users[1]["restricted_at"] is None
        assert users[2]["name"] == "deleted user" and users[2]["phone"] == "********0002"
        assert users[2]["restricted_at"] is not None
        writes = _writes(seen, "legal_holds") + _writes(seen, "users")
        assert writes
        if form == "mysql":
            # every write names its rows by key, read and locked first: nothing MySQL would refuse
            assert all(" FROM legal_holds" not in w.split(" WHERE ", 1)[1] for w in _writes(seen, "legal_holds"))
            assert all(" WHERE users.id IN (" in w for w in _writes(seen, "users"))
            assert any(s.startswith("SELECT legal_holds.id FROM legal_holds") and s.endswith("FOR UPDATE")
                       for s in seen)
    finally:
        shop.close()


# -- other databases on the same server -----------------------------------------------------------

def test_children_in_another_database_block_and_unrelated_databases_are_not_reflected(
        mariadb_server, shop_mariadb):
    shop = shop_mariadb
    db = make_url(shop.url).database
    billing, unrelated = f"{db[:40]}_billing", f"{db[:40]}_unrelated"
    mariadb_server.create_database(billing)
    mariadb_server.create_database(unrelated)
    try:
        shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
        shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
        with shop.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE `{billing}`.invoices (id integer PRIMARY KEY, user_id integer, "
                                 f"FOREIGN KEY (user_id) REFERENCES `{db}`.users (id) ON DELETE CASCADE)")
            conn.exec_driver_sql(f"INSERT INTO `{billing}`.invoices VALUES (10, 1)")
            conn.exec_driver_sql(f"CREATE TABLE `{unrelated}`.notes (id integer PRIMARY KEY)")
        engine = sa.create_engine(shop.url)
        try:
            keys = set(Catalog({"shop": engine}).tables)
        finally:
            engine.dispose()
        assert f"shop.{billing}.invoices" in keys
        assert not any(unrelated in k for k in keys)
        policy = shop.policy("""
        [[rules]]
        name = "closed-accounts"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "delete"
        where = { status = "closed" }
        max_fraction = 1.0
        """)
        out = outcome(shop.run(policy, now=NOW), "closed-accounts")
        # never left to the database's ON DELETE CASCADE unseen: the invoice blocks its user
        assert protected(out) == {f"children:shop.{billing}.invoices": 1}
        assert shop.ids("users") == [1]
        with shop.engine.connect() as conn:
            assert conn.exec_driver_sql(f"SELECT id FROM `{billing}`.invoices").scalars().all() == [10]
    finally:
        mariadb_server.drop_database(billing)
        mariadb_server.drop_database(unrelated)


def test_sql_shows_the_keyed_writes_the_mysql_url_runs(mysql_url, tmp_path):
    shop = Shop(mysql_url, tmp_path)
    try:
        # --sql runs each rule's first batch and rolls it back: every rule needs a due row
        shop.user(1, closed_at=datetime(2020, 1, 1))
        shop.insert("legal_holds", dict(id=1, user_id=1, released_at=datetime(2021, 1, 1)))
        before = {t: shop.rows(t) for t in ("users", "legal_holds")}
        report = shop.run(shop.policy(RELEASED_HOLDS), dry_run=True, now=NOW, show_sql=True)
        assert {t: shop.rows(t) for t in before} == before
    finally:
        shop.close()
    for rule in ("released-holds", "restrict-closed", "anonymize-closed"):
        # each statement as the database received it, then its values on a "-- values:" line
        statements = [s.split("\n-- values:")[0].rstrip(";") for s in outcome(report, rule).statements]
        locks = [i for i, s in enumerate(statements) if s.endswith("FOR UPDATE")]
        writes = [i for i, s in enumerate(statements) if s.startswith(("UPDATE", "DELETE"))]
        assert locks and writes and locks[0] < writes[-1], statements
        # the write names the locked keys and reads no table (MySQL's error 1093)
        where = statements[writes[-1]].split(" WHERE ", 1)[1]
        assert where.split(" IN (")[0] in ("legal_holds.id", "users.id") and "SELECT" not in where, statements
