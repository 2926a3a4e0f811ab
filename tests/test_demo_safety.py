"""``retention demo --url`` never drops or overwrites tables it did not create.

Pointed at a database that holds an application's own ``users`` or ``orders``,
it refuses (exit 2), names the tables and says why, and changes nothing; an
earlier demo of its own there is rebuilt as before.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from retention.demo import METADATA, DemoRefused, create_demo

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 3, 15, 9, 30)


def _tables_and_rows(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    try:
        md = sa.MetaData()
        md.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted(tuple(r) for r in conn.execute(sa.select(t))) for name, t in md.tables.items()}
    finally:
        engine.dispose()


def _app_tables(url: str) -> None:
    """An application's own tables that happen to share the demo's names."""
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, email VARCHAR(100) NOT NULL)")
        c.exec_driver_sql("INSERT INTO users VALUES (1, 'real.customer@example.com')")
        c.exec_driver_sql("CREATE TABLE invoices (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id))")
        c.exec_driver_sql("INSERT INTO invoices VALUES (7, 1)")
    engine.dispose()


def _demo(url: str):
    return CliRunner().invoke(cli, ["--config", str(ROOT / "policies.toml"), "--now", "2026-03-15T09:30:00Z",
                                    "demo", "--url", url], env={"RETENTION_HASH_KEY": "k"})


def test_demo_refuses_a_database_with_foreign_tables_of_its_names(backend):
    _app_tables(backend)
    before = _tables_and_rows(backend)
    result = _demo(backend)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "users" in result.output and "did not create" in result.output
    assert _tables_and_rows(backend) == before          # nothing dropped, nothing created


def test_a_table_identical_to_the_demos_but_not_built_by_it_is_still_refused(backend):
    engine = sa.create_engine(backend)
    METADATA.tables["users"].create(engine)
    engine.dispose()
    before = _tables_and_rows(backend)
    with pytest.raises(DemoRefused, match="users"):
        create_demo(backend, now=NOW, scale=0.05)
    assert _tables_and_rows(backend) == before


def test_the_demo_rebuilds_its_own_tables(backend):
    first = create_demo(backend, now=NOW, scale=0.05)
    engine = sa.create_engine(backend)
    with engine.begin() as c:
        c.execute(sa.delete(METADATA.tables["access_logs"]))
    engine.dispose()
    assert create_demo(backend, now=NOW, scale=0.05) == first
    assert len(_tables_and_rows(backend)["access_logs"]) == first["access_logs"]


def test_a_demo_table_changed_since_the_demo_built_it_is_not_dropped(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    create_demo(url, now=NOW, scale=0.05)
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE users ADD COLUMN loyalty_tier VARCHAR(10)")
    engine.dispose()
    before = _tables_and_rows(url)
    with pytest.raises(DemoRefused, match="users"):
        create_demo(url, now=NOW, scale=0.05)
    assert _tables_and_rows(url) == before
