"""Helpers for tests of a run's life: state stores, the audit table, the CLI in a subprocess or in-process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def state_url(request, tmp_path):
    """URL of an empty state store, once per engine (a PostgreSQL database of its own)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state-store.db'}"
        return
    server = request.getfixturevalue("pg_server")
    name = f"t_state_{uuid.uuid4().hex[:12]}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


def with_state(policy: str, url: str) -> str:
    """Point the policy file at another state store."""
    path = Path(policy)
    text = re.sub(r'^\s*state_url = ".*"$', f'state_url = "{url}"', path.read_text(), count=1, flags=re.M)
    path.write_text(text)
    return policy


def state_url_of(policy: str) -> str:
    return re.search(r'^\s*state_url = "(.*)"$', Path(policy).read_text(), flags=re.M).group(1)


def audit_rows(url: str) -> list[dict]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM retention_audit ORDER BY seq"))]
    finally:
        engine.dispose()


def run_hearing(policy: str, subscriber, *, now=None, **kw):
    """A run of ``policy`` (as ``commands.run`` makes it) whose events ``subscriber`` also hears.

    A test stages what the application does at a moment of the run through the
    run's events (``retention.events``), e.g. on ``RuleCounted``: counted and
    guarded, nothing touched yet.
    """
    from retention.runtime import Run, mode_for
    run = Run(policy, mode_for(), now=now, env=HASH_ENV, **kw)
    run.subscribe(subscriber)
    return run.execute()


def holds_released_once_counted(shop):
    """A ``run_hearing`` subscriber: the application releases every hold as soon as the rule is
    counted, so rows the run judged held become workable under it."""
    from retention.events import RuleCounted

    def release(event):
        if isinstance(event, RuleCounted):
            with shop.engine.begin() as conn:
                conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2026, 6, 15)))

    return release


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}
    env.update(HASH_ENV)
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def retention(*args: str, **kw) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess; returns the completed process (text output)."""
    return subprocess.run([sys.executable, "-m", "retention", *args], capture_output=True, text=True,
                          env=cli_env(), timeout=kw.pop("timeout", 120), **kw)


def invoke(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in-process, as ``retention()`` does in a subprocess, with the same result shape.

    For tests about what a command prints and exits with, not about the process
    (signals, locks held by another process): saves a Python start per call.
    The environment is the subprocess's (``cli_env``), and an exception that
    escapes click fails the test as a traceback would fail the process.
    """
    env = {k: None for k in os.environ if k.startswith("RETENTION_")} | cli_env()
    try:
        runner = CliRunner(mix_stderr=False)          # click < 8.2
    except TypeError:
        runner = CliRunner()                          # click >= 8.2 keeps stderr apart always
    result = runner.invoke(cli, list(args), env=env, prog_name="retention", catch_exceptions=False)
    return subprocess.CompletedProcess(["retention", *args], result.exit_code, result.stdout, result.stderr)


def start(*args: str, **kw) -> subprocess.Popen:
    """Start the CLI in a subprocess (stdout, stderr to pipes)."""
    return subprocess.Popen([sys.executable, "-m", "retention", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli_env(), **kw)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something truthy (bounded; the bound is no assertion on speed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Statements:
    """Every statement sent to the application's database while the block runs (not the state store's)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __enter__(self):
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, *_):
        if "retention_" not in statement:
            self.sent.append(" ".join(statement.split()))
