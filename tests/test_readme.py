"""The README's examples are run, so the front door cannot rot."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

from retention import commands
from retention.demo import create_demo

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
NOW = datetime(2026, 3, 15, 9, 30, tzinfo=timezone.utc)


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_the_policy_example_binds_to_the_demo_shop_and_plans(tmp_path):
    (example,) = [b for b in blocks("toml") if "[[rules]]" in b and "version = 1" in b]
    policy = tmp_path / "policies.toml"
    policy.write_text(example)
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    create_demo(url, now=NOW)
    env = {"SHOP_DATABASE_URL": url, "RETENTION_HASH_KEY": "readme"}
    result = commands.check(str(policy), env=env)
    assert result.rules == 4
    report = commands.plan(str(policy), env=env, now=NOW)
    assert [r.status for r in report.rules] == ["ok"] * 4
    assert sum(r.touch for r in report.rules) > 0


def _keys(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield f"{prefix}{k}"
            yield from _keys(v, f"{prefix}{k}.")
    elif isinstance(value, list) and value:
        yield from _keys(value[0], f"{prefix}[].")


def test_the_json_example_names_only_real_fields(tmp_path):
    (example,) = [b for b in blocks("json") if "schema_version" in b]
    documented = json.loads(re.sub(r"//[^\n]*", "", example))
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    create_demo(url, now=NOW)
    env = {"SHOP_DATABASE_URL": url, "RETENTION_HASH_KEY": "readme"}
    real = commands.plan(str(ROOT / "policies.toml"), env=env, now=NOW).to_dict()
    real["rules"] = [r for r in real["rules"] if r["cascades"] and r["protected"]][:1]
    assert set(_keys(documented)) <= set(_keys(real))
    # and every top-level and per-rule field of the real report is documented
    assert set(documented) == set(real)
    assert set(documented["rules"][0]) == set(real["rules"][0])


def test_the_test_command_is_the_one_ci_runs():
    commands_ = [b.strip() for b in blocks("sh")]
    test_cmd = next(c for c in commands_ if "pytest" in c)
    demo_cmd = next(c for c in commands_ if c.endswith("retention demo"))
    assert test_cmd == "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
    assert demo_cmd == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/retention demo"
    ci = (ROOT / ".ci" / "run").read_text()
    assert ".venv/bin/pip install -e '.[test]'" in ci and ".venv/bin/python -m pytest" in ci
