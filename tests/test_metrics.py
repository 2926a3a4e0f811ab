"""Prometheus metrics of a run: the textfile and the Pushgateway push.

Every test runs the real ``retention run`` (in-process, click's runner) on a
scenario shop, parses what was written or pushed with prometheus-client's own
parser, and checks the values against the report and the database.  The
Pushgateway is a small HTTP server on 127.0.0.1 that records each request.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import stat
import threading
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from freezegun import freeze_time
from prometheus_client.parser import text_string_to_metric_families

from retention.cli import cli
from tests.shopkit import FLOOR_ORDERS, HOLDS, LOGS_PURGE, Shop

NOW = "2026-06-15T12:00:00Z"
FIRST = datetime.fromisoformat("2026-06-16T03:00:00+00:00")     # when the first run ends
SECOND = datetime.fromisoformat("2026-06-17T03:00:00+00:00")    # when the second one does
PERSONAL = ["user1@example.com", "User 1", "+15550000001", "10.1.2.3", "Main St"]
LABELS = {"policy": "policies", "mode": "run"}


def fill(shop: Shop) -> None:
    """Four users, user 1 under a legal hold; old and new logs, orders inside and past the floor."""
    for uid in (1, 2, 3, 4):
        shop.user(uid)
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    shop.insert("logs",
                dict(id=1, user_id=1, ip="10.1.2.3", created_at=datetime(2020, 1, 1)),    # held
                dict(id=2, user_id=2, ip="10.1.2.3", created_at=datetime(2020, 1, 1)),
                dict(id=3, user_id=2, ip="10.1.2.3", created_at=datetime(2021, 1, 1)),
                dict(id=4, user_id=3, ip="10.1.2.3", created_at=datetime(2026, 6, 15)),   # not due
                dict(id=5, user_id=None, ip="10.1.2.3", created_at=datetime(2019, 1, 1)))
    shop.insert("orders",
                dict(id=1, user_id=1, completed_at=datetime(2020, 1, 1), buyer_name="User 1"),   # held
                dict(id=2, user_id=2, completed_at=datetime(2020, 1, 1), buyer_name="User 2"),   # goes
                dict(id=3, user_id=3, completed_at=datetime(2025, 1, 1), buyer_name="User 3"))   # floor
    shop.insert("order_items", dict(id=1, order_id=1, sku="A"), dict(id=2, order_id=2, sku="B"),
                dict(id=3, order_id=2, sku="C"), dict(id=4, order_id=3, sku="D"))
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Main St"))


def samples(text: str) -> dict[tuple, float]:
    """Every sample of an exposition, keyed by (name, sorted labels)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted({**LABELS, **labels}.items()))))


def invoke(*args: str, when: datetime) -> tuple[int, str]:
    with freeze_time(when):
        result = CliRunner().invoke(cli, ["run", "--now", NOW, *args], env={"RETENTION_HASH_KEY": "k"})
    return result.exit_code, result.stderr


@pytest.fixture
def scenario(sqlite_shop):
    fill(sqlite_shop)
    policy = sqlite_shop.policy(HOLDS + LOGS_PURGE + FLOOR_ORDERS)
    return sqlite_shop, policy


