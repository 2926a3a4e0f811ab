"""Only what the policy can reach is reflected: unrelated tables cost nothing.

The tables the policy names, every table below them (children a delete
cascades to or is blocked by, in any schema) and every table above those
(clocks, hold paths) are reflected; hundreds of tables outside that closure
are not, though error messages still list every table of the database.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from retention.config import load_config
from retention.dialects import impl_for
from retention.errors import ConfigError
from retention.schema import Catalog, make_engine, policy_tables
from tests.shopkit import HASH_ENV, HOLDS, outcome, protected

NOW = datetime(2026, 6, 1, tzinfo=UTC)
UNRELATED = 60

USERS_PURGE = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "1y"
action = "delete"
max_fraction = 1.0

[tables."shop.logs"]
on_parent_delete = "delete"
"""


def add_tables(shop) -> None:
    pg = shop.engine.dialect.name == "postgresql"
    with shop.engine.begin() as conn:
        # unrelated tables, some with foreign keys among themselves
        for i in range(UNRELATED):
            ref = f", prev_id integer REFERENCES unrelated_{i - 1} (id)" if i % 10 else ""
            conn.exec_driver_sql(f"CREATE TABLE unrelated_{i} (id integer PRIMARY KEY{ref})")
        # a child the policy never names still blocks its parent, so it is reflected
        conn.exec_driver_sql("CREATE TABLE notes (id integer PRIMARY KEY, user_id integer REFERENCES users (id))")
        if pg:
            conn.exec_driver_sql("CREATE SCHEMA crm")
            conn.exec_driver_sql("CREATE TABLE crm.contacts (id integer PRIMARY KEY, "
                                 "user_id integer REFERENCES public.users (id))")


def catalog_for(shop, policy: str) -> Catalog:
    config = load_config(policy, env=HASH_ENV)
    engine = make_engine(shop.url)
    try:
        return Catalog({"shop": engine}, policy_tables(config.model))
    finally:
        engine.dispose()


def test_only_the_policys_foreign_key_closure_is_reflected(shop):
    add_tables(shop)
    policy = shop.policy(HOLDS + USERS_PURGE)
    catalog = catalog_for(shop, policy)
    expected = {"shop.users", "shop.orders", "shop.order_items", "shop.addresses", "shop.logs",
                "shop.legal_holds", "shop.notes"}
    if shop.engine.dialect.name == "postgresql":
        expected.add("shop.crm.contacts")
    assert set(catalog.tables) == expected
    # every table is still known by name (for messages), none of the unrelated ones reflected
    assert len(catalog.names["shop"]) >= UNRELATED + len(expected)
    assert {fk.child for fk in catalog.children_of("shop.users")} == expected - {"shop.users", "shop.order_items"}


def test_a_child_the_policy_never_names_still_blocks(shop):
    add_tables(shop)
    shop.user(1, closed_at=datetime(2020, 1, 1))
    shop.user(2, closed_at=datetime(2020, 1, 1))
    with shop.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO notes VALUES (1, 1)")
    out = outcome(shop.run(shop.policy(USERS_PURGE), now=NOW), "closed-users")
    assert protected(out) == {"children:shop.notes": 1} and out.touch == 1
    assert shop.ids("users") == [1]


def test_an_unknown_table_is_named_among_every_table_of_the_database(shop):
    add_tables(shop)
    policy = shop.policy(USERS_PURGE.replace('table = "shop.users"', 'table = "shop.userz"'))
    with pytest.raises(ConfigError) as e:
        shop.run(policy, dry_run=True, now=NOW)
    assert "shop.userz" in str(e.value) and "unrelated_59" in str(e.value)


def test_a_clock_on_a_parent_outside_the_named_tables_is_reflected(shop):
    add_tables(shop)
    policy = shop.policy("""
    [[rules]]
    name = "items"
    table = "shop.order_items"
    clock = "order.completed_at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0
    """)
    catalog = catalog_for(shop, policy)
    assert {"shop.order_items", "shop.orders", "shop.users"} <= set(catalog.tables)
    assert not any(k.startswith("shop.unrelated_") for k in catalog.tables)
    assert "shop.merchants" not in catalog.tables
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=datetime(2020, 1, 1), total=1))
    shop.insert("order_items", dict(id=1, order_id=1, sku="A"))
    assert outcome(shop.run(policy, now=NOW), "items").touch == 1


def test_the_foreign_key_graph_is_read_without_reflecting_tables(shop):
    """The graph lists every table and key, and whole-table reflection is left to the closure."""
    add_tables(shop)
    engine = make_engine(shop.url)
    try:
        graph = impl_for(engine).catalog_graph(engine)
    finally:
        engine.dispose()
    names = {name for _schema, name in graph.tables}
    assert {f"unrelated_{i}" for i in range(UNRELATED)} <= names
    chain = [fk for fk in graph.fks if fk.child[1].startswith("unrelated_")]
    assert len(chain) == UNRELATED - UNRELATED // 10
    order_fk = [fk for fk in graph.fks if fk.child[1] == "orders"]
    assert [(fk.columns, fk.parent[1], fk.parent_columns, fk.nullable) for fk in order_fk] == \
        [(("user_id",), "users", ("id",), False)]
