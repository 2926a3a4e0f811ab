"""A cascading delete's batches: how many parents one batch takes, and that each takes its children whole.

A batch binds the keys it locked into the statements that lock and delete
the children.  Where the engine binds them as one array per key column
(PostgreSQL), its parameter limit does not bound a batch; elsewhere a batch
takes at most as many keys as the engine binds.
"""

from __future__ import annotations

from datetime import datetime, timezone

from retention.dialects.base import impl_for
from tests.shopkit import USERS_PURGE, cascades, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

# the closed users' purge, their orders and order items deleted with them
CLOSED_USERS = USERS_PURGE + """
[tables."shop.orders"]
on_parent_delete = "delete"

[tables."shop.order_items"]
on_parent_delete = "delete"
"""


def _closed_users_with_orders(shop, n: int) -> None:
    shop.insert("users", *(dict(id=i, status="closed", created_at=OLD, closed_at=OLD) for i in range(1, n + 1)))
    shop.insert("orders", *(dict(id=i, user_id=i) for i in range(1, n + 1)))
    shop.insert("order_items", *(dict(id=2 * i + k, order_id=i, sku="x") for i in range(1, n + 1) for k in (0, 1)))


def test_a_batch_binds_more_keys_than_the_engine_binds_parameters_where_keys_are_arrays(shop, monkeypatch):
    impl = type(impl_for(shop.engine))
    # a low parameter limit stands for the real one (30,000) so that a batch can pass it quickly
    monkeypatch.setattr(impl, "max_bind_params", 100)
    _closed_users_with_orders(shop, 300)
    out = outcome(shop.run(shop.policy(CLOSED_USERS), now=NOW), "closed-users-purge")
    assert (out.status, out.touch) == ("ok", 300)
    assert cascades(out) == {"shop.orders:delete": 300, "shop.order_items:delete": 600}
    if impl.binds_key_arrays:
        assert out.batches == 1          # the first batch (500 rows at most) takes every parent
    else:
        assert out.batches >= 3          # at most 100 keys a batch
    assert shop.count("users") == shop.count("orders") == shop.count("order_items") == 0
    assert shop.dangling() == []
