"""Every bad policy file is refused with a message naming file, rule and key; nothing is touched."""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import Shop

GOOD_RULE = """
[[rules]]
name = "logs"
table = "shop.logs"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
"""

CASES = [
    # (id, policy body, expected fragments of the message)
    ("unknown-key", GOOD_RULE.replace('after = "1d"', 'aftr = "1d"\nafter = "1d"'),
     ["rule 'logs'", "key 'aftr'", "unknown key"]),
    ("missing-key", GOOD_RULE.replace('clock = "created_at"\n', ""), ["rule 'logs'", "key 'clock'", "missing"]),
    ("wrong-type", GOOD_RULE.replace("max_fraction = 1.0", 'max_fraction = "all"'),
     ["rule 'logs'", "key 'max_fraction'"]),
    ("ambiguous-3m", GOOD_RULE.replace('"1d"', '"3m"'), ["rule 'logs'", "key 'after'", "3mo", "3min"]),
    ("duplicate-name", GOOD_RULE + GOOD_RULE, ["rule 'logs'", "key 'name'", "duplicate"]),
    ("not-kebab", GOOD_RULE.replace('name = "logs"', 'name = "Logs_1"'), ["key 'name'", "kebab"]),
    ("unknown-action", GOOD_RULE.replace('"delete"', '"shred"'), ["rule 'logs'", "key 'action'"]),
    ("unknown-strategy", GOOD_RULE.replace('action = "delete"', 'action = "anonymize"\ncolumns.ip = "scramble"'),
     ["rule 'logs'", "key 'columns.ip'", "scramble"]),
    ("missing-table", GOOD_RULE.replace("shop.logs", "shop.weblogs"),
     ["rule 'logs'", "key 'table'", "shop.weblogs", "does not exist"]),
    ("unknown-database", GOOD_RULE.replace("shop.logs", "crm.logs"), ["rule 'logs'", "key 'table'", "crm"]),
    ("missing-column", GOOD_RULE.replace('clock = "created_at"', 'clock = "made_at"'),
     ["rule 'logs'", "key 'clock'", "made_at"]),
    ("clock-not-a-time", GOOD_RULE.replace('clock = "created_at"', 'clock = "ip"'), ["rule 'logs'", "key 'clock'"]),
    ("where-column", GOOD_RULE + 'where = { kind = "x" }\n', ["rule 'logs'", "key 'where.kind'"]),
    ("null-into-not-null", """
[[rules]]
name = "users-anon"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "anonymize"
columns.status = "null"
""", ["rule 'users-anon'", "key 'columns.status'", "NOT NULL"]),
    ("constant-too-long", """
[[rules]]
name = "users-anon"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "anonymize"
columns.phone = { strategy = "constant", value = "a value far longer than thirty characters" }
""", ["rule 'users-anon'", "key 'columns.phone'"]),
    ("constant-into-unique", """
[[rules]]
name = "users-anon"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "anonymize"
columns.email = { strategy = "constant", value = "gone" }
""", ["rule 'users-anon'", "key 'columns.email'", "UNIQUE"]),
    ("strategy-param", """
[[rules]]
name = "users-anon"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "anonymize"
columns.phone = { strategy = "mask", keep_last = -1 }
""", ["rule 'users-anon'", "columns.phone", "keep_last"]),
    ("unknown-subject", """
[[holds]]
name = "litigation"
table = "shop.legal_holds"
subject = "client"
subject_column = "user_id"
""", ["hold 'litigation'", "key 'subject'", "client"]),
    ("detach-not-null", GOOD_RULE + """
[tables."shop.orders"]
on_parent_delete = "detach"
""", ['[tables."shop.orders"]', "key 'on_parent_delete'", "NOT NULL"]),
    ("bad-where-sql", GOOD_RULE + 'where_sql = "no_such_column > 3 AND"\n', ["rule 'logs'", "key 'where_sql'"]),
    ("bad-timezone", GOOD_RULE, ["[settings]", "key 'timezone'", "Mars/Olympus"]),
]


