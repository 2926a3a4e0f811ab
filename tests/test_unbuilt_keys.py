"""Keys the spec defines but this release does not enforce are refused, never accepted and ignored.

An operator who writes ``[[requests]]`` expects erasure requests answered; a
job that accepted the section and did nothing would break that promise
silently.  Each such key is refused with a message saying it is not built yet.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from retention import commands
from retention.cli import cli
from retention.config import NOT_BUILT_YET
from tests.shopkit import HASH_ENV

ROOT = Path(__file__).resolve().parent.parent

RULE = """
[[rules]]
name = "logs"
table = "shop.logs"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
"""

UNBUILT = [
    (RULE.replace('action = "delete"', 'action = "anonymize"') + 'columns.ip = "fake"\n',
     "rule 'logs' key 'columns.ip'"),
    (RULE.replace('action = "delete"', 'action = "anonymize"') + 'columns.ip = { strategy = "fake", kind = "ip" }\n',
     "rule 'logs' key 'columns.ip'"),
]


@pytest.mark.parametrize("body, names", UNBUILT, ids=["fake", "fake-table"])
def test_a_key_not_built_yet_is_refused_and_nothing_runs(shop, body, names):
    from datetime import datetime
    shop.user(1)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2020, 1, 1)))
    before = shop.dump()
    policy = shop.policy(RULE + body if "[[rules]]" not in body else body)
    for verb in ("check", "run"):
        result = CliRunner().invoke(cli, ["--config", policy, verb], env=HASH_ENV)
        assert result.exit_code == 2, result.output
        assert names in result.output and "not built yet" in result.output, result.output
    assert shop.dump() == before


def test_partitions_delete_is_accepted_as_the_default_it_is(shop):
    result = CliRunner().invoke(cli, ["--config", shop.policy(RULE + '[tables."shop.logs"]\npartitions = "delete"\n'),
                                      "check"], env=HASH_ENV)
    assert result.exit_code == 0, result.output


def test_every_refusal_says_not_built_yet():
    assert NOT_BUILT_YET and all("not built yet" in message for _path, _refuse, message in NOT_BUILT_YET)


def test_the_root_policy_file_still_checks_against_the_demo(tmp_path):
    from datetime import datetime, timezone

    from retention.demo import create_demo
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    create_demo(url, now=datetime(2026, 3, 15, tzinfo=timezone.utc))
    result = commands.check(str(ROOT / "policies.toml"), env={"SHOP_DATABASE_URL": url, **HASH_ENV})
    assert result.rules > 0
