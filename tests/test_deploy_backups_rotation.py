"""Every deployment example rotates the backups: `retention run` never does, `retention backups rotate` does.

cron: the one crontab line runs the rotation after the run (for real here,
on a directory of dumps); systemd: a unit and timer of their own, hardened
like the run's, that may write only the backup directory; Kubernetes: the
backups-rotate overlay, the base CronJob with the rotation's arguments.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from tests.backupkit import daily, dumps
from tests.shopkit import LOGS_PURGE
from tests.test_deploy_cron import localize, parse
from tests.test_deploy_kubernetes import K8S_VERSION, render
from tests.test_deploy_systemd import UNITS, unit


def test_the_cron_line_rotates_the_backups_after_the_run(sqlite_shop, tmp_path):
    store = tmp_path / "backups"
    now = datetime.now(timezone.utc)
    names = dumps(store, daily(now - timedelta(hours=1), 40))
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", {"id": 1, "user_id": 1, "ip": "10.0.0.1", "created_at": datetime(2020, 1, 1)})
    policy = sqlite_shop.policy(LOGS_PURGE + f"""
[[backups]]
name = "nightly"
location = "{store}"
pattern = "shop-{{timestamp}}.dump"
keep_daily = 7
max_age = "400d"
""")
    (tmp_path / "work").mkdir()
    (tmp_path / "environment").write_text("RETENTION_HASH_KEY=cron-test-key\n")
    env, _, _, command = parse()
    job = localize(command, tmp_path).rpartition("|")[0].replace("2>&1", "").strip()
    env = {**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "RETENTION_CONFIG": policy}
    done = subprocess.run(["/bin/sh", "-c", job], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sqlite_shop.ids("logs") == []                          # the run ran
    assert sorted(p.name for p in store.iterdir()) == sorted(names[:7])   # then the rotation


def test_the_cron_line_exits_with_a_refused_rotation(sqlite_shop, tmp_path):
    store = tmp_path / "backups"
    dumps(store, daily(datetime.now(timezone.utc) - timedelta(days=5), 10))     # the backup job stopped 5 days ago
    policy = sqlite_shop.policy(f"""
[[backups]]
name = "nightly"
location = "{store}"
pattern = "shop-{{timestamp}}.dump"
keep_daily = 3
max_gap = "2d"
""")
    (tmp_path / "work").mkdir()
    (tmp_path / "environment").write_text("RETENTION_HASH_KEY=cron-test-key\n")
    env, _, _, command = parse()
    job = localize(command, tmp_path).rpartition("|")[0].replace("2>&1", "").strip()
    env = {**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "RETENTION_CONFIG": policy}
    done = subprocess.run(["/bin/sh", "-c", job], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert len(list(store.iterdir())) == 10


def test_the_systemd_rotation_unit_is_hardened_like_the_run_and_writes_only_the_backups():
    run, rotate = unit("retention.service")["Service"], unit("retention-backups.service")["Service"]
    assert rotate["ExecStart"].split()[1:3] == ["backups", "rotate"]
    assert rotate["Type"] == "oneshot" and rotate["User"] == run["User"]
    same = {k: v for k, v in run.items() if k not in ("ExecStart", "ReadWritePaths", "TimeoutStartSec",
                                                       "SyslogIdentifier")}
    assert {k: rotate.get(k) for k in same} == same
    assert rotate["ReadWritePaths"].lstrip("-") == "/var/backups/shop"
    timer = unit("retention-backups.timer")
    assert timer["Timer"]["Unit"] == "retention-backups.service" and timer["Timer"]["Persistent"] == "true"


def test_systemd_analyze_verifies_the_rotation_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd); the INI checks above still ran")
    for name in ("retention-backups.service", "retention-backups.timer"):
        text = (UNITS / name).read_text()
        text = text.replace("/opt/retention/bin/retention", str(Path(sys.executable).with_name("retention")))
        (tmp_path / name).write_text(text)
    done = subprocess.run([analyze, "verify", str(tmp_path / "retention-backups.service"),
                           str(tmp_path / "retention-backups.timer")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "retention-backups." not in done.stderr, done.stderr


def test_the_kubernetes_overlay_runs_the_rotation_in_the_base_pod():
    docs = [d for d in yaml.safe_load_all(render("overlays/backups-rotate")) if d]
    for resource in docs:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    (base,) = [d for d in yaml.safe_load_all(render("base")) if d and d["kind"] == "CronJob"]
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["backups", "rotate", "--log-format", "json"]
    assert cron["metadata"]["name"] == "retention-backups-rotate"
    # everything that keeps the pod safe is the base's
    base_pod = base["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == base_pod["securityContext"]
    assert container["securityContext"] == base_pod["containers"][0]["securityContext"]
    assert cron["spec"]["jobTemplate"]["spec"]["podFailurePolicy"] == base["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]
