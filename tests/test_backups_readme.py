"""The README's Backups examples: the policy example validates, the JSON example names real fields."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from retention import commands
from retention.backups.demo import create_demo_backups
from retention.config import load_config

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
SECTION = README.split("## Backups\n", 1)[1].split("\n## ", 1)[0]


def _block(lang: str) -> str:
    (block,) = re.findall(rf"```{lang}\n(.*?)```", SECTION, flags=re.S)
    return block


def test_the_backups_example_is_a_valid_set(tmp_path):
    path = tmp_path / "policies.toml"
    path.write_text("version = 1\n[databases]\n" + _block("toml"))
    (backup,) = load_config(path).model.backups
    assert backup.max_age.days == 400 and backup.max_gap.days == 2 and backup.keep_monthly == 12


def test_the_json_example_has_exactly_the_real_fields(tmp_path, monkeypatch):
    documented = json.loads(re.sub(r"//[^\n]*", "", _block("json")))
    monkeypatch.chdir(tmp_path)
    now = datetime(2026, 3, 15, 9, 30, tzinfo=timezone.utc)
    create_demo_backups(now=now)
    real = commands.backups_rotate(str(ROOT / "policies.toml"), dry_run=True, now=now).to_dict()
    assert set(documented) == set(real)
    assert set(documented["backups"][0]) == set(real["backups"][0])
    assert set(documented["backups"][0]["keep"][0]) == set(real["backups"][0]["keep"][0])
    assert set(documented["backups"][0]["remove"][0]) == set(real["backups"][0]["remove"][0])
    assert documented["backups"][0]["keep"][0] == real["backups"][0]["keep"][0]
