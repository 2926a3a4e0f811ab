"""Shared fixtures: databases to run scenarios on.

Two tiers, selected by marker:

* SQLite only: ``pytest -m "not postgresql and not mariadb"`` (no server needed);
* everything: ``pytest`` starts one throwaway PostgreSQL for the session
  (:mod:`tests.pgserver`), or uses ``RETENTION_TEST_PG_URL`` when set, and
  likewise one throwaway MariaDB (:mod:`tests.mariadbserver`,
  ``RETENTION_TEST_MARIADB_URL``); ``-m "not mariadb"`` leaves MariaDB out.
  Under ``-n`` (pytest-xdist) each worker is a session of its own, so starts
  servers of its own: free ports, distinct temporary directories.

Every test that needs PostgreSQL (through ``pg_url``, ``pg_server`` or the
``postgresql`` variant of ``backend``) carries the ``postgresql`` marker.
Tests that need MariaDB (``mariadb_url``, ``mariadb_server``, the ``mariadb``
variant of ``backend``) carry the ``mariadb`` marker, alike.
Without a server such tests are skipped, except under ``CI=true``, where a
missing server fails them: CI must never go green by silently skipping a tier.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mariadbserver import ExistingMariaDB, MariaDBServer, MariaDBUnavailable  # noqa: E402
from pgserver import ExistingServer, PostgresServer, PostgresUnavailable  # noqa: E402
from tests.shopkit import Shop  # noqa: E402

PG_URL_ENV = "RETENTION_TEST_PG_URL"
_PG_FIXTURES = ("pg_url", "pg_server")
MARIADB_URL_ENV = "RETENTION_TEST_MARIADB_URL"
_MARIADB_FIXTURES = ("mariadb_url", "mariadb_server")


def in_ci() -> bool:
    """True when running in CI, where an unavailable server is a failure."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _unavailable(reason: str, engine: str = "PostgreSQL"):
    if in_ci():
        pytest.fail(f"{engine} is required in CI (CI=true) but unavailable: {reason}", pytrace=False)
    pytest.skip(f"{engine} unavailable: {reason}")


