"""The state store: where it lives, its schema version, migrations, refusal of a newer store."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from retention.errors import ConfigError
from retention.state import StateStoreError, migrations, open_store, resolve_state_url
from tests.runkit import audit_rows, invoke, state_url, state_url_of, with_state  # noqa: F401
from tests.shopkit import LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)


def _logs(shop, n: int = 3) -> None:
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i in range(1, n + 1)])


def test_a_relative_sqlite_path_lives_beside_the_policy_file(sqlite_shop, tmp_path, monkeypatch):
    _logs(sqlite_shop)
    policy = with_state(sqlite_shop.policy(LOGS_PURGE), "sqlite:///retention-state.db")
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sqlite_shop.run(policy, now=NOW)
    assert (tmp_path / "retention-state.db").exists()
    assert not (elsewhere / "retention-state.db").exists()
    assert [r["kind"] for r in audit_rows(f"sqlite:///{tmp_path / 'retention-state.db'}")][0] == "run-started"


def test_the_default_state_url_is_beside_the_policy_file(sqlite_shop, tmp_path, monkeypatch):
    _logs(sqlite_shop)
    policy = sqlite_shop.policy(LOGS_PURGE)
    text = open(policy).read().replace(f'state_url = "{state_url_of(policy)}"\n', "")
    open(policy, "w").write(text)
    monkeypatch.chdir("/")
    commands.run(policy, dry_run=True, now=NOW)
    assert (tmp_path / "retention-state.db").exists()


def test_resolving_state_urls():
    assert resolve_state_url("sqlite:///s.db", "/etc/retention/policies.toml") == "sqlite:////etc/retention/s.db"
    assert resolve_state_url("sqlite:////var/s.db", "/etc/p.toml") == "sqlite:////var/s.db"
    assert resolve_state_url("postgresql+psycopg://u:p@h/db", "/etc/p.toml") == "postgresql+psycopg://u:p@h/db"
    with pytest.raises(ConfigError, match="state_url"):
        resolve_state_url("sqlite://", "/etc/p.toml")
    with pytest.raises(ConfigError, match="state_url"):
        resolve_state_url("not a url", "/etc/p.toml")


def test_first_use_creates_the_tables_at_the_current_version(state_url, tmp_path):
    store = open_store(state_url, str(tmp_path / "p.toml"))
    try:
        assert store.version() == migrations.CURRENT
        names = set(sa.inspect(store.engine).get_table_names())
        assert {"retention_schema", "retention_audit", "retention_leases"} <= names
    finally:
        store.close()


def test_state_upgrade_runs_the_steps_a_store_has_not_seen(state_url, tmp_path, monkeypatch):
    store = open_store(state_url, str(tmp_path / "p.toml"))
    store.close()
    extra = sa.Table("retention_future", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    monkeypatch.setattr(migrations, "STEPS", [*migrations.STEPS, lambda conn: extra.create(conn)])
    monkeypatch.setattr(migrations, "CURRENT", len(migrations.STEPS))
    store = open_store(state_url, str(tmp_path / "p.toml"), migrate=False)
    try:
        assert store.version() == migrations.CURRENT - 1
        assert store.upgrade() == (migrations.CURRENT - 1, migrations.CURRENT)
        assert store.version() == migrations.CURRENT
        assert "retention_future" in sa.inspect(store.engine).get_table_names()
        assert store.upgrade() == (migrations.CURRENT, migrations.CURRENT)
    finally:
        store.close()


def test_state_upgrade_command(shop, state_url):
    policy = with_state(shop.policy(LOGS_PURGE), state_url)
    first = invoke("state", "upgrade", "-c", policy)
    assert first.returncode == 0, first.stderr
    assert f"upgraded from schema version 0 to {migrations.CURRENT}" in first.stdout
    again = invoke("state", "upgrade", "-c", policy)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_a_store_newer_than_the_code_is_refused_and_nothing_is_touched(shop, state_url):
    _logs(shop)
    policy = with_state(shop.policy(LOGS_PURGE), state_url)
    store = open_store(state_url, policy)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE retention_schema SET version = :v"), {"v": migrations.CURRENT + 1})
    store.close()
    before = shop.dump()
    with pytest.raises(StateStoreError, match="newer than this release"):
        shop.run(policy, now=NOW)
    assert shop.dump() == before
    proc = invoke("run", "-c", policy, "--now", NOW.isoformat())
    assert proc.returncode == 1
    assert "newer than this release" in proc.stderr
    assert invoke("state", "upgrade", "-c", policy).returncode == 1
    assert shop.dump() == before


def test_the_state_store_on_postgresql_holds_the_audit_log(pg_shop, pg_server, tmp_path):
    _logs(pg_shop)
    name = "t_state_pg_store"
    url = pg_server.create_database(name)
    try:
        policy = with_state(pg_shop.policy(LOGS_PURGE), url)
        report = pg_shop.run(policy, now=NOW)
        assert report.exit_code == 0
        kinds = [r["kind"] for r in audit_rows(url)]
        assert kinds[0] == "run-started" and kinds[-1] == "run-ended" and "batch-committed" in kinds
        assert report.audit_head == audit_rows(url)[-1]["hash"]
    finally:
        pg_server.drop_database(name)


def test_stop_timeout_is_a_setting(sqlite_shop):
    policy = sqlite_shop.policy(LOGS_PURGE, settings='stop_timeout = "3mo"')
    with pytest.raises(ConfigError, match="stop_timeout"):
        commands.run(policy, dry_run=True, now=NOW)
