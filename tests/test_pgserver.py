"""The PostgreSQL fixtures give working, empty, isolated databases."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

import conftest
from pgserver import ExistingServer, PostgresUnavailable, find_bindir, free_port


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_pg_url_is_a_working_empty_postgresql_database(pg_url):
    assert make_url(pg_url).get_backend_name() == "postgresql"
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as conn:
            assert conn.exec_driver_sql("SELECT current_database()").scalar() == make_url(pg_url).database
            assert conn.exec_driver_sql(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").scalar() == 0
            conn.exec_driver_sql("CREATE TABLE t (id integer PRIMARY KEY, note text)")
            conn.exec_driver_sql("INSERT INTO t VALUES (1, 'é ünïcode')")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT note FROM t").scalar() == "é ünïcode"
    finally:
        engine.dispose()


def test_databases_are_isolated(pg_server):
    a = pg_server.create_database("t_isolation_a_" + os.urandom(4).hex())
    b = pg_server.create_database("t_isolation_b_" + os.urandom(4).hex())
    try:
        engine = sa.create_engine(a)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE only_in_a (id integer)")
        engine.dispose()
        assert _tables(a) == {"only_in_a"}
        assert _tables(b) == set()
    finally:
        pg_server.drop_database(make_url(a).database)
        pg_server.drop_database(make_url(b).database)


def test_dropped_database_is_gone_even_with_open_connections(pg_server):
    name = "t_drop_" + os.urandom(4).hex()
    url = pg_server.create_database(name)
    engine = sa.create_engine(url)
    conn = engine.connect()   # left open on purpose: the drop must not hang or fail
    try:
        pg_server.drop_database(name)
    finally:
        conn.invalidate()
        engine.dispose()
    with pytest.raises(sa.exc.OperationalError):
        _tables(url)


def test_pg_url_tests_carry_the_postgresql_marker(request, pg_url):
    assert request.node.get_closest_marker("postgresql") is not None


def test_backend_yields_a_usable_url_per_engine(backend, request):
    engine = sa.create_engine(backend)
    try:
        assert engine.dialect.name == request.node.callspec.params["backend"]
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE probe (id integer)"))
            conn.execute(sa.text("INSERT INTO probe VALUES (7)"))
            assert conn.execute(sa.text("SELECT id FROM probe")).scalar() == 7
    finally:
        engine.dispose()
    marked = request.node.get_closest_marker("postgresql") is not None
    assert marked == (engine.dialect.name == "postgresql")


def test_server_listens_on_loopback_only_with_durability_off(pg_server, pg_url):
    if isinstance(pg_server, ExistingServer):
        pytest.skip("settings are only ours to check on the throwaway server")
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            show = lambda name: conn.exec_driver_sql(f"SHOW {name}").scalar()  # noqa: E731
            assert show("listen_addresses") == "127.0.0.1"
            assert show("fsync") == "off"
            assert show("synchronous_commit") == "off"
            assert show("full_page_writes") == "off"
            assert show("unix_socket_directories") == str(pg_server.tmpdir)
    finally:
        engine.dispose()


def test_free_port_can_be_bound():
    import socket
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_find_bindir_has_initdb_and_pg_ctl():
    try:
        bindir = find_bindir()
    except PostgresUnavailable as exc:
        conftest._unavailable(str(exc))
    assert (bindir / "initdb").exists() and (bindir / "pg_ctl").exists()


def test_unavailable_server_skips_outside_ci_and_fails_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        conftest._unavailable("no server")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="required in CI"):
        conftest._unavailable("no server")


def test_existing_server_url_normalised():
    server = ExistingServer("postgresql://u:p@db.example:5433")
    url = make_url(server.admin_url)
    assert url.drivername == "postgresql+psycopg"
    assert url.database == "postgres"
    assert make_url(server.database_url("x")).database == "x"
    assert make_url(server.database_url("x")).password == "p"
