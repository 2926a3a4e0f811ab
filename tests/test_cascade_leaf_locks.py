"""A cascade's last level is locked ahead only when something could change under it (PostgreSQL, MariaDB).

A cascading batch locks its parents, then each level of the cascade, then
checks its rows again, then deletes.  A last level (no step below it) that
nothing of the plan reads (no protector, no blocking child) and no foreign
key points at is not locked ahead: its own DELETE locks its rows, nothing can
arrive under a locked parent, and no change to such a row changes what the
check decides.  A last level the plan does read stays locked before the
check.  Races are staged at ``batch.checked`` (the batch has locked and
checked, right before its first delete) from a second connection, the
application, which waits at most a moment for a lock.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from retention import transactions
from tests.runkit import Statements
from tests.shopkit import HOLDS, OLD_ORDERS, Shop, cascades, extra_tables, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

#: the batch waits long for the application; the application never waits long for the batch
SETTINGS = 'lock_timeout = "10s"'


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])
def locking_shop(request, tmp_path):
    """An empty shop on each engine whose batches lock rows (PostgreSQL, MariaDB)."""
    s = Shop(request.getfixturevalue("pg_url" if request.param == "postgresql" else "mariadb_url"), tmp_path)
    yield s
    s.close()


class App:
    """The application's own connection: a write waiting for a lock the batch holds gives up at once."""

    def __init__(self, shop: Shop) -> None:
        self.conn = shop.engine.connect()
        self.pg = shop.engine.dialect.name == "postgresql"
        self.conn.exec_driver_sql("SET lock_timeout = '300ms'" if self.pg
                                  else "SET SESSION innodb_lock_wait_timeout = 1")
        self.conn.commit()
        self.written: list[str] = []
        self.refused: list[str] = []

    def write(self, what: str, statement) -> None:
        try:
            with self.conn.begin():
                self.conn.execute(statement)
            self.written.append(what)
        except OperationalError as e:
            # a lock wait given up: the batch holds the row
            assert (e.orig.sqlstate == "55P03") if self.pg else (e.orig.args[0] == 1205), e
            self.refused.append(what)

    def close(self) -> None:
        self.conn.close()


def _orders(shop: Shop, items: bool = True) -> None:
    """Orders 10 and 20, completed long ago, two items each (ids 100, 101, 200, 201); a recent order 30."""
    shop.user(1)
    shop.insert("orders", dict(id=10, user_id=1, completed_at=OLD), dict(id=20, user_id=1, completed_at=OLD),
                dict(id=30, user_id=1, completed_at=NOW.replace(tzinfo=None)))
    if items:
        shop.insert("order_items", *(dict(id=10 * o + k, order_id=o, sku="x") for o in (10, 20, 30) for k in (0, 1)))


def _run_staged(shop: Shop, policy: str, act) -> object:
    """Run ``old-orders``; ``act(app)`` runs once, when the first batch has locked and checked."""
    app = App(shop)

    def once(conn, plan, keys):
        if not app.written and not app.refused:
            act(app)

    try:
        with transactions.observing("batch.checked", once):
            out = outcome(shop.run(policy, now=NOW), "old-orders")
    finally:
        app.close()
    return out, app


def test_a_last_level_nothing_reads_is_locked_by_its_own_delete_only(locking_shop):
    shop = locking_shop
    _orders(shop)
    with Statements() as sent:
        out = outcome(shop.run(shop.policy(OLD_ORDERS, settings=SETTINGS), now=NOW), "old-orders")
    assert (out.status, out.touch) == ("ok", 2)
    locks = [s for s in sent.sent if "FOR UPDATE" in s.upper()]
    assert locks and all("order_items" not in s for s in locks), locks
    assert shop.ids("orders") == [30] and shop.ids("order_items") == [300, 301] and shop.dangling() == []


def test_a_last_level_is_locked_ahead_when_the_policy_has_sql_it_cannot_read(locking_shop):
    # where_sql may read any table, the last level's too: the job cannot tell, so it locks
    shop = locking_shop
    _orders(shop)
    policy = shop.policy(OLD_ORDERS.replace('max_fraction = 1.0', 'max_fraction = 1.0\nwhere_sql = "total IS NULL"'),
                         settings=SETTINGS)
    with Statements() as sent:
        out = outcome(shop.run(policy, now=NOW), "old-orders")
    assert (out.status, out.touch) == ("ok", 2)
    assert any("FOR UPDATE" in s.upper() and "order_items" in s for s in sent.sent)


def test_nothing_arrives_under_a_locked_parent_whose_children_are_not_locked_ahead(locking_shop):
    shop = locking_shop
    _orders(shop)
    items = shop.t("order_items")
    out, app = _run_staged(shop, shop.policy(OLD_ORDERS, settings=SETTINGS),
                           lambda app: app.write("item 12", items.insert().values(id=12, order_id=10, sku="new")))
    assert app.refused == ["item 12"]
    assert (out.status, out.touch) == ("ok", 2)
    assert cascades(out) == {"shop.order_items:delete": 4}
    assert shop.ids("orders") == [30] and shop.ids("order_items") == [300, 301] and shop.dangling() == []


