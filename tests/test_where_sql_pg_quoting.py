"""A ``where_sql`` fragment cannot leave its parentheses through PostgreSQL's own quoting
(dollar quotes, ``E''`` escape strings).
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from tests.shopkit import HOLDS

NOW = datetime(2025, 6, 1, 12, 0)


@pytest.mark.parametrize("quote", ["$$'$$", "E'\\''"], ids=["dollar", "escape-string"])
def test_pg_where_sql_cannot_break_out_of_its_parentheses_through_pg_quoting(pg_shop, quote):
    pg_shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))     # held
    pg_shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))     # due
    pg_shop.user(3, status="active", closed_at=None)                     # never due
    pg_shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    where_sql = f"name <> {quote} ) OR (1=1) OR (name = {quote}"
    policy = pg_shop.policy(HOLDS + f"""
[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "restrict"
max_fraction = 1.0
where_sql = {json.dumps(where_sql)}
""")
    try:
        pg_shop.run(policy, now=NOW)
    except Exception:
        pass            # refusing the fragment is a fix too
    restricted = {r["id"] for r in pg_shop.rows("users") if r["restricted_at"] is not None}
    assert restricted <= {2}, restricted
