"""deploy/cron/retention: the crontab line parses, and run as cron would, it locks and logs to syslog.

The line's command runs for real under /bin/sh on a SQLite shop, with only its
paths moved into a temporary directory and ``logger`` pointed at a syslog
socket the test listens on: the report must arrive there, and a second run
while the lock is held must exit 4 without touching anything.
"""

from __future__ import annotations

import fcntl
import re
import shlex
import socket
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from tests.shopkit import LOGS_PURGE

ROOT = Path(__file__).resolve().parents[1]
CRONTAB = ROOT / "deploy" / "cron" / "retention"
FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\d+(-\d+)?)(/\d+)?)*$")


def parse() -> tuple[dict[str, str], list[str], str, str]:
    """(environment, schedule fields, user, command) of the /etc/cron.d file's one job."""
    env, jobs = {}, []
    for line in CRONTAB.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if re.match(r"^[A-Z_]+=", line):
            name, _, value = line.partition("=")
            env[name] = value
        else:
            jobs.append(line)
    assert len(jobs) == 1, jobs
    fields = jobs[0].split(None, 6)
    return env, fields[:5], fields[5], fields[6]


def test_the_line_parses_and_runs_unprivileged_under_a_lock_logging_to_syslog():
    env, schedule, user, command = parse()
    assert all(FIELD.match(f) for f in schedule), schedule
    assert user == "retention"
    assert env["RETENTION_CONFIG"] == "/etc/retention/policies.toml"
    assert "%" not in command           # cron would turn it into a newline
    words = shlex.split(command)
    flock = words.index("flock")
    assert words[flock + 1] == "-n" and words[flock + 2:flock + 4] == ["-E", "4"]
    run = next(i for i, w in enumerate(words) if "retention run" in w)
    assert flock < run
    left, _, right = command.rpartition("|")
    assert left.rstrip().endswith("2>&1")    # the JSON log lines go to syslog too
    assert shlex.split(right)[:3] == ["logger", "-t", "retention"]


def localize(command: str, tmp_path: Path) -> str:
    moved = {"/var/lib/retention": tmp_path / "work", "/run/lock/retention.lock": tmp_path / "retention.lock",
             "/etc/retention/environment": tmp_path / "environment",
             "/var/lib/prometheus/node-exporter/": f"{tmp_path}/"}
    for old, new in moved.items():
        assert old in command
        command = command.replace(old, str(new))
    return command


class Syslog:
    """A syslog datagram socket read by a thread (a full queue would block logger)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            try:
                self.messages.append(self.sock.recv(65536).decode())
            except TimeoutError:
                continue

    def close(self) -> str:
        self.stopped.set()
        self.thread.join()
        self.sock.close()
        return "\n".join(self.messages)


@pytest.fixture
def syslog(tmp_path):
    s = Syslog(tmp_path / "log.sock")
    yield s
    if not s.stopped.is_set():
        s.close()


def test_the_line_runs_the_job_logs_to_syslog_and_skips_while_locked(sqlite_shop, tmp_path, syslog):
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", {"id": 1, "user_id": 1, "ip": "10.0.0.1", "created_at": datetime(2020, 1, 1)})
    policy = sqlite_shop.policy(LOGS_PURGE)
    (tmp_path / "work").mkdir()
    (tmp_path / "environment").write_text("RETENTION_HASH_KEY=cron-test-key\n")
    env, _, _, command = parse()
    command = localize(command, tmp_path).replace("logger ", f"logger -u {syslog.path} ", 1)
    env = {**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "RETENTION_CONFIG": policy}

    done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sqlite_shop.ids("logs") == []
    log = syslog.close()
    assert "retention:" in log and "logs-purge" in log      # the report, tagged, in syslog
    assert (tmp_path / "retention.prom").exists()

    # a run still holding the lock: the next one exits 4 at once and touches nothing
    sqlite_shop.insert("logs", {"id": 2, "user_id": 1, "ip": "10.0.0.1", "created_at": datetime(2020, 1, 1)})
    job = command.rpartition("|")[0].replace("2>&1", "").strip()
    with open(tmp_path / "retention.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        blocked = subprocess.run(["/bin/sh", "-c", job], env=env, capture_output=True, text=True, timeout=60)
    assert blocked.returncode == 4
    assert sqlite_shop.ids("logs") == [2]
