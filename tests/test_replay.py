"""Replay: a database restored from a backup gets every later ledger erasure again, and nothing else changes.

SQLite: the backup is a copy of the database file.  MariaDB: mariadb-dump and
the mariadb client.  PostgreSQL: pg_dump and
pg_restore from the server's own binaries (tests/pgserver.py finds them).
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from retention import cli
from retention.errors import ConfigError
from retention.replay import replay
from retention.requests.commands import file_request
from tests.shopkit import HASH_ENV
from tests.test_requests import POLICY, T0, _fill

ERASED = (1, 4, 5)


def _take_backup(shop, tmp_path: Path):
    """(restore function) for the shop's backend."""
    url = make_url(shop.url)
    shop.engine.dispose()
    if url.get_backend_name() == "sqlite":
        copy = tmp_path / "backup.db"
        shutil.copy(url.database, copy)

        def restore() -> None:
            shop.engine.dispose()
            shutil.copy(copy, url.database)
        return restore
    if url.get_backend_name() in ("mysql", "mariadb"):
        # mariadb-dump writes the schema and rows as SQL; the mariadb client plays it back
        login = ["-h", url.host, "-P", str(url.port), "-u", url.username] + \
                ([f"-p{url.password}"] if url.password else [])
        dump = tmp_path / "backup.sql"
        with open(dump, "wb") as out:
            subprocess.run([shutil.which("mariadb-dump") or "mysqldump", *login, url.database], stdout=out,
                           check=True)

        def restore() -> None:
            shop.engine.dispose()
            with open(dump, "rb") as src:
                subprocess.run([shutil.which("mariadb") or "mysql", *login, url.database], stdin=src, check=True)
        return restore
    from tests.pgserver import find_bindir
    bindir = find_bindir()
    plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
    dump = tmp_path / "backup.dump"
    subprocess.run([str(bindir / "pg_dump"), "-Fc", "-f", str(dump), plain], check=True)

    def restore() -> None:
        shop.engine.dispose()
        subprocess.run([str(bindir / "pg_restore"), "--clean", "--if-exists", "-d", plain, str(dump)], check=True)
    return restore


def test_restore_then_replay_erases_the_same_people_again(shop, tmp_path):
    _fill(shop)
    policy = shop.policy(POLICY)
    restore = _take_backup(shop, tmp_path)
    backup_time = T0 - timedelta(hours=1)
    for i in ERASED:
        file_request(policy, f"customer:{i}", now=T0, env=HASH_ENV)
    report = shop.run(policy, now=T0)
    assert report.exit_code == 0, report.errors
    erased = shop.dump()
    assert not set(ERASED) & set(shop.ids("users"))

    restore()
    assert set(ERASED) <= set(shop.ids("users"))            # the restore brought them back
    restored = shop.dump()

    dry = replay(policy, backup_time=backup_time, dry_run=True, env=HASH_ENV)
    assert dry.to_dict()["subjects_found"] == 3 and all(e["rows"] for e in dry.entries)
    assert shop.dump() == restored                           # a dry run changes nothing

    done = replay(policy, backup_time=backup_time, env=HASH_ENV)
    assert done.erased_subjects == 3
    assert shop.dump() == erased                             # the three are gone again, nothing else changed
    assert shop.dangling() == []
    # replaying again finds nobody
    assert replay(policy, backup_time=backup_time, env=HASH_ENV).to_dict()["subjects_found"] == 0


def test_only_erasures_after_the_backup_are_replayed(sqlite_shop, tmp_path):
    shop = sqlite_shop
    _fill(shop)
    policy = shop.policy(POLICY)
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    restore = _take_backup(shop, tmp_path)        # taken after customer 1 was erased
    file_request(policy, "customer:4", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0 + timedelta(hours=2))
    restore()
    result = replay(policy, backup_time=T0 + timedelta(hours=1), env=HASH_ENV)
    assert [e["request"] for e in result.entries] == ["dsr#2"] and result.erased_subjects == 1
    assert 4 not in shop.ids("users")


def test_replay_by_backup_name_and_the_cli(sqlite_shop, tmp_path):
    shop = sqlite_shop
    _fill(shop)
    backups = tmp_path / "backups"
    backups.mkdir()
    name = f"shop-{T0 - timedelta(hours=1):%Y%m%dT%H%M%SZ}.dump"
    (backups / name).write_text("x")
    policy = shop.policy(POLICY + f"""
[[backups]]
name = "nightly"
location = "{backups}"
pattern = "shop-{{timestamp}}.dump"
keep_daily = 7
max_age = "400d"
""")
    restore = _take_backup(shop, tmp_path)
    file_request(policy, "customer:5", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    restore()
    result = CliRunner().invoke(cli.cli, ["-c", policy, "replay", "--backup", name, "--dry-run"], env=HASH_ENV)
    assert result.exit_code == 0, result.output
    assert "REPLAY DRY RUN" in result.output and "would erase" in result.output
    assert 5 in shop.ids("users")
    result = CliRunner().invoke(cli.cli, ["-c", policy, "replay", "--backup", name], env=HASH_ENV)
    assert result.exit_code == 0 and 5 not in shop.ids("users")
    with pytest.raises(ConfigError, match="no backup named"):
        replay(policy, backup="nope.dump", env=HASH_ENV)
    with pytest.raises(ConfigError, match="key"):
        replay(policy, backup=name, env={})
