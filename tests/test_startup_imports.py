"""A run imports only what its policy and options need: cron pays the process start on every run.

sqlglot is for rules with ``where_sql`` text, prometheus-client (and the
metrics module) for runs that write metrics, and each engine's modules (with
SQLAlchemy's dialect package, which pulls in its async drivers) for policies
on that engine.  The erasure-request machinery is for policies with
``[[requests]]``, HTTP for recipients with something to send, the grants
check for ``check``, and the reviewed-plan document for dry runs and
``--plan``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from retention.requests.commands import file_request
from tests.shopkit import HASH_ENV, LOGS_PURGE
from tests.test_requests import POLICY as REQUESTS_POLICY

ROOT = Path(__file__).resolve().parent.parent

OPTIONAL = ("sqlglot", "prometheus_client", "sqlalchemy.dialects.postgresql", "sqlalchemy.dialects.mysql",
            "retention.dialects.postgresql", "retention.dialects.mysql", "retention.dialects.sqlite",
            "retention.metrics", "retention.privileges", "retention.planfile", "retention.requests.queue",
            "retention.requests.erase", "urllib.request")

_RUN = textwrap.dedent("""
    import json, sys
    from retention.cli import main
    sys.argv = ["retention", *sys.argv[1:]]
    try:
        main()
    except SystemExit as e:
        code = e.code
    print(json.dumps({"exit": code, "loaded": [m for m in %r if m in sys.modules]}), file=sys.stderr)
    """ % (OPTIONAL,))


def _loaded(*args: str) -> list[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RETENTION_")}, **HASH_ENV,
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["exit"] == 0, proc.stderr[-2000:]
    return result["loaded"]


def test_a_sqlite_run_loads_neither_the_other_engines_nor_sqlglot_nor_prometheus(sqlite_shop):
    policy = sqlite_shop.policy(LOGS_PURGE)
    assert _loaded("run", "-c", policy, "--log-format", "json") == ["retention.dialects.sqlite"]


def test_what_a_policy_or_an_option_asks_for_is_loaded_when_asked(sqlite_shop, tmp_path):
    policy = sqlite_shop.policy(LOGS_PURGE + 'where_sql = "ip IS NOT NULL"\n')
    loaded = _loaded("run", "-c", policy, "--log-format", "json", "--metrics-file", str(tmp_path / "m.prom"))
    # prometheus-client brings urllib.request itself (its pushgateway client)
    assert set(loaded) == {"sqlglot", "prometheus_client", "retention.metrics", "retention.dialects.sqlite",
                           "urllib.request"}
    assert "retention_rule_duration_seconds{" in (tmp_path / "m.prom").read_text()


def test_the_version_loads_no_engine():
    assert _loaded("--version") == []


def test_a_dry_run_loads_the_plan_document_and_check_the_grants_check(sqlite_shop):
    policy = sqlite_shop.policy(LOGS_PURGE)
    assert _loaded("plan", "-c", policy, "--log-format", "json") == ["retention.dialects.sqlite", "retention.planfile"]
    assert _loaded("check", "-c", policy) == ["retention.dialects.sqlite", "retention.privileges"]


def test_a_policy_with_requests_loads_the_request_machinery_and_fulfils_them(sqlite_shop):
    sqlite_shop.user(1)
    policy = sqlite_shop.policy(REQUESTS_POLICY)
    file_request(policy, "customer:1", env=HASH_ENV)
    loaded = _loaded("run", "-c", policy, "--log-format", "json")
    assert set(loaded) == {"retention.dialects.sqlite", "retention.requests.queue", "retention.requests.erase"}
    assert 1 not in sqlite_shop.ids("users")