def test_textfile_holds_the_runs_numbers(scenario, tmp_path):
    shop, policy = scenario
    prom, report_path = tmp_path / "retention.prom", tmp_path / "report.json"
    code, err = invoke("-c", policy, "--metrics-file", str(prom), "--format", "json",
                       "--out", str(report_path), when=FIRST)
    assert code == 0, err
    report = json.loads(report_path.read_text())
    text = prom.read_text()
    m = samples(text)

    # what the database says happened
    assert shop.ids("logs") == [1, 4]
    assert shop.ids("orders") == [1, 3]
    assert shop.ids("order_items") == [1, 4]
    assert value(m, "retention_rows_total", rule="logs-purge", action="delete") == 3
    assert value(m, "retention_rows_total", rule="orders-purge", action="delete") == 1
    assert value(m, "retention_rows_total", rule="orders-purge", action="cascade_delete") == 2
    assert value(m, "retention_rows_due", rule="logs-purge") == 4
    assert value(m, "retention_rows_protected", rule="logs-purge", protection="hold", protector="litigation") == 1
    assert value(m, "retention_rows_protected", rule="orders-purge", protection="hold", protector="litigation") == 1
    assert value(m, "retention_rows_protected", rule="orders-purge", protection="floor",
                 protector="ecommerce-law-3y") == 1
    for rule in ("logs-purge", "orders-purge"):
        assert value(m, "retention_guard_tripped", rule=rule) == 0
        assert value(m, "retention_rule_failed", rule=rule) == 0
        assert value(m, "retention_rows_remaining", rule=rule) == 0
        out = next(r for r in report["rules"] if r["rule"] == rule)
        assert value(m, "retention_rule_duration_seconds", rule=rule) == pytest.approx(out["duration_seconds"])
        assert value(m, "retention_rows_total", rule=rule, action=out["action"]) == out["touch"]

    assert value(m, "retention_last_success_timestamp_seconds") == FIRST.timestamp()
    assert datetime.fromisoformat(report["finished_at"]).timestamp() == FIRST.timestamp()
    assert value(m, "retention_last_run_timestamp_seconds") == FIRST.timestamp()
    assert value(m, "retention_run_success") == 1
    assert value(m, "retention_run_exit_code") == 0
    assert value(m, "retention_run_duration_seconds") is not None
    # node-exporter reads the file as another user; nothing half-written is left beside it
    assert stat.S_IMODE(prom.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir() if "retention.prom" in p.name) == ["retention.prom"]
    for personal in PERSONAL:
        assert personal not in text


def test_a_failed_run_keeps_the_last_success(scenario, tmp_path):
    shop, policy = scenario
    prom = tmp_path / "retention.prom"
    assert invoke("-c", policy, "--metrics-file", str(prom), when=FIRST)[0] == 0
    # new old logs, and a guard that allows one row: the next run trips it and exits 3
    shop.insert("logs", dict(id=6, user_id=2, ip="10.9.9.9", created_at=datetime(2020, 1, 1)),
                dict(id=7, user_id=3, ip="10.9.9.9", created_at=datetime(2020, 1, 1)))
    Path(policy).write_text(Path(policy).read_text().replace('name = "logs-purge"', 'name = "logs-purge"\nmax_rows = 1'))
    code, err = invoke("-c", policy, "--metrics-file", str(prom), when=SECOND)
    assert code == 3, err
    m = samples(prom.read_text())
    assert value(m, "retention_last_success_timestamp_seconds") == FIRST.timestamp()
    assert value(m, "retention_last_run_timestamp_seconds") == SECOND.timestamp()
    assert value(m, "retention_run_success") == 0
    assert value(m, "retention_run_exit_code") == 3
    assert value(m, "retention_guard_tripped", rule="logs-purge") == 1
    assert value(m, "retention_rows_total", rule="logs-purge", action="delete") == 0
    assert value(m, "retention_rows_remaining", rule="logs-purge") == 2
    assert shop.ids("logs") == [1, 4, 6, 7]

    # a run that never gets going (an invalid policy file, exit 2) keeps it too
    Path(policy).write_text(Path(policy).read_text() + "\n[[rules]]\nname = 1\n")
    code, err = invoke("-c", policy, "--metrics-file", str(prom), when=SECOND)
    assert code == 2, err
    m = samples(prom.read_text())
    assert value(m, "retention_last_success_timestamp_seconds") == FIRST.timestamp()
    assert value(m, "retention_run_exit_code") == 2
    assert value(m, "retention_run_success") == 0
    assert not [k for k in m if k[0] == "retention_rows_total"]     # no report, no per-rule numbers


def test_the_file_is_replaced_never_rewritten_in_place(scenario, tmp_path):
    shop, policy = scenario
    prom = tmp_path / "retention.prom"
    prom.write_text("# an earlier run's file\n")
    with open(prom) as reader:          # a collector in the middle of reading the old file
        assert invoke("-c", policy, "--metrics-file", str(prom), when=FIRST)[0] == 0
        assert reader.read() == "# an earlier run's file\n"
    assert value(samples(prom.read_text()), "retention_run_success") == 1


def test_a_dry_run_is_labelled_and_never_counts_as_the_jobs_success(scenario, tmp_path):
    shop, policy = scenario
    prom = tmp_path / "retention.prom"
    before = shop.dump()
    assert invoke("-c", policy, "--dry-run", "--metrics-file", str(prom), when=FIRST)[0] == 0
    assert shop.dump() == before
    m = samples(prom.read_text())
    assert value(m, "retention_rows_total", rule="logs-purge", action="delete") is None   # mode="run" series
    dry = {k: v for k, v in m.items() if ("mode", "dry-run") in k[1]}
    assert len(dry) == len(m)
    assert m[("retention_rows_total", tuple(sorted(
        {"policy": "policies", "mode": "dry-run", "rule": "logs-purge", "action": "delete"}.items())))] == 3


