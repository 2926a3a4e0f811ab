"""Exit codes mean one thing each: 2 is only an invalid policy file or command line.

An unreachable database, a refused login, a lock or statement timeout (also
in the check before any rule runs) are runtime failures: the report names
them, the other databases' rules still run, exit 1.  A run never enforces
ahead of the clock.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from retention.errors import ConfigError
from tests.runkit import retention
from tests.shopkit import LOGS_PURGE, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)

RESTRICT_CLOSED = """
[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "restrict"
restrict_column = "restricted_at"
max_fraction = 1.0
"""

OTHER_DB_RULE = """
[databases.other]
url = "{url}"

[[rules]]
name = "other-logs"
table = "other.logs"
clock = "created_at"
after = "1d"
action = "delete"
"""


def _logs(shop, n: int = 4) -> None:
    shop.user(1, closed_at=datetime(2026, 1, 1))
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i in range(1, n + 1)])


def test_run_with_now_ahead_of_the_clock_is_refused(sqlite_shop):
    _logs(sqlite_shop)
    policy = sqlite_shop.policy(LOGS_PURGE)
    ahead = datetime.now(timezone.utc) + timedelta(days=2)
    before = sqlite_shop.dump()
    with pytest.raises(ConfigError, match="ahead of the clock"):
        sqlite_shop.run(policy, now=ahead)
    proc = retention("run", "-c", policy, "--now", ahead.isoformat())
    assert proc.returncode == 2 and "--now" in proc.stderr
    assert sqlite_shop.dump() == before
    # looking ahead is what plan and dry runs are for
    assert retention("plan", "-c", policy, "--now", ahead.isoformat()).returncode == 0
    assert sqlite_shop.run(policy, dry_run=True, now=ahead).rules[0].touch == 4
    assert sqlite_shop.run(policy, simulate=True, now=ahead).rules[0].touch == 4
    # a clock skew of a few minutes is not "ahead"
    assert sqlite_shop.run(policy, now=datetime.now(timezone.utc) + timedelta(minutes=1)).exit_code == 0


@pytest.mark.parametrize("kind", ["missing-file", "refused-port"])
def test_an_unreachable_database_fails_its_rules_and_the_others_run(shop, tmp_path, kind):
    _logs(shop)
    url = (f"sqlite:///{tmp_path / 'no-such-dir' / 'other.db'}" if kind == "missing-file"
           else "postgresql+psycopg://app:Secr3tPw@127.0.0.1:1/other?connect_timeout=3")
    policy = shop.policy(LOGS_PURGE + OTHER_DB_RULE.format(url=url))
    report = shop.run(policy, now=NOW)
    assert report.exit_code == 1
    assert outcome(report, "logs-purge").status == "ok" and shop.count("logs") == 0
    other = outcome(report, "other-logs")
    assert other.status == "failed" and "cannot reach database 'other'" in other.error
    assert any("database 'other'" in e for e in report.errors)
    assert "Secr3tPw" not in json.dumps(report.to_dict())
    proc = retention("run", "-c", policy, "--now", NOW.isoformat(), "--format", "json")
    assert proc.returncode == 1 and "Secr3tPw" not in proc.stdout + proc.stderr
    assert retention("check", "-c", policy).returncode == 1


def test_a_refused_login_is_a_runtime_failure(pg_shop):
    _logs(pg_shop)
    bad = sa.make_url(pg_shop.url).set(username="nobody_here", password="wrong")
    policy = pg_shop.policy(LOGS_PURGE.replace("shop.logs", "other.logs").replace("logs-purge", "other-logs")
                            + OTHER_DB_RULE.split("[[rules]]")[0].format(
                                url=bad.render_as_string(hide_password=False)))
    report = commands.run(policy, now=NOW, env={"RETENTION_HASH_KEY": "k"})
    assert report.exit_code == 1
    assert outcome(report, "other-logs").status == "failed"
    assert "wrong" not in json.dumps(report.to_dict())


def test_a_lock_timeout_in_the_check_before_the_run_fails_that_rule_only(pg_shop):
    _logs(pg_shop)
    policy = pg_shop.policy(LOGS_PURGE + RESTRICT_CLOSED, settings='lock_timeout = "1s"')
    locker = pg_shop.engine.connect()
    locker.execute(sa.text("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE"))
    try:
        report = pg_shop.run(policy, now=NOW)
    finally:
        locker.rollback()
        locker.close()
    assert report.exit_code == 1
    logs = outcome(report, "logs-purge")
    assert logs.status == "failed" and "could not check its SQL now" in logs.error
    assert outcome(report, "closed-restrict").status == "ok"
    assert outcome(report, "closed-restrict").touch == 1
    assert pg_shop.count("logs") == 4


def test_a_lock_timeout_during_check_is_exit_1(pg_shop):
    _logs(pg_shop)
    policy = pg_shop.policy(LOGS_PURGE, settings='lock_timeout = "1s"')
    locker = pg_shop.engine.connect()
    locker.execute(sa.text("LOCK TABLE logs IN ACCESS EXCLUSIVE MODE"))
    try:
        proc = retention("check", "-c", policy)
    finally:
        locker.rollback()
        locker.close()
    assert proc.returncode == 1, proc.stderr
    assert "key 'table'" not in proc.stderr


def test_a_simulation_is_logged_as_a_dry_run(sqlite_shop):
    _logs(sqlite_shop)
    policy = sqlite_shop.policy(LOGS_PURGE)
    proc = retention("plan", "-c", policy, "--now", NOW.isoformat(), "--simulate", "--log-format", "json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    rules = [line for line in lines if line.get("event") == "rule"]
    assert rules and all(line["dry_run"] is True for line in rules)
    assert sqlite_shop.count("logs") == 4


def test_a_run_in_another_thread_leaves_signals_alone(sqlite_shop):
    _logs(sqlite_shop)
    policy = sqlite_shop.policy(LOGS_PURGE)
    result = {}
    thread = threading.Thread(target=lambda: result.update(report=sqlite_shop.run(policy, now=NOW)))
    thread.start()
    thread.join()
    assert result["report"].exit_code == 0 and sqlite_shop.count("logs") == 0