def _still_running(server) -> None:
    """Fail the test at hand if the session's server has died, after starting a fresh one.

    A server that dies under the suite (a crash, the kernel's OOM killer, a
    full disk) would otherwise fail every later test with "connection
    refused" and say nothing of why. The first test to find it gone fails
    with how it ended; the tests after it get a new server.
    """
    gone = server.gone()
    if gone is None:
        return
    kept = server.keep_log()
    if kept is not None:
        gone += f"; its whole log is kept in {kept}"
    try:
        server.restart()
    except Exception as exc:  # noqa: BLE001 - reported with the death, in one line
        gone += f"; no new server could be started: {exc}".replace("\n", " | ")
    pytest.fail(gone, pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Mark every test that uses PostgreSQL so ``-m "not postgresql"`` deselects it.

    ``tryfirst`` so the marks exist before pytest's own ``-m`` deselection runs.
    """
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in _PG_FIXTURES):
            item.add_marker(pytest.mark.postgresql)
        if any(name in getattr(item, "fixturenames", ()) for name in _MARIADB_FIXTURES):
            item.add_marker(pytest.mark.mariadb)


@pytest.fixture(scope="session")
def pg_server():
    """One PostgreSQL server for the whole session.

    Has ``create_database(name) -> url`` and ``drop_database(name)``.  Started
    on first use (a SQLite-only run never pays for it) and stopped at the end.
    """
    url = os.environ.get(PG_URL_ENV)
    if url:
        server = ExistingServer(url)
        try:
            server.check()
            problem = None
        except PostgresUnavailable as exc:
            problem = f"{PG_URL_ENV} is set but the server does not answer: {exc}"
        if problem:  # outside the except block: no chained traceback in the report
            _unavailable(problem)
        yield server
        return
    try:
        server = PostgresServer().start()
        problem = None
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem:
        _unavailable(problem)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mariadb_server():
    """One MariaDB server for the whole session, like ``pg_server`` (same interface)."""
    url = os.environ.get(MARIADB_URL_ENV)
    if url:
        server = ExistingMariaDB(url)
        try:
            server.check()
            problem = None
        except MariaDBUnavailable as exc:
            problem = f"{MARIADB_URL_ENV} is set but the server does not answer: {exc}"
        if problem:
            _unavailable(problem, "MariaDB")
        yield server
        return
    try:
        server = MariaDBServer().start()
        problem = None
    except (MariaDBUnavailable, OSError, subprocess.SubprocessError) as exc:
        problem = str(exc)
    if problem:
        _unavailable(problem, "MariaDB")
    try:
        yield server
    finally:
        server.stop()


def _database_name(nodeid: str) -> str:
    # Readable when a test leaves something behind on a shared server, unique
    # always; PostgreSQL identifiers stop at 63 bytes.
    stem = re.sub(r"[^a-z0-9]+", "_", nodeid.split("::")[-1].lower()).strip("_")[:40]
    return f"t_{stem}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def pg_url(pg_server, request):
    """SQLAlchemy URL of a fresh, empty PostgreSQL database, dropped after the test."""
    _still_running(pg_server)
    name = _database_name(request.node.nodeid)
    template = _pg_shop_template(request, pg_server)
    url = pg_server.create_database(name, template=template)
    if template:
        _SHOP_COPIES.add(url)
    try:
        yield url
    finally:
        pg_server.drop_database_later(name)


@pytest.fixture
def mariadb_url(mariadb_server, request):
    """SQLAlchemy URL (``mariadb+pymysql://``) of a fresh, empty MariaDB database, dropped after the test."""
    _still_running(mariadb_server)
    name = _database_name(request.node.nodeid)
    url = mariadb_server.create_database(name)
    try:
        yield url
    finally:
        # MariaDB's DROP DATABASE costs about as much as the test: no test waits for it
        mariadb_server.drop_database_later(name)


def _pg_shop_template(request, pg_server) -> str | None:
    """The shop template's name when the test builds a shop on this database, else None (empty).

    Copying a database that already holds the empty shop schema costs a fraction
    of creating its tables one by one; ``shop`` and ``pg_shop`` then skip that step.
    """
    if not {"shop", "pg_shop"} & set(request.fixturenames):
        return None
    name, incarnation = request.getfixturevalue("pg_shop_template")
    return name if incarnation == pg_server.incarnation else None   # a restarted server holds no template


@pytest.fixture(scope="session")
def pg_shop_template(pg_server, tmp_path_factory):
    """A PostgreSQL database holding the empty shop schema, copied for each shop on PostgreSQL.

    Its name and the server's incarnation: a server restarted under the suite holds no template.
    """
    name = f"t_shop_template_{uuid.uuid4().hex[:12]}"
    Shop(pg_server.create_database(name), tmp_path_factory.mktemp("shop-template")).close()
    incarnation = pg_server.incarnation
    yield name, incarnation
    if pg_server.incarnation == incarnation:
        pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def backend(request, tmp_path):
    """SQLAlchemy URL of an empty database, once per engine (``sqlite``, ``postgresql``, ``mariadb``).

    Scenario tests take ``backend`` to run the same assertions on every engine;
    ``request.param`` (or ``make_url(backend).get_backend_name()``) tells which.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
    elif request.param == "mariadb":
        yield request.getfixturevalue("mariadb_url")
    else:
        yield request.getfixturevalue("pg_url")


# -- scenario shops (tests/shopkit.py): one empty shop schema per test -----------------------------

@pytest.fixture
def shop(backend, tmp_path):
    """An empty scenario shop on each backend (SQLite, PostgreSQL, MariaDB)."""
    s = Shop(backend, tmp_path, created=_is_shop_copy(backend))
    yield s
    s.close()


@pytest.fixture
def sqlite_shop(tmp_path):
    """An empty scenario shop on SQLite only (for SQLite-specific behaviour)."""
    s = Shop(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    yield s
    s.close()


@pytest.fixture
def pg_shop(pg_url, tmp_path):
    """An empty scenario shop on PostgreSQL only."""
    s = Shop(pg_url, tmp_path, created=_is_shop_copy(pg_url))
    yield s
    s.close()


@pytest.fixture
def mariadb_shop(mariadb_url, tmp_path):
    """An empty scenario shop on MariaDB only (for InnoDB's behaviour)."""
    s = Shop(mariadb_url, tmp_path)
    yield s
    s.close()


#: URLs of PostgreSQL databases made as copies of the shop template (each name is used once)
_SHOP_COPIES: set[str] = set()


def _is_shop_copy(url: str) -> bool:
    # a shop fixture requested dynamically (getfixturevalue) finds an empty database instead
    return url in _SHOP_COPIES
