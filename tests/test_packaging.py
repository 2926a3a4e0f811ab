"""Database drivers are extras: SQLite needs none, a missing driver names its extra.

The missing driver is simulated for real: the job runs in a subprocess whose
``sys.modules`` blocks the driver's import (as if the package were not
installed), and the real ``retention`` command is run in it.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import pytest

from tests.shopkit import LOGS_PURGE, Shop

ROOT = Path(__file__).resolve().parents[1]

#: run the real command with some modules unimportable (None in sys.modules makes ``import`` fail)
LAUNCH = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["retention"] + sys.argv[2:]
from retention.cli import main
try:
    main()
finally:
    loaded = sorted(m for m in ("psycopg", "pymysql", "psycopg2") if sys.modules.get(m) is not None)
    print("loaded drivers:", loaded, file=sys.stderr)
"""
PG_DRIVER = "psycopg,psycopg_binary,psycopg_c"


def retention(block: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCH, block, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "RETENTION_HASH_KEY": "k"})


def test_drivers_are_extras_and_the_test_extra_pulls_them():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    assert "psycopg" not in core and "pymysql" not in core
    extras = project["optional-dependencies"]
    assert any(r.startswith("psycopg[binary]") for r in extras["postgresql"])
    assert any(r.lower().startswith("pymysql") for r in extras["mysql"])
    # the README's test command installs '.[test]': it must bring every driver the suite uses
    assert "retention[postgresql,mysql]" in extras["test"]


def test_an_sqlite_user_runs_without_any_driver(sqlite_shop, tmp_path):
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", {"id": 1, "user_id": 1, "ip": "10.0.0.1", "created_at": datetime(2020, 1, 1)})
    policy = sqlite_shop.policy(LOGS_PURGE)
    done = retention(f"{PG_DRIVER},pymysql", "run", "-c", policy, "--now", "2026-01-01T00:00:00Z",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "loaded drivers: []" in done.stderr
    assert sqlite_shop.ids("logs") == []


@pytest.mark.parametrize("url, block, expected", [
    ("postgresql+psycopg://app:s3cret@db.internal/shop", PG_DRIVER, "pip install 'retention[postgresql]'"),
    ("mysql+pymysql://app:s3cret@db.internal/shop", "pymysql", "pip install 'retention[mysql]'"),
    # a bare scheme picks a driver this package does not ship: say which URL to write instead
    ("mysql://app:s3cret@db.internal/shop", "MySQLdb", "write the URL as mysql+pymysql://"),
])
def test_a_missing_driver_names_the_extra_and_exits_1(tmp_path, url, block, expected):
    policy = tmp_path / "policies.toml"
    policy.write_text(f'version = 1\n[databases.shop]\nurl = "{url}"\n')
    for verb in ("check", "plan", "run") if "psycopg" in url else ("run",):   # every verb opens it the same way
        done = retention(block, verb, "-c", str(policy), cwd=tmp_path)
        assert done.returncode == 1, done.stderr      # the environment, not the policy file (that is 2)
        first = done.stderr.splitlines()[0]
        assert first.startswith("error: ") and str(policy) in first and "[databases.shop]" in first
        assert expected in first
        assert "Traceback" not in done.stderr and "s3cret" not in done.stderr


def test_demo_on_postgresql_without_the_driver_names_the_extra(tmp_path):
    done = retention(PG_DRIVER, "demo", "--url", "postgresql+psycopg://app:s3cret@db.internal/shop",
                     "-c", str(ROOT / "policies.toml"), cwd=tmp_path)
    assert done.returncode == 1
    assert "pip install 'retention[postgresql]'" in done.stderr
    assert "Traceback" not in done.stderr and "s3cret" not in done.stderr
