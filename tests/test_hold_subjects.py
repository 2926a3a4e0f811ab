"""A hold protects its subject's rows however a row reaches the subject.

The subject key need not be the foreign key's target, a hold register lives in the rules'
database, and a subject path may end on a column that is not a key.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

from retention.errors import ConfigError
from tests.shopkit import Shop, extra_tables, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def test_hold_protects_children_when_the_subject_key_is_not_the_fk_target(shop):
    extra_tables(shop, lambda md: sa.Table(
        "email_holds", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("email", sa.String(120), nullable=False)))
    shop.user(1)
    shop.insert("orders", dict(id=1, user_id=1, completed_at=OLD, total=1))
    shop.insert("email_holds", dict(id=1, email="user1@example.com"))
    policy = shop.policy("""
        [[rules]]
        name = "orders-purge"
        table = "shop.orders"
        clock = "completed_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0

        [[holds]]
        name = "litigation"
        table = "shop.email_holds"
        subject = "customer"
        subject_column = "email"
        """)
    with open(policy) as f:
        text = f.read()
    with open(policy, "w") as f:
        f.write(text.replace('key = "id"', 'key = "email"'))
    report = shop.run(policy, now=NOW)
    assert outcome(report, "orders-purge").touch == 0
    assert shop.ids("orders") == [1]


def test_hold_register_in_another_database_is_rejected_or_honoured(tmp_path):
    shop = Shop(f"sqlite:///{tmp_path / 'shop.db'}", tmp_path)
    crm = sa.create_engine(f"sqlite:///{tmp_path / 'crm.db'}")
    md = sa.MetaData()
    holds = sa.Table("legal_holds", md,
                     sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                     sa.Column("user_id", sa.Integer, nullable=False),
                     sa.Column("released_at", sa.DateTime))
    md.create_all(crm)
    with crm.begin() as conn:
        conn.execute(holds.insert(), [dict(id=1, user_id=1)])
    crm.dispose()
    shop.user(1, status="closed", closed_at=OLD)
    policy = shop.policy(f"""
        [databases.crm]
        url = "sqlite:///{tmp_path / 'crm.db'}"

        [[rules]]
        name = "closed-accounts"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "delete"
        max_fraction = 1.0

        [[holds]]
        name = "litigation"
        table = "crm.legal_holds"
        subject = "customer"
        subject_column = "user_id"
        active_where = {{ released_at = {{ is_null = true }} }}
        """)
    try:
        shop.run(policy, now=NOW)
    except ConfigError:
        pass  # refusing the policy is a fine answer too
    assert shop.ids("users") == [1]
    shop.close()


def test_subject_path_ending_on_a_non_key_column_still_finds_the_subject(tmp_path):
    # SQLite: PostgreSQL happens to refuse the rule (integer = varchar) at its SQL check
    shop = Shop(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    shop.user(1)
    shop.insert("legal_holds", dict(id=1, user_id=1))
    shop.insert("merchants", dict(id=1, name="M", closed_at=OLD))
    shop.insert("merchant_customers", dict(id=1, merchant_id=1, email="user1@example.com"))
    policy = shop.policy("""
        [[rules]]
        name = "merchant-closed-customers"
        table = "shop.merchant_customers"
        clock = "merchant.closed_at"
        after = "30d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.merchant_customers"]
        subject_path = ["email -> users.email"]

        [[holds]]
        name = "litigation"
        table = "shop.legal_holds"
        subject = "customer"
        subject_column = "user_id"
        """)
    try:
        report = shop.run(policy, now=NOW)
    except ConfigError:
        return  # rejecting the path at bind time is a fine answer too
    out = outcome(report, "merchant-closed-customers")
    assert out.status == "ok" and out.touch == 0
    assert shop.ids("merchant_customers") == [1]
    shop.close()
