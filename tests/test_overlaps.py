"""The plain dry run: each rule counted alone, earlier rules that would change its numbers named.

A rule's numbers depend on every table its SQL reads (its clock's parents,
hold registers, blocking children), not only on the tables it deletes from;
and the counts of one rule's cascade must be the ones its run reports.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from tests.shopkit import HOLDS, cascades, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

CLOSED_USERS = """
    [[rules]]
    name = "closed-users"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0
"""


def rule(name: str, table: str, clock: str, action: str, extra: str = "") -> str:
    return f"""
    [[rules]]
    name = "{name}"
    table = "{table}"
    clock = "{clock}"
    after = "1d"
    action = "{action}"
    max_fraction = 1.0
    {extra}
    """


def overlaps(shop, policy: str) -> dict[str, list[str]]:
    report = shop.run(shop.policy(policy), dry_run=True, now=NOW)
    return {r.rule: r.overlaps for r in report.rules}


def test_an_earlier_rule_deleting_a_blocking_child_is_named(shop):
    # orders block users (the default); deleting orders first unblocks users
    policy = rule("orders-purge", "shop.orders", "completed_at", "delete",
                  '[tables."shop.order_items"]\non_parent_delete = "delete"') + CLOSED_USERS
    assert overlaps(shop, policy)["closed-users"] == ["orders-purge"]


def test_an_earlier_rule_changing_a_hold_register_is_named(shop):
    policy = rule("holds-cleanup", "shop.legal_holds", "released_at", "delete") + CLOSED_USERS + """
        [tables."shop.orders"]
        on_parent_delete = "delete"
        [tables."shop.order_items"]
        on_parent_delete = "delete"
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        [tables."shop.logs"]
        on_parent_delete = "detach"
        [tables."shop.legal_holds"]
        on_parent_delete = "delete"
        """ + HOLDS
    # users' delete cascades into legal_holds too, but the hold is what matters: it is read
    assert "holds-cleanup" in overlaps(shop, policy)["closed-users"]
    # a register the rule only reads (no cascade into it) is named as well
    policy = rule("holds-cleanup", "shop.legal_holds", "released_at", "delete") + rule(
        "closed-restrict", "shop.users", "closed_at", "restrict") + HOLDS
    assert overlaps(shop, policy)["closed-restrict"] == ["holds-cleanup"]


def test_an_earlier_rule_changing_a_clocks_parent_is_named(shop):
    policy = rule("merchants-forget-closing", "shop.merchants", "closed_at", "anonymize",
                  'columns.closed_at = "null"') + rule("merchant-customers", "shop.merchant_customers",
                                                      "merchant.closed_at", "delete")
    assert overlaps(shop, policy)["merchant-customers"] == ["merchants-forget-closing"]


def test_unrelated_rules_are_not_named(shop):
    policy = rule("logs-purge", "shop.logs", "created_at", "delete") + rule(
        "merchant-customers", "shop.merchant_customers", "merchant.closed_at", "delete")
    assert overlaps(shop, policy) == {"logs-purge": [], "merchant-customers": []}


@pytest.mark.parametrize("name", ["notes", "zz_notes"])   # the cascade reaches it before or after orders
def test_rows_a_delete_step_removes_are_not_also_counted_as_detached(shop, name):
    notes = sa.Table(name, shop.md,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
                     sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id")))
    notes.create(shop.engine)
    shop.user(1, status="closed", closed_at=OLD)
    shop.insert("orders", dict(id=10, user_id=1, completed_at=OLD, total=1, buyer_name="b"))
    # note 1 goes with its order; note 2 (no order) is detached from the user; note 3 both ways
    shop.insert(name, dict(id=1, user_id=None, order_id=10), dict(id=2, user_id=1, order_id=None),
                dict(id=3, user_id=1, order_id=10))
    policy = shop.policy(CLOSED_USERS + """
        [tables."shop.orders"]
        on_parent_delete = "delete"
        [tables."shop.{name}"]
        on_parent_delete = {{ user_id = "detach", order_id = "delete" }}
        """.format(name=name))
    plan = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-users")
    run = outcome(shop.run(policy, now=NOW), "closed-users")
    # note 3 is detached only where the detach runs before the delete that removes it
    detached = 2 if name == "notes" else 1
    assert cascades(run) == {"shop.orders:delete": 1, f"shop.{name}:delete": 2, f"shop.{name}:detach": detached}
    assert cascades(plan) == cascades(run)
    assert shop.rows(name) == [dict(id=2, user_id=None, order_id=None)]