class Gateway:
    """A Pushgateway stand-in on 127.0.0.1: records method, path and body of each request."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, str]] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _record(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                gateway.requests.append((self.command, self.path, body))
                self.send_response(200)
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gateway():
    g = Gateway()
    yield g
    g.close()


def test_pushgateway_receives_exactly_the_metrics(scenario, tmp_path, gateway):
    shop, policy = scenario
    prom = tmp_path / "retention.prom"
    code, err = invoke("-c", policy, "--metrics-file", str(prom), "--pushgateway", gateway.url, when=FIRST)
    assert code == 0, err
    assert [(m, p) for m, p, _ in gateway.requests] == [("PUT", "/metrics/job/retention/mode/run/policy/policies")]
    pushed = samples(gateway.requests[0][2])
    assert pushed == samples(prom.read_text())
    assert value(pushed, "retention_last_success_timestamp_seconds") == FIRST.timestamp()
    assert value(pushed, "retention_rows_total", rule="logs-purge", action="delete") == 3

    # a failed run adds with POST and leaves the gateway's last success alone
    shop.insert("logs", dict(id=6, user_id=2, ip="10.9.9.9", created_at=datetime(2020, 1, 1)),
                dict(id=7, user_id=3, ip="10.9.9.9", created_at=datetime(2020, 1, 1)))
    Path(policy).write_text(Path(policy).read_text().replace('name = "logs-purge"', 'name = "logs-purge"\nmax_rows = 1'))
    code, err = invoke("-c", policy, "--metrics-file", str(prom), "--pushgateway", gateway.url, when=SECOND)
    assert code == 3, err
    method, path, body = gateway.requests[1]
    assert (method, path) == ("POST", "/metrics/job/retention/mode/run/policy/policies")
    pushed = samples(body)
    in_file = samples(prom.read_text())
    last = ("retention_last_success_timestamp_seconds", tuple(sorted(LABELS.items())))
    assert last not in pushed and in_file[last] == FIRST.timestamp()
    assert pushed == {k: v for k, v in in_file.items() if k != last}
    assert value(pushed, "retention_guard_tripped", rule="logs-purge") == 1
    for personal in PERSONAL:
        assert all(personal not in body for _, _, body in gateway.requests)


def test_an_unreachable_pushgateway_fails_the_run_after_its_work(scenario, tmp_path):
    shop, policy = scenario
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = invoke("-c", policy, "--pushgateway", f"http://user:s3cret@127.0.0.1:{port}", when=FIRST)
    assert code == 1
    assert "cannot push the metrics" in err and "s3cret" not in err
    assert shop.ids("logs") == [1, 4]       # the run's work stands


def test_metrics_file_in_a_missing_directory_is_refused_before_anything_runs(scenario, tmp_path):
    shop, policy = scenario
    before = shop.dump()
    code, err = invoke("-c", policy, "--metrics-file", str(tmp_path / "nope" / "r.prom"), when=FIRST)
    assert code == 2 and "cannot write" in err
    assert shop.dump() == before
    assert not os.path.exists(tmp_path / "nope")


def test_the_readme_documents_every_metric_and_alerts_only_on_real_ones(scenario, tmp_path):
    import re

    import yaml

    shop, policy = scenario
    prom = tmp_path / "retention.prom"
    assert invoke("-c", policy, "--metrics-file", str(prom), when=FIRST)[0] == 0
    emitted = {name for name, _ in samples(prom.read_text())}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## Metrics"):readme.index("## Running in production")]
    documented = set(re.findall(r"^\| `(retention_\w+)`", section, flags=re.M))
    # the scenario has no [rules.check]; tests/test_k_anonymity.py sees that metric emitted
    assert documented - {"retention_k_anonymity_smallest_class"} == emitted
    (alerts,) = [b for b in re.findall(r"```yaml\n(.*?)```", readme, flags=re.S) if "groups:" in b]
    rules = yaml.safe_load(alerts)["groups"][0]["rules"]
    assert rules
    for rule in rules:
        used = set(re.findall(r"retention_\w+", rule["expr"]))
        assert used and used <= emitted, rule["alert"]
