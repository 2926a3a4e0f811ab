"""PostgreSQL declarative partitioning: a partitioned table is one table to the operator.

Rules, floors, holds and ``on_parent_delete`` written for the partitioned
table cover every partition, including one attached after the policy was
written; a foreign key declared on it is one key, counted once; the report
names the partitioned table, never a partition.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from retention import commands
from retention.errors import ConfigError
from tests.shopkit import HASH_ENV, HOLDS, cascades, outcome, protected

NOW = datetime(2026, 6, 1, tzinfo=UTC)

PAYMENTS = """
CREATE TABLE payments (
    id integer NOT NULL,
    paid_at timestamp NOT NULL,
    user_id integer NOT NULL REFERENCES users (id),
    amount numeric(10, 2),
    card text,
    PRIMARY KEY (id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE payments_2020_01 PARTITION OF payments FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
CREATE TABLE payments_2020_02 PARTITION OF payments FOR VALUES FROM ('2020-02-01') TO ('2020-03-01');
CREATE TABLE payments_2026_05 PARTITION OF payments FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
CREATE TABLE refunds (
    id integer PRIMARY KEY,
    payment_id integer NOT NULL,
    payment_paid_at timestamp NOT NULL,
    FOREIGN KEY (payment_id, payment_paid_at) REFERENCES payments (id, paid_at)
);
"""


def ddl(shop, sql: str) -> None:
    with shop.engine.begin() as conn:
        conn.exec_driver_sql(sql)


def scalar(shop, sql: str):
    with shop.engine.connect() as conn:
        return conn.exec_driver_sql(sql).scalar()


def pay(shop, *rows: tuple[int, str, int]) -> None:
    with shop.engine.begin() as conn:
        for id_, at, uid in rows:
            conn.execute(sa.text("INSERT INTO payments (id, paid_at, user_id, amount, card) "
                                 "VALUES (:i, CAST(:at AS timestamp), :u, 10, '4111111111111111')"),
                         dict(i=id_, at=at, u=uid))


@pytest.fixture
def payments(pg_shop):
    ddl(pg_shop, PAYMENTS)
    for uid in (1, 2, 3):
        pg_shop.user(uid, closed_at=datetime(2020, 3, 1) if uid != 3 else None)
    pay(pg_shop, (1, "2020-01-10", 1), (2, "2020-02-10", 1), (3, "2020-01-15", 2),
        (4, "2026-05-20", 2), (5, "2020-02-20", 3))
    return pg_shop


USERS_PURGE = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "1y"
action = "delete"
max_fraction = 1.0
"""

PAYMENTS_PURGE = """
[[rules]]
name = "payments-purge"
table = "shop.payments"
clock = "paid_at"
after = "1y"
action = "delete"
max_fraction = 1.0
"""


def test_a_foreign_key_declared_on_a_partitioned_table_is_counted_once(payments):
    policy = payments.policy(USERS_PURGE + """
    [tables."shop.payments"]
    on_parent_delete = "delete"
    """)
    # independent SQL: the payments of the users the rule deletes
    expected = scalar(payments, "SELECT count(*) FROM payments WHERE user_id IN (1, 2)")
    plan = outcome(payments.run(policy, dry_run=True, now=NOW), "closed-users")
    assert plan.touch == 2
    assert cascades(plan) == {"shop.payments:delete": expected}
    assert [c.table for c in plan.cascades] == ["shop.payments"]      # the partitioned table, no partition
    run = outcome(payments.run(policy, now=NOW), "closed-users")
    assert run.status == "ok" and cascades(run) == {"shop.payments:delete": expected}
    assert scalar(payments, "SELECT count(*) FROM payments") == 1
    assert scalar(payments, "SELECT array_agg(id ORDER BY id) FROM users") == [3]


def test_a_partitioned_child_blocks_its_parent_once(payments):
    out = outcome(payments.run(payments.policy(USERS_PURGE), dry_run=True, now=NOW), "closed-users")
    assert protected(out) == {"children:shop.payments": 2} and out.touch == 0


def test_a_rule_on_a_partitioned_table_covers_a_partition_attached_after_the_policy(payments):
    policy = payments.policy(PAYMENTS_PURGE + """
    [[floors]]
    name = "bookkeeping"
    table = "shop.payments"
    clock = "paid_at"
    keep = "10y"
    where = { amount = { ge = 100 } }
    """)
    assert outcome(payments.run(policy, dry_run=True, now=NOW), "payments-purge").due == 4
    # next month's partition arrives; the policy is not edited
    ddl(payments, "CREATE TABLE payments_2019_12 (LIKE payments INCLUDING ALL);"
                  "ALTER TABLE payments ATTACH PARTITION payments_2019_12 "
                  "FOR VALUES FROM ('2019-12-01') TO ('2020-01-01')")
    pay(payments, (6, "2019-12-05", 1), (7, "2019-12-06", 3))
    ddl(payments, "UPDATE payments SET amount = 500 WHERE id = 7")
    expected_gone = scalar(payments, "SELECT array_agg(id ORDER BY id) FROM payments "
                                     "WHERE paid_at <= '2025-06-01' AND amount < 100")
    out = outcome(payments.run(policy, now=NOW), "payments-purge")
    assert out.status == "ok" and out.due == 6
    assert protected(out) == {"floor:bookkeeping": 1}
    assert out.touch == len(expected_gone) == 5
    assert scalar(payments, "SELECT array_agg(id ORDER BY id) FROM payments") == [4, 7]
    assert out.table == "shop.payments"


def test_a_hold_protects_rows_in_every_partition(payments):
    payments.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    ddl(payments, "CREATE TABLE payments_2020_03 PARTITION OF payments "
                  "FOR VALUES FROM ('2020-03-01') TO ('2020-04-01')")
    pay(payments, (8, "2020-03-03", 1))
    out = outcome(payments.run(payments.policy(HOLDS + PAYMENTS_PURGE), now=NOW), "payments-purge")
    assert protected(out) == {"hold:litigation": 3} and out.touch == 2
    assert scalar(payments, "SELECT array_agg(id ORDER BY id) FROM payments") == [1, 2, 4, 8]


def test_a_foreign_key_to_a_partitioned_table_cascades_once(payments):
    ddl(payments, "INSERT INTO refunds VALUES (1, 1, '2020-01-10'), (2, 3, '2020-01-15'), (3, 4, '2026-05-20')")
    policy = payments.policy(PAYMENTS_PURGE + """
    [tables."shop.refunds"]
    on_parent_delete = "delete"
    """)
    plan = outcome(payments.run(policy, dry_run=True, now=NOW), "payments-purge")
    assert plan.touch == 4 and cascades(plan) == {"shop.refunds:delete": 2}
    run = outcome(payments.run(policy, now=NOW), "payments-purge")
    assert cascades(run) == {"shop.refunds:delete": 2}
    assert scalar(payments, "SELECT array_agg(id) FROM refunds") == [3]


def test_check_warns_when_a_partition_lacks_a_foreign_key_its_siblings_declare(pg_shop):
    # keys declared partition by partition, as some schemas in the wild do, one forgotten
    ddl(pg_shop, """
    CREATE TABLE visits (id integer, seen_at timestamp, user_id integer, PRIMARY KEY (id, seen_at))
        PARTITION BY RANGE (seen_at);
    CREATE TABLE visits_a PARTITION OF visits FOR VALUES FROM ('2020-01-01') TO ('2020-02-01');
    CREATE TABLE visits_b PARTITION OF visits FOR VALUES FROM ('2020-02-01') TO ('2020-03-01');
    CREATE TABLE visits_c PARTITION OF visits FOR VALUES FROM ('2020-03-01') TO ('2020-04-01');
    ALTER TABLE visits_a ADD FOREIGN KEY (user_id) REFERENCES users (id);
    ALTER TABLE visits_c ADD FOREIGN KEY (user_id) REFERENCES users (id);
    """)
    pg_shop.user(1, closed_at=datetime(2020, 3, 1))
    ddl(pg_shop, "INSERT INTO visits VALUES (1, '2020-01-05', 1), (2, '2020-02-05', 1)")
    policy = pg_shop.policy(USERS_PURGE + """
    [tables."shop.visits"]
    on_parent_delete = "delete"
    """)
    warnings = commands.check(policy, env=HASH_ENV).warnings
    lacking = [w for w in warnings if "visits_b" in w]
    assert len(lacking) == 1 and "shop.visits" in lacking[0] and "(user_id) -> shop.users" in lacking[0]
    assert not any("visits_a" in w or "visits_c" in w for w in warnings)
    # the key is one key of the partitioned table, followed on every partition alike
    out = outcome(pg_shop.run(policy, now=NOW), "closed-users")
    assert cascades(out) == {"shop.visits:delete": 2}
    assert scalar(pg_shop, "SELECT count(*) FROM visits") == 0


def test_naming_a_partition_in_the_policy_is_refused_with_the_partitioned_table_named(payments):
    policy = payments.policy(PAYMENTS_PURGE.replace('"shop.payments"', '"shop.payments_2020_01"'))
    with pytest.raises(ConfigError) as e:
        payments.run(policy, dry_run=True, now=NOW)
    assert "partition of shop.payments" in str(e.value) and "payments-purge" in str(e.value)


def test_anonymize_a_partitioned_table(payments):
    policy = payments.policy("""
    [[rules]]
    name = "cards"
    table = "shop.payments"
    clock = "paid_at"
    after = "1y"
    action = "anonymize"
    max_fraction = 1.0
    columns = { card = { strategy = "mask", keep_last = 4 } }
    """)
    out = outcome(payments.run(policy, now=NOW), "cards")
    assert out.touch == 4
    assert scalar(payments, "SELECT count(*) FROM payments WHERE card = '************1111'") == 4
    assert outcome(payments.run(policy, now=NOW), "cards").touch == 0
