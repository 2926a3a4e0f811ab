"""What a report never shows: stored values it could not decode, a trigger's message quoting
row values, a connection's password, and terminal control characters from the policy file.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from retention import commands
from retention.cli import cli
from retention.errors import RetentionError
from retention.report import render
from tests.shopkit import HASH_ENV, LOGS_PURGE, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def _invoke(policy: str, *args: str):
    return CliRunner().invoke(cli, ["--config", policy, *args], env=HASH_ENV)


def test_undecodable_text_does_not_put_the_value_in_the_report(sqlite_shop):
    shop = sqlite_shop
    shop.user(1, status="closed", closed_at=OLD)
    with shop.engine.begin() as conn:   # 'José@example.com' written in Latin-1 by a legacy client
        conn.exec_driver_sql("UPDATE users SET email = CAST(x'4a6f73e9406578616d706c652e636f6d' AS TEXT)")
    report = shop.run(shop.policy("""
        [[rules]]
        name = "closed-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "anonymize"
        columns.email = "hash"
        max_fraction = 1.0
        """), dry_run=True, now=NOW)
    out = outcome(report, "closed-anonymize")
    assert out.status == "failed"
    for fmt in ("text", "json", "markdown"):
        assert "example.com" not in render(report, fmt)


@pytest.mark.parametrize("password", ["pa/ss", "two words", "p@ss:wd"])
def test_connection_error_never_shows_the_password(tmp_path, password):
    path = tmp_path / "policies.toml"
    path.write_text('version = 1\n[databases.shop]\nurl = "${DB_URL}"\n')
    url = f"postgresql+psycopg://app:{password}@127.0.0.1:1/shop"
    with pytest.raises(RetentionError) as e:       # unparseable (exit 2) or unreachable (exit 1)
        commands.check(str(path), env={"DB_URL": url})
    secret_tail = password.split("@")[-1].split(":")[-1]
    assert password not in str(e.value) and f"{secret_tail}@" not in str(e.value)


def test_pg_trigger_message_with_row_values_stays_out_of_report_and_logs(pg_shop):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("""CREATE FUNCTION keep_logs() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN RAISE EXCEPTION 'refusing to delete the log of %%', OLD.ip; END $f$""")
        c.exec_driver_sql("CREATE TRIGGER logs_keep BEFORE DELETE ON logs FOR EACH ROW EXECUTE FUNCTION keep_logs()")
    pg_shop.user(1)
    pg_shop.insert("logs", dict(id=1, user_id=1, ip="203.0.113.77", created_at=datetime(2020, 1, 1)))
    result = _invoke(pg_shop.policy(LOGS_PURGE), "--now", "2025-06-01T00:00:00Z", "run")
    assert result.exit_code == 1 and "FAILED" in result.output
    assert "203.0.113.77" not in result.output


def test_text_report_neutralises_terminal_control_characters(sqlite_shop):
    basis = "kept 1 day\\u001b[1A\\u001b[2K\\u001b[32mall ok\\u0007"
    policy = sqlite_shop.policy(LOGS_PURGE.replace("max_fraction", f'basis = "{basis}"\nmax_fraction'))
    text = render(sqlite_shop.run(policy, now=datetime(2025, 6, 1, 12, 0), dry_run=True), "text")
    assert "\x1b" not in text and "\x07" not in text
