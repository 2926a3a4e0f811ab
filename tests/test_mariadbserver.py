"""The MariaDB fixtures give working, empty, isolated databases on a loopback-only server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import conftest
from retention.config import Settings
from retention.schema import make_engine
from mariadbserver import ExistingMariaDB, MariaDBServer, MariaDBUnavailable, find_binaries


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_mariadb_url_is_a_working_empty_database(mariadb_url):
    assert make_url(mariadb_url).get_backend_name() == "mariadb"
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("SELECT DATABASE()").scalar() == make_url(mariadb_url).database
            assert _tables(mariadb_url) == set()
            conn.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY, note varchar(40))")
            conn.exec_driver_sql("INSERT INTO t VALUES (1, 'é ünïcode 日本 🙂')")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT note FROM t").scalar() == "é ünïcode 日本 🙂"
            assert "MariaDB" in conn.exec_driver_sql("SELECT VERSION()").scalar()
    finally:
        engine.dispose()


def test_databases_are_isolated(mariadb_server):
    a = mariadb_server.create_database("t_isolation_a_" + os.urandom(4).hex())
    b = mariadb_server.create_database("t_isolation_b_" + os.urandom(4).hex())
    try:
        engine = sa.create_engine(a)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE only_in_a (id integer)")
        engine.dispose()
        assert _tables(a) == {"only_in_a"}
        assert _tables(b) == set()
    finally:
        mariadb_server.drop_database(make_url(a).database)
        mariadb_server.drop_database(make_url(b).database)


def test_dropped_database_is_gone_even_with_open_connections(mariadb_server):
    name = "t_drop_" + os.urandom(4).hex()
    url = mariadb_server.create_database(name)
    engine = sa.create_engine(url)
    conn = engine.connect()   # left open on purpose: the drop must not hang or fail
    try:
        conn.exec_driver_sql("CREATE TABLE t (id integer)")
        mariadb_server.drop_database(name)
    finally:
        conn.invalidate()
        engine.dispose()
    with pytest.raises(sa.exc.OperationalError):
        _tables(url)


def test_mariadb_url_tests_carry_the_mariadb_marker(request, mariadb_url):
    assert request.node.get_closest_marker("mariadb") is not None
    assert request.node.get_closest_marker("postgresql") is None


def test_named_time_zones_resolve(mariadb_url):
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            shanghai = conn.exec_driver_sql(
                "SELECT CONVERT_TZ('2026-01-01 00:00:00', 'UTC', 'Asia/Shanghai')").scalar()
            berlin_summer = conn.exec_driver_sql(
                "SELECT CONVERT_TZ('2026-07-01 00:00:00', 'UTC', 'Europe/Berlin')").scalar()
    finally:
        engine.dispose()
    assert str(shanghai) == "2026-01-01 08:00:00"
    assert str(berlin_summer) == "2026-07-01 02:00:00"     # daylight saving time, not a fixed offset


def test_server_listens_on_loopback_only_runs_unprivileged_with_durability_off(mariadb_server, mariadb_url):
    if isinstance(mariadb_server, ExistingMariaDB):
        pytest.skip("settings are only ours to check on the throwaway server")
    engine = sa.create_engine(mariadb_url)
    try:
        with engine.connect() as conn:
            var = lambda name: conn.exec_driver_sql(f"SELECT @@{name}").scalar()  # noqa: E731
            assert var("bind_address") == "127.0.0.1"
            assert var("port") == mariadb_server.port
            assert var("socket") == str(mariadb_server.socket)
            assert var("datadir").rstrip("/") == str(mariadb_server.datadir)
            assert int(var("innodb_flush_log_at_trx_commit")) == 0
            assert int(var("log_bin")) == 0
    finally:
        engine.dispose()
    pid = int((mariadb_server.tmpdir / "mariadbd.pid").read_text())
    uid = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("Uid:"))
    assert uid == os.geteuid() if os.geteuid() != 0 else uid != 0


def test_a_server_started_and_stopped_leaves_nothing_behind():
    # without time-zone tables, as many servers are: the job says what is missing
    try:
        server = MariaDBServer(time_zones=False).start()
    except MariaDBUnavailable as exc:
        conftest._unavailable(str(exc), "MariaDB")
    tmpdir = server.tmpdir
    pid = int((tmpdir / "mariadbd.pid").read_text())
    try:
        url = server.create_database("t_lifecycle")
        assert _tables(url) == set()
        utc = make_engine(url, Settings(timezone="UTC"))
        shanghai = make_engine(url, Settings(timezone="Asia/Shanghai"))
        try:
            with utc.connect() as conn:       # UTC is an offset: no tables needed
                assert conn.exec_driver_sql("SELECT @@time_zone").scalar() == "+00:00"
            with pytest.raises(sa.exc.OperationalError, match="no time zone named Asia/Shanghai: load its "
                                                             "time-zone tables"):
                shanghai.connect()
        finally:
            utc.dispose()
            shanghai.dispose()
    finally:
        server.stop()
    assert not tmpdir.exists()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    server.stop()     # idempotent


def test_find_binaries_names_install_db_and_server():
    try:
        install_db, mariadbd = find_binaries()
    except MariaDBUnavailable as exc:
        conftest._unavailable(str(exc), "MariaDB")
    assert install_db.name in ("mariadb-install-db", "mysql_install_db")
    assert mariadbd.name in ("mariadbd", "mysqld")


def test_unavailable_server_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="MariaDB unavailable"):
        conftest._unavailable("no server", "MariaDB")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="MariaDB is required in CI"):
        conftest._unavailable("no server", "MariaDB")


def test_an_unreachable_existing_server_is_reported_not_hung():
    server = ExistingMariaDB("mysql://u:p@127.0.0.1:1/x?connect_timeout=3")
    with pytest.raises(MariaDBUnavailable, match="cannot connect to MariaDB"):
        server.check()


def test_existing_server_url_normalised():
    server = ExistingMariaDB("mariadb://u:p@db.example:3307/anything")
    url = make_url(server.admin_url)
    assert url.drivername == "mariadb+pymysql"
    assert url.database is None
    assert make_url(server.database_url("x")).database == "x"
    assert make_url(server.database_url("x")).password == "p"
    assert make_url(ExistingMariaDB("mysql://u@h/").admin_url).drivername == "mysql+pymysql"
