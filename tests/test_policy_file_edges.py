"""Policy files as editors and operators write them: a UTF-8 BOM with CRLF line ends, and
database names with a dot.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from retention import commands
from retention.cli import cli
from retention.errors import ConfigError
from tests.shopkit import HASH_ENV, LOGS_PURGE


def _invoke(policy: str, *args: str):
    return CliRunner().invoke(cli, ["--config", policy, *args], env=HASH_ENV)


def test_policy_file_with_a_utf8_bom_and_crlf_loads(sqlite_shop):
    path = Path(sqlite_shop.policy(LOGS_PURGE))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    result = _invoke(str(path), "check")
    assert result.exit_code == 0, result.output


def test_database_name_with_a_dot_is_usable_or_rejected_where_it_is_declared(sqlite_shop):
    shop = sqlite_shop
    policy = shop.policy(f"""
        [databases."my.db"]
        url = "{shop.url}"

        [[rules]]
        name = "logs-purge"
        table = "my.db.logs"
        clock = "created_at"
        after = "1d"
        action = "delete"
        """)
    try:
        commands.check(policy, env={})
    except ConfigError as e:
        assert "[databases.my.db]" in str(e)
