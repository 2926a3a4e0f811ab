"""Recipients: every erasure is POSTed to each [[recipients]] URL, retried with backoff across runs,
kept in the outbox until a 2xx, and never sent again after one.

A real HTTP server on 127.0.0.1 answers as each test scripts it: an error,
a timeout, then success.
"""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from click.testing import CliRunner

from retention import cli
from retention.audit import keyed
from retention.config import load_config
from retention.recipients import backoff, deliver
from retention.requests.commands import file_request, list_requests
from retention.state import open_store
from tests.shopkit import HASH_ENV
from tests.test_requests import POLICY, T0, _fill


class Partner:
    """An HTTP endpoint that answers each POST with the next scripted behaviour (then 200)."""

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.received: list[dict] = []
        self.released = threading.Event()
        partner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:      # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                partner.received.append({"key": self.headers["Idempotency-Key"], "body": body,
                                         "type": self.headers["Content-Type"]})
                what = partner.script.pop(0) if partner.script else 200
                if what == "hang":
                    # past any client timeout: answers only when the test closes the partner
                    partner.released.wait(60)
                    what = 200
                try:
                    self.send_response(what)
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/erasure"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def partners():
    made = []

    def make(script):
        p = Partner(script)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


RECIPIENTS = """
[[recipients]]
name = "flaky"
url = "{flaky}"
timeout = "1s"

[[recipients]]
name = "steady"
url = "{steady}"
"""


def _deliver(policy: str, now):
    config = load_config(policy, env=HASH_ENV)
    store = open_store(config.settings.state_url, config.path, config.settings)
    try:
        return deliver(store, config, now)
    finally:
        store.close()


def test_fails_times_out_then_succeeds_and_is_never_sent_twice(shop, partners):
    flaky, steady = partners([500, "hang"]), partners([])
    _fill(shop)
    policy = shop.policy(POLICY + RECIPIENTS.format(flaky=flaky.url, steady=steady.url))
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)

    first = shop.run(policy, now=T0)
    assert first.exit_code == 0, first.errors
    assert first.notifications["delivered"] == 1 and first.notifications["failed"] == 1
    assert any("HTTP 500" in e for e in first.notifications["errors"])
    box = list_requests(policy, now=T0, env=HASH_ENV, outbox=True)["outbox"]
    assert [(o["recipient"], o["attempts"]) for o in box] == [("flaky", 1)]

    # not due yet (backoff): nothing is sent
    assert _deliver(policy, T0 + timedelta(seconds=30)).failed == 0 and len(flaky.received) == 1
    # due: it times out (the recipient's 1s bound), and waits twice as long
    second = _deliver(policy, T0 + backoff(1))
    assert second.failed == 1 and "timed out" in " ".join(second.errors)
    box = list_requests(policy, now=T0, env=HASH_ENV, outbox=True)["outbox"]
    assert box[0]["attempts"] == 2 and box[0]["next_attempt_at"].startswith(
        (T0 + backoff(1) + backoff(2)).isoformat()[:19])

    # the next run delivers it
    later = shop.run(policy, now=T0 + timedelta(minutes=10))
    assert later.notifications["delivered"] == 1 and later.notifications["pending"] == 0
    assert list_requests(policy, now=T0, env=HASH_ENV, outbox=True)["outbox"] == []
    # and nothing is sent again, to either recipient
    shop.run(policy, now=T0 + timedelta(hours=5))
    assert len(flaky.received) == 3 and len(steady.received) == 1

    # one idempotency key per notification, the same on every attempt; the subject as a keyed hash
    assert len({r["key"] for r in flaky.received}) == 1 and flaky.received[0]["key"] != steady.received[0]["key"]
    body = steady.received[0]["body"]
    assert body["subject"] == keyed(HASH_ENV["RETENTION_HASH_KEY"].encode(), 1)
    assert body["request"] == "dsr#1" and body["status"] == "done" and body["erased_at"].startswith("2024-03-01")
    assert steady.received[0]["type"] == "application/json"
    assert all("user1@example.com" not in json.dumps(r) for r in flaky.received + steady.received)


def test_an_unreachable_recipient_stays_in_the_outbox(sqlite_shop, partners):
    shop = sqlite_shop
    _fill(shop)
    steady = partners([])
    # a port nobody listens on
    policy = shop.policy(POLICY + RECIPIENTS.format(flaky="http://127.0.0.1:9/erasure", steady=steady.url))
    file_request(policy, "customer:1", now=T0, env=HASH_ENV)
    report = shop.run(policy, now=T0)
    assert report.notifications["pending"] == 1
    result = CliRunner().invoke(cli.cli, ["-c", policy, "--now", T0.isoformat(), "requests", "--outbox"],
                                env=HASH_ENV)
    assert result.exit_code == 0, result.output
    assert "outbox: 1 undelivered" in result.output and "flaky" in result.output
    assert "Connection" in result.output or "refused" in result.output.lower()


def test_a_partial_erasure_notifies_too(sqlite_shop, partners):
    shop = sqlite_shop
    _fill(shop)
    steady = partners([])
    policy = shop.policy(POLICY + RECIPIENTS.format(flaky=steady.url, steady=steady.url))
    file_request(policy, "customer:2", now=T0, env=HASH_ENV)
    shop.run(policy, now=T0)
    assert [r["body"]["status"] for r in steady.received] == ["partial", "partial"]


def test_a_recipient_url_must_be_http(sqlite_shop):
    from retention.errors import ConfigError
    shop = sqlite_shop
    policy = shop.policy(POLICY + RECIPIENTS.format(flaky="ftp://x", steady="http://127.0.0.1:9/"))
    with pytest.raises(ConfigError, match="recipient"):
        load_config(policy, env=HASH_ENV)