@pytest.fixture
def shop(backend, tmp_path):
    s = Shop(backend, tmp_path)
    s.user(1)
    s.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    yield s
    s.close()


def _fingerprint(shop: Shop) -> tuple:
    dump = shop.dump()
    if shop.url.startswith("sqlite:///"):
        return dump, hashlib.sha256(Path(shop.url[len("sqlite:///"):]).read_bytes()).hexdigest()
    return dump, None


@pytest.mark.parametrize("case, body, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_policy_is_refused_naming_file_rule_and_key_and_changes_nothing(shop, case, body, fragments):
    settings = 'timezone = "Mars/Olympus"' if case == "bad-timezone" else ""
    policy = shop.policy(body, settings=settings)
    before = _fingerprint(shop)
    for verb in (["check"], ["plan"], ["run"]):
        result = CliRunner().invoke(cli, ["--config", policy, *verb], env={"RETENTION_HASH_KEY": "k"})
        assert result.exit_code == 2, (verb, result.output)
        message = result.output
        assert policy in message
        for fragment in fragments:
            assert fragment in message, (fragment, message)
    assert _fingerprint(shop) == before


def test_hash_refuses_to_run_without_a_key(shop):
    policy = shop.policy("""
[[rules]]
name = "users-anon"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "anonymize"
columns.email = "hash"
""")
    before = _fingerprint(shop)
    result = CliRunner().invoke(cli, ["--config", policy, "run"], env={"RETENTION_HASH_KEY": ""})
    assert result.exit_code == 2
    assert "RETENTION_HASH_KEY" in result.output and "columns.email" in result.output
    assert _fingerprint(shop) == before


def test_every_error_is_reported_at_once(shop):
    body = GOOD_RULE.replace('clock = "created_at"', 'clock = "made_at"') + """
[[rules]]
name = "other"
table = "shop.nothere"
clock = "created_at"
after = "1d"
action = "delete"
"""
    result = CliRunner().invoke(cli, ["--config", shop.policy(body), "check"])
    assert result.exit_code == 2
    assert "made_at" in result.output and "shop.nothere" in result.output


def test_environment_variables_and_url_files(tmp_path, monkeypatch):
    from retention.config import load_config
    from retention.errors import ConfigError
    text = """
version = 1
[databases.shop]
url = "${SHOP_URL:-sqlite:///default.db}"
[databases.crm]
url_file = "%s"
[databases.erp]
url = "${ERP_URL}"
""" % (tmp_path / "secret")
    (tmp_path / "secret").write_text("postgresql://app:s3cret@db/crm\n")
    path = tmp_path / "p.toml"
    path.write_text(text)
    cfg = load_config(path, env={"ERP_URL": "sqlite:///erp.db"})
    assert cfg.urls == {"shop": "sqlite:///default.db", "crm": "postgresql://app:s3cret@db/crm",
                        "erp": "sqlite:///erp.db"}
    assert load_config(path, env={"ERP_URL": "x", "SHOP_URL": "sqlite:///s.db"}).urls["shop"] == "sqlite:///s.db"
    with pytest.raises(ConfigError) as e:
        load_config(path, env={})
    assert "[databases.erp]" in str(e.value) and "ERP_URL" in str(e.value) and "key 'url'" in str(e.value)


def test_credentials_are_masked_when_a_database_cannot_be_opened(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("""
version = 1
[databases.shop]
url = "postgresql+psycopg://app:hunter2@127.0.0.1:1/shop"
""")
    result = CliRunner().invoke(cli, ["--config", str(path), "check"])
    assert result.exit_code == 1          # the file is fine; the database cannot be reached now
    assert "hunter2" not in result.output and "app:***@" in result.output


def test_where_sql_with_parentheses_and_quotes_inside_literals_is_accepted(shop):
    policy = shop.policy(GOOD_RULE + """where_sql = "(ip <> ')--;(' AND ip <> 'it''s') OR ip IS NULL"\n""")
    result = CliRunner().invoke(cli, ["--config", policy, "check"])
    assert result.exit_code == 0, result.output
