"""Logging: JSON lines off a TTY, credentials masked, progress only on a TTY."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
import structlog
from sqlalchemy.engine import make_url

from retention.log import configure_logging, mask_credentials, mask_url, progress


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _reset_structlog():
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


def lines_of(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_on_a_non_tty_stream():
    stream = io.StringIO()
    configure_logging(None, stream=stream)
    structlog.contextvars.bind_contextvars(run_id="r-42")
    log = structlog.get_logger()
    log.info("rule.done", rule="access-logs", touched=120)
    log.warning("guard.tripped", rule="users", table_rows=10)
    log.debug("hidden")   # below the default level

    records = lines_of(stream)
    assert [r["event"] for r in records] == ["rule.done", "guard.tripped"]
    assert records[0]["run_id"] == "r-42" and records[1]["run_id"] == "r-42"
    assert records[0]["touched"] == 120 and records[0]["level"] == "info"
    assert records[1]["level"] == "warning"
    stamp = datetime.fromisoformat(records[0]["timestamp"].replace("Z", "+00:00"))
    assert stamp.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - stamp) < timedelta(minutes=1)


def test_console_on_a_tty_and_when_asked():
    tty = FakeTTY()
    configure_logging(None, stream=tty)
    structlog.get_logger().info("hello", rule="x")
    assert "hello" in tty.getvalue()
    with pytest.raises(json.JSONDecodeError):
        json.loads(tty.getvalue().splitlines()[0])

    plain = io.StringIO()
    configure_logging("console", stream=plain)
    structlog.get_logger().info("hello", rule="x")
    assert "hello" in plain.getvalue() and "\x1b[" not in plain.getvalue()   # no colour off a TTY

    forced = FakeTTY()
    configure_logging("json", stream=forced)
    structlog.get_logger().info("hello")
    assert lines_of(forced)[0]["event"] == "hello"


def test_level_filters():
    stream = io.StringIO()
    configure_logging("json", stream=stream, level="warning")
    log = structlog.get_logger()
    log.info("quiet")
    log.error("loud")
    assert [r["event"] for r in lines_of(stream)] == ["loud"]


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="json, console"):
        configure_logging("xml", stream=io.StringIO())


@pytest.mark.parametrize("url, expected", [
    ("postgresql+psycopg://shop:s3cret@db:5432/shop", "postgresql+psycopg://shop:***@db:5432/shop"),
    ("mysql+pymysql://app:p@ss@db/app", "mysql+pymysql://app:***@db/app"),
    ("redis://:tok3n@cache:6379/0", "redis://:***@cache:6379/0"),
    ("postgresql://shop@db/shop", "postgresql://shop@db/shop"),   # no password: unchanged
    ("sqlite:///retention-demo.db", "sqlite:///retention-demo.db"),
    ("https://partner.example:8443/erasure", "https://partner.example:8443/erasure"),
    ("failed: postgresql://a:b1@h1/x then mysql://c:d2@h2/y", "failed: postgresql://a:***@h1/x then mysql://c:***@h2/y"),
])
def test_mask_url(url, expected):
    assert mask_url(url) == expected


def test_passwords_masked_in_event_values_and_exceptions():
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    log = structlog.get_logger()
    log.info("connect", url="postgresql://shop:s3cret@db/shop",
             targets=["mysql://u:an0ther@h/db"], nested={"dsn": "host=db password=pw0rd user=x"},
             url_object=make_url("postgresql://shop:s3cret2@db/shop"))
    try:
        raise RuntimeError("could not connect to postgresql://shop:inexc3pt@db/shop")
    except RuntimeError:
        log.exception("connect.failed")

    text = stream.getvalue()
    for secret in ("s3cret", "an0ther", "pw0rd", "s3cret2", "inexc3pt"):
        assert secret not in text
    first, second = lines_of(stream)
    assert first["url"] == "postgresql://shop:***@db/shop"
    assert first["targets"] == ["mysql://u:***@h/db"]
    assert first["nested"] == {"dsn": "host=db password=*** user=x"}
    assert "postgresql://shop:***@db/shop" in second["exception"]


def test_passwords_masked_on_the_console_too():
    stream = io.StringIO()
    configure_logging("console", stream=stream)
    log = structlog.get_logger()
    try:
        raise RuntimeError("postgresql://shop:inexc3pt@db/shop")
    except RuntimeError as exc:
        log.exception("boom", url="postgresql://shop:s3cret@db/shop")
        log.error("again", exc_info=exc)
    assert stream.getvalue().count("Traceback (most recent call last)") == 2
    assert "s3cret" not in stream.getvalue() and "inexc3pt" not in stream.getvalue()
    assert "postgresql://shop:***@db/shop" in stream.getvalue()


def test_mask_credentials_leaves_other_values_alone():
    event = {"event": "x", "rows": 5, "ratio": 0.5, "ok": True, "none": None, "name": "access-logs"}
    assert mask_credentials(None, "info", dict(event)) == event


def test_progress_writes_nothing_to_a_non_tty_stream():
    stream = io.StringIO()
    with progress(100, "deleting", stream=stream) as bar:
        for _ in range(10):
            bar.advance(10)
    assert list(progress(3, "iterating", stream=stream)) == [0, 1, 2]
    assert stream.getvalue() == ""


def test_progress_draws_a_bar_on_a_tty():
    tty = FakeTTY()
    with progress(4, "deleting", stream=tty) as bar:
        for _ in range(4):
            bar.advance()
    out = tty.getvalue()
    assert out.startswith("\r") and out.endswith("\n")
    final = out.rstrip("\n").split("\r")[-1]
    assert "deleting [" in final and "4/4" in final and "100%" in final
    assert out.count("\n") == 1


def test_progress_track_yields_every_item_and_ends_the_line():
    tty = FakeTTY()
    assert list(progress(3, "rules", stream=tty).track("abc")) == ["a", "b", "c"]
    assert tty.getvalue().endswith("\n") and "3/3" in tty.getvalue()
