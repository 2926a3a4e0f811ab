"""``check`` warns about a foreign key a delete follows that no index begins with, on every engine.

A cascade or a blocking check looks children up by the key in every batch;
without an index that is a full scan of the child table each time.
"""

from __future__ import annotations

import sqlalchemy as sa

from retention import commands
from tests.shopkit import HASH_ENV

USERS_PURGE = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "1y"
action = "delete"
max_fraction = 1.0

[tables."shop.orders"]
on_parent_delete = "delete"

[tables."shop.order_items"]
on_parent_delete = "delete"
"""


def unindexed(policy: str) -> set[str]:
    return {w.split(":", 1)[0] for w in commands.check(policy, env=HASH_ENV).warnings if "no index" in w}


def expected(shop, keys: set[str]) -> set[str]:
    """``keys`` on engines that let a foreign key go without an index.

    InnoDB (MySQL, MariaDB) creates an index for every foreign key that no
    index begins with, and refuses to drop it: there no key is ever unindexed,
    which the database itself must confirm here.
    """
    if shop.engine.dialect.name not in ("mysql", "mariadb"):
        return keys
    inspector = sa.inspect(shop.engine)
    for key in keys:
        _, table, column = key.split(".")
        assert any(ix["column_names"][0] == column for ix in inspector.get_indexes(table)), key
    return set()


def test_every_unindexed_key_a_delete_follows_is_named_once(shop):
    policy = shop.policy(USERS_PURGE)
    # cascaded (orders, and order_items below them) and blocking (the others) keys alike
    assert unindexed(policy) == expected(shop, {"shop.orders.user_id", "shop.order_items.order_id",
                                                "shop.addresses.user_id", "shop.logs.user_id",
                                                "shop.legal_holds.user_id"})


def test_an_index_that_begins_with_the_key_silences_the_warning(shop):
    with shop.engine.begin() as conn:
        conn.exec_driver_sql("CREATE INDEX orders_by_user ON orders (user_id, completed_at)")
        # an index that does not begin with the key does not help
        conn.exec_driver_sql("CREATE INDEX items_by_sku ON order_items (sku, order_id)")
        conn.exec_driver_sql("CREATE UNIQUE INDEX one_address ON addresses (user_id)")
    assert unindexed(shop.policy(USERS_PURGE)) == expected(shop, {"shop.order_items.order_id", "shop.logs.user_id",
                                                                  "shop.legal_holds.user_id"})


def test_no_index_warning_without_a_delete(shop):
    policy = shop.policy("""
    [[rules]]
    name = "restrict-closed"
    table = "shop.users"
    clock = "closed_at"
    after = "1y"
    action = "restrict"
    max_fraction = 1.0
    """)
    assert unindexed(policy) == set()
