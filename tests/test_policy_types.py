"""Policy values have the type TOML gives them, and every bad value is an exit 2 naming its key.

TOML has real booleans, numbers and dates, so ``enabled = "no"`` is not
"false" and ``max_fraction = "0.5"`` is not a number: both are refused rather
than coerced.  Inputs that used to end in a traceback (a non-UTF-8 url_file,
absurdly nested tables, a list where a word belongs, integers beyond 64 bits)
are refused with the file, the section and the key.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from click.testing import CliRunner

from retention import commands
from retention.cli import cli
from tests.shopkit import HASH_ENV, outcome

RULE = """
[[rules]]
name = "logs"
table = "shop.logs"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
"""

ANON = RULE.replace('action = "delete"', 'action = "anonymize"')


def _check(policy: str):
    return CliRunner().invoke(cli, ["--config", policy, "check"], env=HASH_ENV)


def _refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), result.exception     # not an uncaught error
    for fragment in fragments:
        assert fragment in result.output, result.output


@pytest.mark.parametrize("body, fragments", [
    (RULE + 'enabled = "no"\n', ["rule 'logs'", "key 'enabled'", "'no'"]),
    (RULE.replace("max_fraction = 1.0", 'max_fraction = "0.5"'), ["rule 'logs'", "key 'max_fraction'", "'0.5'"]),
    (RULE + "max_rows = 10.5\n", ["rule 'logs'", "key 'max_rows'"]),
    (RULE + "where = { id = 99999999999999999999999 }\n", ["rule 'logs'", "key 'where.id'", "64 bits"]),
    (ANON + 'columns.ip = { strategy = "mask", keep_last = 99999999999999999999999 }\n',
     ["rule 'logs'", "key 'columns.ip.keep_last'", "64 bits"]),
    (ANON + 'columns.ip = { strategy = "generalize", keep_prefix = 99999999999999999999999 }\n',
     ["rule 'logs'", "key 'columns.ip.keep_prefix'", "64 bits"]),
    (ANON + 'columns.ip = { strategy = "generalize", to = ["year"] }\n', ["rule 'logs'", "key 'columns.ip.to'"]),
    (RULE + 'where = { created_at = { lt = "yesterday" } }\n', ["rule 'logs'", "key 'where.created_at'"]),
], ids=["enabled-text", "fraction-text", "rows-float", "where-int", "keep-last-int", "keep-prefix-int",
        "to-list", "where-text-for-time"])
def test_values_of_the_wrong_type_are_refused_naming_the_key(shop, body, fragments):
    shop.user(1)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    before = shop.dump()
    _refused(_check(shop.policy(body)), *fragments)
    result = CliRunner().invoke(cli, ["--config", shop.policy(body), "run"], env=HASH_ENV)
    _refused(result, *fragments)
    assert shop.dump() == before


def test_a_timeout_the_database_cannot_take_is_refused_under_its_own_key(shop):
    # PostgreSQL takes milliseconds as a 32-bit integer: 9999 days used to fail as a bad 'url'
    result = _check(shop.policy(RULE, settings='lock_timeout = "9999d"'))
    _refused(result, "[settings]", "key 'lock_timeout'")
    assert "key 'url'" not in result.output


def test_the_longest_timeout_the_database_takes_is_accepted(shop):
    result = _check(shop.policy(RULE, settings='lock_timeout = "24d"\nstatement_timeout = "1h"'))
    assert result.exit_code == 0, result.output


def test_a_url_file_that_is_not_utf8_is_refused(tmp_path):
    secret = tmp_path / "url"
    secret.write_bytes(b"\xff\xfepostgresql://x")
    policy = tmp_path / "p.toml"
    policy.write_text(f'version = 1\n[databases.shop]\nurl_file = "{secret}"\n')
    _refused(_check(str(policy)), "[databases.shop]", "key 'url_file'", "UTF-8")


def test_absurdly_nested_toml_is_refused(tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('version = 1\n[databases.shop]\nurl = "sqlite://"\n'
                      + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    _refused(_check(str(policy)), "p.toml", "nested")


def test_durations_as_strings_and_dates_from_toml_keep_working(shop):
    shop.user(1, status="closed", closed_at=datetime(2024, 1, 1))
    shop.user(2, status="closed", closed_at=datetime(2024, 3, 1))
    policy = shop.policy("""
    [[rules]]
    name = "closed"
    table = "shop.users"
    clock = "closed_at"
    after = "P30D"
    action = "restrict"
    max_fraction = 1
    enabled = true
    where = { closed_at = { lt = 2024-02-01T00:00:00Z }, status = ["closed"] }
    """, settings='lock_timeout = "5s"\nmax_batch_seconds = 1')
    out = outcome(commands.run(policy, env=HASH_ENV, now=datetime(2025, 1, 1, tzinfo=timezone.utc)), "closed")
    assert (out.due, out.touch) == (1, 1), out.error
