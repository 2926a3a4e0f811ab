"""Long foreign-key chains: a hold five keys from its subject, deletes cascading five and
eight levels deep, counted the same by the dry run.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from retention import commands
from tests.shopkit import HASH_ENV, HOLDS, outcome

NOW = datetime(2025, 6, 1, 12, 0)


CLOSED_USERS_DELETE = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0
"""


def _chain(shop, depth: int) -> sa.MetaData:
    """users <- lvl1 <- lvl2 <- ... <- lvl{depth}, each with a created_at clock."""
    md = sa.MetaData()
    sa.Table("users", md, autoload_with=shop.engine)
    prev = "users"
    for i in range(1, depth + 1):
        sa.Table(f"lvl{i}", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                 sa.Column("parent_id", sa.Integer, sa.ForeignKey(f"{prev}.id"), nullable=False),
                 sa.Column("created_at", sa.DateTime, nullable=False))
        prev = f"lvl{i}"
    md.create_all(shop.engine)
    return md


def test_hold_protects_a_row_five_foreign_keys_from_its_subject(shop):
    md = _chain(shop, 5)
    shop.user(1)
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    with shop.engine.begin() as c:
        for i in range(1, 6):
            c.execute(md.tables[f"lvl{i}"].insert(), [dict(id=1, parent_id=1, created_at=datetime(2020, 1, 1))])
    policy = shop.policy(HOLDS + """
[[rules]]
name = "lvl5-purge"
table = "shop.lvl5"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
""")
    shop.run(policy, now=NOW)
    with shop.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(md.tables["lvl5"])).scalar() == 1


def test_sqlite_delete_cascading_five_levels_runs(sqlite_shop):
    md = _chain(sqlite_shop, 5)
    for i in (1, 2):
        sqlite_shop.user(i, status="closed", closed_at=datetime(2020, 1, 1))
    with sqlite_shop.engine.begin() as c:
        for lvl in range(1, 6):
            c.execute(md.tables[f"lvl{lvl}"].insert(),
                      [dict(id=i, parent_id=i, created_at=datetime(2020, 1, 1)) for i in (1, 2)])
    tables = "".join(f'[tables."shop.lvl{i}"]\non_parent_delete = "delete"\n' for i in range(1, 6))
    policy = sqlite_shop.policy(tables + CLOSED_USERS_DELETE)
    commands.check(policy, env=HASH_ENV)
    out = outcome(sqlite_shop.run(policy, now=NOW), "closed-users")
    assert out.error is None and out.touch == 2, out.error
    assert sum(c.rows for c in out.cascades) == 10


def test_a_delete_cascading_eight_levels_with_a_hold_runs_and_honours_the_hold(shop):
    # protection looks through the whole cascade in flat subqueries: no parser depth limit in sight
    _chain(shop, 8)
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    with shop.engine.begin() as c:
        for uid in (1, 2):
            for level in range(1, 9):
                parent = uid if level == 1 else uid * 100 + level - 1
                c.exec_driver_sql(f"INSERT INTO lvl{level} (id, parent_id, created_at) "
                                  f"VALUES ({uid * 100 + level}, {parent}, '2020-01-01 00:00:00')")
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    tables = "".join(f'[tables."shop.lvl{i}"]\non_parent_delete = "delete"\n' for i in range(1, 9))
    policy = shop.policy(HOLDS + tables + """
[tables."shop.legal_holds"]
on_parent_delete = "block"

[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "1d"
action = "delete"
max_fraction = 1.0
""")
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-users")
    out = outcome(shop.run(policy, now=NOW), "closed-users")
    assert (out.status, out.touch, out.cascaded_total) == ("ok", 1, 8)
    assert [(p.kind, p.name, p.rows) for p in out.protected] == [("hold", "litigation", 1)]
    assert (dry.touch, dry.cascaded_total) == (out.touch, out.cascaded_total)
    assert shop.ids("users") == [1] and shop.dangling() == []
