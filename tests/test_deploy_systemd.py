"""deploy/systemd/: the service and timer parse, verify, and carry the hardening a DELETE-capable job needs."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"


def unit(name: str) -> configparser.ConfigParser:
    """A unit file as INI; repeated keys (systemd allows them) are joined, in order."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False,
                                       dict_type=_Joining)
    parser.optionxform = str     # systemd keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


class _Joining(dict):
    def __setitem__(self, key, value):
        if key in self and isinstance(value, list) and isinstance(self[key], list):
            value = self[key] + value
        super().__setitem__(key, value)


def test_the_service_runs_the_job_once_as_an_unprivileged_user():
    service = unit("retention.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["User"] == "retention" or service.get("DynamicUser") == "yes"
    assert service["User"] != "root"
    exec_start = service["ExecStart"].split()
    assert exec_start[0].startswith("/") and exec_start[1] == "run"
    assert service["Environment"] == "RETENTION_CONFIG=/etc/retention/policies.toml"
    # SIGTERM lets the job finish or roll back its batch within stop_timeout (10 s)
    assert int(service["TimeoutStopSec"].rstrip("s")) > 10
    assert service["StateDirectory"] == "retention" and service["WorkingDirectory"] == "/var/lib/retention"


def test_the_service_is_hardened():
    service = unit("retention.service")["Service"]
    expected = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
                "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
                "LockPersonality": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
                "UMask": "0077"}
    assert {k: service.get(k) for k in expected} == expected
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "@system-service" in service["SystemCallFilter"]
    # ProtectSystem=strict: the only writable places are named
    assert service["ReadWritePaths"].lstrip("-") == "/var/lib/prometheus/node-exporter"


def test_the_timer_catches_up_after_downtime():
    timer = unit("retention.timer")
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["OnCalendar"]
    assert timer["Timer"]["Unit"] == "retention.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verifies_both_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd); the INI checks above still ran")
    for name in ("retention.service", "retention.timer"):
        text = (UNITS / name).read_text()
        # verify wants the executable to exist: point it at this environment's console script
        text = text.replace("/opt/retention/bin/retention", str(Path(sys.executable).with_name("retention")))
        (tmp_path / name).write_text(text)
    done = subprocess.run([analyze, "verify", str(tmp_path / "retention.service"), str(tmp_path / "retention.timer")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    # unknown keys and bad values are only warnings: none may mention our units
    assert "retention." not in done.stderr, done.stderr
