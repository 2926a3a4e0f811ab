"""The demo's backup directory and the root policy's [[backups]] set: `retention backups rotate` works on it."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from click.testing import CliRunner

from retention.backups.demo import create_demo_backups
from retention.cli import cli

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies.toml"
NOW = "2026-03-15T09:30:00Z"


def test_demo_builds_a_year_of_dumps_that_the_root_policy_rotates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETENTION_CONFIG", raising=False)
    runner = CliRunner()
    demo = runner.invoke(cli, ["demo", "-c", str(POLICY), "--now", NOW, "--url",
                               f"sqlite:///{tmp_path / 'retention-demo.db'}", "--format", "json"])
    assert demo.exit_code == 0, demo.output
    dumps = sorted((tmp_path / "retention-demo-backups").iterdir())
    assert len(dumps) == 365
    assert dumps[0].name == "shop-20250316T020000Z.dump" and dumps[-1].name == "shop-20260315T020000Z.dump"

    dry = runner.invoke(cli, ["backups", "rotate", "--dry-run", "--format", "json", "-c", str(POLICY), "--now", NOW])
    assert dry.exit_code == 0, dry.output
    (result,) = json.loads(dry.stdout)["backups"]
    assert result["name"] == "shop-nightly" and result["location"] == "retention-demo-backups"
    # 7 daily (the first 3 also "last"), 4 weekly, 12 monthly, overlapping; the rest removed
    reasons = [set(k["reasons"]) for k in result["keep"]]
    assert {"last snapshot", "daily snapshot", "weekly snapshot", "monthly snapshot"} == reasons[0]
    assert sum("monthly snapshot" in r for r in reasons) == 12
    assert len(result["keep"]) == 21 and len(result["remove"]) == 344
    assert len(list((tmp_path / "retention-demo-backups").iterdir())) == 365        # dry run

    text = runner.invoke(cli, ["backups", "rotate", "--dry-run", "-c", str(POLICY), "--now", NOW])
    assert text.exit_code == 0 and "shop-20260315T020000Z.dump" in text.stdout and "monthly snapshot" in text.stdout


def test_rebuilding_replaces_the_old_demo_dumps_only(tmp_path):
    directory = tmp_path / "b"
    create_demo_backups(directory, now=datetime(2026, 1, 1, tzinfo=timezone.utc), days=5)
    (directory / "notes.txt").write_text("mine")
    names = create_demo_backups(directory, now=datetime(2026, 2, 1, 1, 0, tzinfo=timezone.utc), days=3)
    assert names == ["shop-20260131T020000Z.dump", "shop-20260130T020000Z.dump", "shop-20260129T020000Z.dump"]
    assert sorted(p.name for p in directory.iterdir()) == sorted(names + ["notes.txt"])