def test_a_child_changed_after_the_check_is_still_deleted_and_counted(locking_shop):
    shop = locking_shop
    _orders(shop)
    items = shop.t("order_items")
    out, app = _run_staged(shop, shop.policy(OLD_ORDERS, settings=SETTINGS),
                           lambda app: app.write("item 100", items.update().where(items.c.id == 100).values(sku="y")))
    assert app.written == ["item 100"]         # not locked ahead: the application did not wait
    assert (out.status, out.touch) == ("ok", 2)
    assert cascades(out) == {"shop.order_items:delete": 4}
    assert shop.ids("orders") == [30] and shop.ids("order_items") == [300, 301] and shop.dangling() == []


def test_a_child_moved_away_after_the_check_stays_with_its_new_parent_and_is_not_counted(locking_shop):
    shop = locking_shop
    _orders(shop)
    items = shop.t("order_items")
    out, app = _run_staged(shop, shop.policy(OLD_ORDERS, settings=SETTINGS),
                           lambda app: app.write("item 100", items.update().where(items.c.id == 100)
                                                 .values(order_id=30)))
    assert app.written == ["item 100"]
    assert (out.status, out.touch) == ("ok", 2)
    assert cascades(out) == {"shop.order_items:delete": 3}
    assert shop.ids("orders") == [30] and shop.ids("order_items") == [100, 300, 301] and shop.dangling() == []


def _invoices(md):
    sa.Table("invoices", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
             sa.Column("issued_at", sa.DateTime, nullable=False))


def test_a_last_level_a_floor_reads_is_locked_before_the_check(locking_shop):
    # the floor reads the invoice's date: were the invoices not locked before the check, the
    # application could make one protected after it, and the batch would delete it all the same
    shop = locking_shop
    extra_tables(shop, _invoices)
    _orders(shop, items=False)
    shop.insert("invoices", dict(id=1, order_id=10, issued_at=OLD))
    policy = shop.policy(OLD_ORDERS + """
        [tables."shop.invoices"]
        on_parent_delete = "delete"

        [[floors]]
        name = "invoices-1y"
        table = "shop.invoices"
        clock = "issued_at"
        keep = "1y"
        """, settings=SETTINGS)
    invoices = shop.t("invoices")
    recent = (NOW - timedelta(days=1)).replace(tzinfo=None)
    out, app = _run_staged(shop, policy, lambda app: app.write(
        "invoice 1", invoices.update().where(invoices.c.id == 1).values(issued_at=recent)))
    assert app.refused == ["invoice 1"]
    assert (out.status, out.touch) == ("ok", 2)
    assert shop.ids("orders") == [30] and shop.ids("invoices") == [] and shop.dangling() == []


def test_a_last_level_with_blocking_children_is_locked_before_the_check(locking_shop):
    # returns block their item's delete; the database itself would cascade (ON DELETE CASCADE):
    # were the items not locked before the check, a return made after it would vanish with its item
    shop = locking_shop
    extra_tables(shop, lambda md: sa.Table(
        "returns", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("item_id", sa.Integer, sa.ForeignKey("order_items.id", ondelete="CASCADE"), nullable=False)))
    _orders(shop)
    returns = shop.t("returns")
    out, app = _run_staged(shop, shop.policy(OLD_ORDERS, settings=SETTINGS),
                           lambda app: app.write("return 1", returns.insert().values(id=1, item_id=100)))
    assert app.refused == ["return 1"]
    assert (out.status, out.touch) == ("ok", 2)
    assert shop.ids("orders") == [30] and shop.dangling() == []


def test_a_hold_committed_while_the_batch_waits_for_its_row_protects_it(locking_shop):
    # the application places a hold and changes the held customer's order in one transaction; the
    # batch's first SELECT waits for that order's lock, and its hold subquery reads the snapshot it
    # began with: only the check made after the locks sees the hold
    shop = locking_shop
    _orders(shop)
    policy = shop.policy(HOLDS + OLD_ORDERS, settings=SETTINGS)
    orders, holds = shop.t("orders"), shop.t("legal_holds")
    # PostgreSQL tells a lock wait; MariaDB only that the batch's locking SELECT is running
    waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
               "AND datname = current_database()" if shop.engine.dialect.name == "postgresql" else
               "SELECT count(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE '%FOR UPDATE' "
               "AND ID <> CONNECTION_ID()")
    result: dict = {}
    with shop.engine.connect() as app, shop.engine.connect() as watch:
        app.begin()
        app.execute(holds.insert().values(id=1, user_id=1, released_at=None))
        app.execute(orders.update().where(orders.c.id == 10).values(total=1))
        runner = threading.Thread(target=lambda: result.update(report=shop.run(policy, now=NOW)))
        runner.start()
        try:
            deadline = time.monotonic() + 30
            while not watch.execute(sa.text(waiting)).scalar():
                watch.rollback()
                assert time.monotonic() < deadline, "the batch never waited for the order's lock"
                time.sleep(0.02)
        finally:
            app.commit()
            runner.join()
    out = outcome(result["report"], "old-orders")
    # the hold is on the customer of both old orders: neither goes
    assert (out.status, out.touch) == ("ok", 0)
    assert shop.ids("orders") == [10, 20, 30] and shop.ids("order_items") == [100, 101, 200, 201, 300, 301]
