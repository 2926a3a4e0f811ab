"""Deleting a parent: its children are deleted, blocked or refused, never removed silently,
and the dry run counts the cascade exactly as the run does.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from retention.errors import ConfigError
from tests.shopkit import HASH_ENV, cascades, extra_tables, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def _messages(md):
    sa.Table("messages", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("sender_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
             sa.Column("recipient_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False))


def test_dry_run_cascade_counts_equal_run_for_a_child_with_two_fks_to_the_parent(shop):
    extra_tables(shop, _messages)
    shop.user(1, status="closed", closed_at=OLD)
    shop.user(2, status="closed", closed_at=OLD)
    shop.insert("messages", dict(id=1, sender_id=1, recipient_id=2))
    policy = shop.policy("""
        [[rules]]
        name = "closed-accounts"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.messages"]
        on_parent_delete = "delete"
        """)
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-accounts")
    run = outcome(shop.run(policy, now=NOW), "closed-accounts")
    assert run.touch == 2 and shop.ids("messages") == []
    assert cascades(dry) == cascades(run)


def _carts(md):
    sa.Table("carts", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, nullable=False),
             sa.Column("created_at", sa.DateTime, nullable=False),
             sa.UniqueConstraint("id", "user_id", name="carts_id_user"))
    sa.Table("cart_lines", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("cart_id", sa.Integer, nullable=False),
             sa.Column("user_id", sa.Integer, nullable=False),
             sa.ForeignKeyConstraint(["cart_id", "user_id"], ["carts.id", "carts.user_id"],
                                     ondelete="CASCADE"))


def test_children_through_a_composite_fk_are_not_deleted_silently(shop):
    extra_tables(shop, _carts)
    shop.insert("carts", dict(id=1, user_id=7, created_at=OLD))
    shop.insert("cart_lines", dict(id=1, cart_id=1, user_id=7))
    policy = shop.policy("""
        [[rules]]
        name = "carts-purge"
        table = "shop.carts"
        clock = "created_at"
        after = "30d"
        action = "delete"
        max_fraction = 1.0
        """)
    try:
        report = shop.run(policy, now=NOW)
    except ConfigError:
        return  # refusing a rule whose table has composite-FK children is a fine answer
    out = outcome(report, "carts-purge")
    reported = sum(c.rows for c in out.cascades if c.table == "shop.cart_lines")
    # either the default 'block' kept the cart (and its line), or the cascade was reported
    assert shop.ids("cart_lines") == [1] or reported == 1


def test_check_reports_anonymizing_a_column_referenced_by_a_foreign_key(shop):
    extra_tables(shop, lambda md: sa.Table(
        "newsletter", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(120), sa.ForeignKey("users.email", onupdate="CASCADE"))))
    policy = shop.policy("""
        [[rules]]
        name = "closed-accounts-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "anonymize"
        columns.email = "hash"
        """)
    with pytest.raises(ConfigError) as e:
        commands.check(policy, env=HASH_ENV)
    assert "columns.email" in str(e.value)
