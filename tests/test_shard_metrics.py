"""A shard's failed run lands in the same series as its successful runs, however --shard was written."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV, LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc).isoformat()


def _run(policy: str, shard: str, prom: Path) -> int:
    result = CliRunner().invoke(cli, ["run", "--now", NOW, "-c", policy, "--shard", shard,
                                      "--metrics-file", str(prom)], env=HASH_ENV)
    return result.exit_code


def _series(prom: Path, name: str) -> list[str]:
    return [line for line in prom.read_text().splitlines() if line.startswith(name + "{")]


def test_a_failed_shard_keeps_its_series_and_its_last_success(sqlite_shop, tmp_path):
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1)))
    policy = sqlite_shop.policy(LOGS_PURGE)
    prom = tmp_path / "shard.prom"
    assert _run(policy, "1/2", prom) == 0
    (success,) = _series(prom, "retention_last_success_timestamp_seconds")
    assert 'shard="1/2"' in success

    Path(policy).write_text(Path(policy).read_text() + "\n[[rules]]\nname = 'broken'\n")
    assert _run(policy, " 01/2", prom) == 2          # the same shard, written as a template might
    assert _series(prom, "retention_run_success") == [
        'retention_run_success{mode="run",policy="policies",shard="1/2"} 0.0']
    assert _series(prom, "retention_last_success_timestamp_seconds") == [success]


def test_text_that_names_no_shard_is_kept_apart_from_the_whole_runs_series(sqlite_shop, tmp_path):
    policy = sqlite_shop.policy(LOGS_PURGE)
    prom = tmp_path / "shard.prom"
    assert _run(policy, "one of two", prom) == 2
    assert _series(prom, "retention_run_success") == [
        'retention_run_success{mode="run",policy="policies",shard="one of two"} 0.0']
