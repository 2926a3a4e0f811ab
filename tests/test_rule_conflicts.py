"""Rules that would defeat each other are refused when the policy is bound."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from retention import commands
from retention.errors import ConfigError
from tests.shopkit import HASH_ENV

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)

ANONYMIZE_AND_RESTRICT = """
    [[rules]]
    name = "closed-anonymize"
    table = "shop.users"
    clock = "closed_at"
    after = "30d"
    action = "anonymize"
    max_fraction = 1.0
    columns.name = { strategy = "constant", value = "deleted user" }
    mark = "anonymized_at"

    [[rules]]
    name = "closed-restrict"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "restrict"
    max_fraction = 1.0
    restrict_column = "{column}"
"""


def test_a_restrict_rule_writing_an_anonymize_rules_mark_is_refused(shop):
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    before = shop.dump()
    policy = shop.policy(ANONYMIZE_AND_RESTRICT.replace("{column}", "anonymized_at"))
    with pytest.raises(ConfigError) as e:
        commands.run(policy, now=NOW, env=HASH_ENV)
    text = str(e.value)
    assert "rule 'closed-restrict'" in text and "'restrict_column'" in text and "closed-anonymize" in text
    assert shop.dump() == before


def test_a_restrict_rule_with_its_own_column_is_accepted(shop):
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    policy = shop.policy(ANONYMIZE_AND_RESTRICT.replace("{column}", "restricted_at"))
    report = commands.run(policy, now=NOW, env=HASH_ENV)
    assert [r.touch for r in report.rules] == [1, 1]
    assert shop.rows("users")[0]["name"] == "deleted user"
