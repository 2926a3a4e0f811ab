"""Rules and cascades in one run: a batch that unblocks a later row, rows detached by one rule,
and a child's own rule after its parent's.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from tests.shopkit import HASH_ENV, USERS_PURGE, Shop, cascades, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def _gifts(shop: Shop) -> sa.Table:
    gifts = sa.Table("gifts", shop.md,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("giver_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
                     sa.Column("recipient_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False))
    gifts.create(shop.engine)
    return gifts


GIFTS = """
    [tables."shop.gifts"]
    on_parent_delete = { giver_id = "delete", recipient_id = "block" }
"""


def test_dry_run_equals_run_when_a_batch_unblocks_a_later_row_of_the_same_rule(shop):
    _gifts(shop)
    shop.user(1, status="closed", closed_at=OLD)      # gives a gift to user 2
    shop.user(2, status="closed", closed_at=OLD)
    shop.insert("gifts", dict(id=1, giver_id=1, recipient_id=2))
    policy = shop.policy(USERS_PURGE + GIFTS, settings="batch_size = 1")
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-users-purge")
    assert (dry.due, dry.protected_total, dry.touch) == (2, 1, 1)
    run = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert run.touch == dry.touch and adds_up(run)


@pytest.mark.xfail(strict=True, reason=(
    "known limitation, documented and warned about by check: with one key deleting and one blocking "
    "to the same parent, deleting the giver (id 2) unblocks the recipient (id 1) after it was judged; "
    "the run stops at what it counted, so the next run deletes the recipient"))
def test_second_run_touches_nothing_when_the_first_unblocked_a_row(shop):
    _gifts(shop)
    shop.user(1, status="closed", closed_at=OLD)
    shop.user(2, status="closed", closed_at=OLD)      # gives a gift to user 1
    shop.insert("gifts", dict(id=1, giver_id=2, recipient_id=1))
    policy = shop.policy(USERS_PURGE + GIFTS)
    first = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert first.touch >= 1
    second = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert second.touch == 0


def test_check_warns_when_deleting_one_row_can_unblock_another(shop):
    _gifts(shop)
    policy = shop.policy(USERS_PURGE + GIFTS)
    warnings = commands.check(policy, env=HASH_ENV).warnings
    assert any("shop.gifts references shop.users twice" in w for w in warnings), warnings


def test_rows_detached_by_one_rule_still_fall_due_under_a_rule_clocked_through_that_fk(shop):
    shop.user(1, status="closed", closed_at=OLD)
    shop.insert("logs", dict(id=1, user_id=1, ip="10.1.2.3", created_at=datetime(2026, 6, 1)))
    policy = shop.policy(USERS_PURGE + """
        [[rules]]
        name = "logs-of-closed-users"
        table = "shop.logs"
        clock = "user.closed_at"
        after = "30d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.logs"]
        on_parent_delete = "detach"
        """)
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "logs-of-closed-users")
    assert dry.touch == 1
    warned = any("detach" in w for w in commands.check(policy, env=HASH_ENV).warnings)
    shop.run(policy, now=NOW)
    shop.run(policy, now=NOW)
    assert shop.count("logs") == 0 or warned


def test_delete_rule_on_a_child_after_its_parents_rule_in_the_same_run(shop):
    for i in (1, 2):
        shop.user(i, status="closed" if i == 1 else "active", closed_at=OLD if i == 1 else None)
        shop.insert("orders", dict(id=i, user_id=i, completed_at=OLD, total=1, buyer_name="b", shipping="s"))
        shop.insert("order_items", dict(id=i, order_id=i, sku="x"))
    policy = shop.policy(USERS_PURGE + """
        [[rules]]
        name = "orders-purge"
        table = "shop.orders"
        clock = "completed_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.orders"]
        on_parent_delete = "delete"
        [tables."shop.order_items"]
        on_parent_delete = "delete"
        """)
    report = shop.run(policy, now=NOW)
    users, orders = outcome(report, "closed-users-purge"), outcome(report, "orders-purge")
    assert (users.touch, cascades(users)) == (1, {"shop.orders:delete": 1, "shop.order_items:delete": 1})
    assert (orders.due, orders.touch, cascades(orders)) == (1, 1, {"shop.order_items:delete": 1})
    assert adds_up(users) and adds_up(orders) and shop.dangling() == []
    assert shop.ids("users") == [2] and shop.ids("orders") == [] and shop.ids("order_items") == []
