"""The application writes while a batch runs (PostgreSQL, READ COMMITTED).

Races are staged through the batch's named stages (``retention.transactions.
observing``): a second connection, the application, acts at one exact moment
of the batch.  The application's connection gives up waiting for a lock after
a short ``lock_timeout``: when the batch holds the lock, the application's
write is refused (it would be refused anyway once the parent is gone); when the
batch does not, the write lands at once and the batch must cope with it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from retention import transactions
from retention.execute import BATCH_ATTEMPTS
from tests.shopkit import cascades, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

USERS_ORDERS = """
    [[rules]]
    name = "closed-users"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "delete"
    max_fraction = 1.0

    [tables."shop.orders"]
    on_parent_delete = "delete"
    [tables."shop.order_items"]
    on_parent_delete = "delete"
"""


def three_levels(shop) -> None:
    """Users 1-3, closed long ago, each with one order (id 10 * user) holding one item."""
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("orders", dict(id=10 * i, user_id=i, completed_at=OLD, total=1, buyer_name="b"))
        shop.insert("order_items", dict(id=100 * i, order_id=10 * i, sku="x"))


class App:
    """The application's own connection, which waits at most a moment for a lock."""

    def __init__(self, shop) -> None:
        self.conn = shop.engine.connect()
        self.conn.exec_driver_sql("SET lock_timeout = '300ms'")
        self.conn.commit()
        self.written, self.refused = [], []

    def write(self, table: sa.Table, **row) -> None:
        try:
            with self.conn.begin():
                self.conn.execute(table.insert().values(**row))
            self.written.append(row["id"])
        except OperationalError as e:
            assert "55P03" in str(e.orig.sqlstate), e     # lock_timeout: the batch holds the parent
            self.refused.append(row["id"])

    def close(self) -> None:
        self.conn.close()


def test_pg_a_protected_grandchild_committed_after_the_recheck_is_never_deleted(pg_shop):
    shop = pg_shop
    invoices = sa.Table("invoices", shop.md,
                        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                        sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
                        sa.Column("issued_at", sa.DateTime, nullable=False))
    invoices.create(shop.engine)
    three_levels(shop)
    policy = shop.policy(USERS_ORDERS + """
        [tables."shop.invoices"]
        on_parent_delete = "delete"

        [[floors]]
        name = "invoices-10y"
        table = "shop.invoices"
        clock = "issued_at"
        keep = "10y"
        """, settings='lock_timeout = "10s"')
    app = App(shop)

    def app_invoices_order_10(conn, plan, keys):
        if not app.written and not app.refused:
            app.write(invoices, id=1, order_id=10, issued_at=(NOW - timedelta(days=1)).replace(tzinfo=None))

    try:
        with transactions.observing("batch.checked", app_invoices_order_10):
            out = outcome(shop.run(policy, now=NOW), "closed-users")
    finally:
        app.close()
    # the application's invoice either never got in (the batch held its order) or is still there
    assert shop.ids("invoices") == app.written
    assert app.refused == [1]
    assert (out.status, out.touch) == ("ok", 3) and shop.dangling() == []


def test_pg_a_blocking_grandchild_committed_mid_batch_does_not_fail_the_rule(pg_shop):
    shop = pg_shop
    shipments = sa.Table("shipments", shop.md,
                         sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                         sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False))
    shipments.create(shop.engine)
    three_levels(shop)
    policy = shop.policy(USERS_ORDERS, settings='lock_timeout = "10s"')
    app = App(shop)

    def app_ships_order_20(conn, plan, table, action):
        # the order items are gone, the orders are next: the application ships order 20 now
        if table == "shop.orders" and not app.written and not app.refused:
            app.write(shipments, id=1, order_id=20)

    try:
        with transactions.observing("batch.step", app_ships_order_20):
            out = outcome(shop.run(policy, now=NOW), "closed-users")
    finally:
        app.close()
    assert (out.status, out.error) == ("ok", None)
    assert app.refused == [1] and shop.ids("shipments") == []
    assert shop.ids("users") == [] and shop.dangling() == []


def test_pg_a_batch_that_meets_a_foreign_key_violation_is_retried_and_the_rule_goes_on(pg_shop):
    shop = pg_shop
    shipments = sa.Table("shipments", shop.md,
                         sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                         sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False))
    shipments.create(shop.engine)
    three_levels(shop)
    # the schema itself slips a grandchild in on the first attempt only (a sequence is not rolled back)
    with shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SEQUENCE once")
        c.exec_driver_sql("CREATE FUNCTION ship_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "IF nextval('once') = 1 THEN INSERT INTO shipments VALUES (99, OLD.order_id); END IF; "
                          "RETURN OLD; END $$")
        c.exec_driver_sql("CREATE TRIGGER ship_once AFTER DELETE ON order_items "
                          "FOR EACH ROW EXECUTE FUNCTION ship_once()")
    out = outcome(shop.run(shop.policy(USERS_ORDERS), now=NOW), "closed-users")
    assert (out.status, out.error, out.touch) == ("ok", None, 3)
    # the failed attempt's work was rolled back and is not counted
    assert cascades(out) == {"shop.orders:delete": 3, "shop.order_items:delete": 3}
    assert shop.ids("users") == [] and shop.ids("shipments") == [] and shop.dangling() == []


def test_pg_a_batch_that_keeps_failing_gives_up_after_a_few_attempts(pg_shop):
    shop = pg_shop
    shipments = sa.Table("shipments", shop.md,
                         sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                         sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False))
    shipments.create(shop.engine)
    three_levels(shop)
    with shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SEQUENCE attempts")
        c.exec_driver_sql("CREATE FUNCTION ship_always() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "PERFORM nextval('attempts'); "
                          "INSERT INTO shipments VALUES (99, OLD.order_id); RETURN OLD; END $$")
        c.exec_driver_sql("CREATE TRIGGER ship_always AFTER DELETE ON order_items "
                          "FOR EACH ROW EXECUTE FUNCTION ship_always()")
    out = outcome(shop.run(shop.policy(USERS_ORDERS, settings="batch_size = 1"), now=NOW), "closed-users")
    assert out.status == "failed" and "23503" in out.error and out.touch == 0
    with shop.engine.connect() as c:
        assert c.exec_driver_sql("SELECT last_value FROM attempts").scalar() == BATCH_ATTEMPTS
    assert shop.ids("users") == [1, 2, 3] and shop.ids("order_items") == [100, 200, 300]
