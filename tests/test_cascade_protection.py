"""What protects a cascading delete's parent: holds on the rows it would reach, read as cheaply as they can be.

A hold protects a parent when it holds the parent's subject or that of any
row the cascade would delete.  A child whose only way to its subject goes
through the parent it is deleted with adds nothing to the parent's own term,
and is not read for it: that EXISTS over every child row would cost each
batch's statements (and the count) a scan of the children.  A child with a
way of its own still protects its parent.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from retention import commands
from retention.plan import build_plans
from tests import shopkit
from tests.shopkit import HASH_ENV, HOLDS, extra_tables, outcome, protected

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

OLD_ORDERS = HOLDS + shopkit.OLD_ORDERS + """
[tables."shop.shipments"]
on_parent_delete = "delete"
"""


def _shipments(md):
    # a shipment's recipient is a subject of its own, not necessarily the order's buyer
    sa.Table("shipments", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
             sa.Column("recipient_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False))


def _work_sql(shop, policy: str) -> str:
    with commands.open_session(policy, env=HASH_ENV) as s:
        plan = next(p for p in build_plans(s.binding, s.ctx) if p.rule.name == "old-orders")
        return str(plan.work)


def test_a_child_reaching_its_subject_only_through_the_parent_is_not_read(shop):
    extra_tables(shop, _shipments)
    sql = _work_sql(shop, shop.policy(OLD_ORDERS))
    assert "order_items" not in sql          # its customer is the order's: the order's own term says it
    assert "shipments" in sql                # its recipient is a subject of its own


def test_holds_on_the_parent_and_on_a_child_with_its_own_subject_still_protect(shop):
    extra_tables(shop, _shipments)
    for i in (1, 2, 3):
        shop.user(i)
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))
    shop.insert("orders", dict(id=10, user_id=1, completed_at=OLD),     # shipped to held user 2
                dict(id=11, user_id=2, completed_at=OLD),               # bought by held user 2
                dict(id=12, user_id=1, completed_at=OLD),               # nobody held
                dict(id=13, user_id=3, completed_at=OLD))               # its items are user 3's too
    shop.insert("order_items", dict(id=1, order_id=11, sku="a"), dict(id=2, order_id=12, sku="b"),
                dict(id=3, order_id=13, sku="c"))
    shop.insert("shipments", dict(id=1, order_id=10, recipient_id=2), dict(id=2, order_id=13, recipient_id=3))
    out = outcome(shop.run(shop.policy(OLD_ORDERS), now=NOW), "old-orders")
    assert (out.status, out.touch) == ("ok", 2)
    assert protected(out) == {"hold:litigation": 2}
    assert shop.ids("orders") == [10, 11]
    assert shop.ids("order_items") == [1] and shop.ids("shipments") == [1]
    assert shop.dangling() == []
