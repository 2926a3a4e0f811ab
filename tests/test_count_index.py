"""The pre-run count through the clock's index gives the numbers one pass over the table gives.

Where the engine counts a table without reading its rows (SQLite, MariaDB)
and the rule's clock has an index, the count reads that index statement by
statement: the table's rows, the due range, its oldest readable clock, the
forecast's range.  Everywhere else it reads the table once.  Both must report
the same: due, protected per protector, touch, unreadable clocks, the oldest
clock, the forecast and the guard's table rows.  A delete's last protector is
not counted but derived (due less the earlier protectors and the clean rows),
which must give what counting it gives.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url

from retention.dialects import mysql, postgresql, sqlite
from retention.execute import count
from tests.shopkit import CLOSED_ANONYMIZE, FLOOR_ORDERS, HOLDS

NOW = datetime(2025, 6, 1, tzinfo=UTC)

#: the orders' purge under the 3-year floor, for orders with a total only; and the closed customers'
#: anonymization
POLICY = HOLDS + FLOOR_ORDERS.replace("max_fraction = 1.0\n", "max_fraction = 1.0\nwhere = { total = { gt = 0 } }\n", 1) \
    + CLOSED_ANONYMIZE

#: completed_at of each order: due and not, under the 3-year floor and past it, within each
#: forecast window, beyond them, not started; a zero total is outside the rule's ``where``
COMPLETED = [datetime(2019, 3, 1), datetime(2020, 1, 1), datetime(2023, 1, 1), datetime(2025, 5, 30),
             datetime(2025, 6, 4), datetime(2025, 6, 20), datetime(2025, 8, 1), datetime(2026, 3, 1),
             datetime(2027, 1, 1), None]
IMPLS = [sqlite.SQLiteImpl, postgresql.PostgreSQLImpl, mysql.MySQLImpl, mysql.MariaDBImpl]


def _fill(shop) -> None:
    shop.user(1, closed_at=datetime(2020, 1, 1))
    shop.user(2, closed_at=datetime(2025, 6, 15))
    shop.user(3, closed_at=datetime(2021, 1, 1))
    shop.user(4)
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    rows, item = [], 0
    for i, moment in enumerate(COMPLETED * 3):
        user = 1 + i % 3
        total = 0 if i % 7 == 3 else 10 + i
        rows.append(dict(id=i + 1, user_id=user, completed_at=moment, total=total))
    shop.insert("orders", *rows)
    for r in rows[::2]:
        item += 1
        shop.insert("order_items", dict(id=item, order_id=r["id"], sku="s"))
    backend = make_url(str(shop.engine.url)).get_backend_name()
    with shop.engine.begin() as c:
        # clocks Python cannot hold: counted as unreadable, never the oldest clock
        if backend == "sqlite":
            c.exec_driver_sql("INSERT INTO orders (id, user_id, completed_at, total) "
                              "VALUES (100, 2, '2018-02-30 00:00:00', 5)")
        elif backend == "postgresql":
            c.exec_driver_sql("INSERT INTO orders (id, user_id, completed_at, total) VALUES (100, 2, '-infinity', 5)")


def _index(shop) -> None:
    sa.Index("orders_completed_at", shop.t("orders").c.completed_at).create(shop.engine)
    sa.Index("users_closed_at", shop.t("users").c.closed_at).create(shop.engine)


def _numbers(out) -> tuple:
    return (out.due, [(p.kind, p.name, p.rows) for p in out.protected], out.touch, out.unreadable_clocks,
            out.oldest_clock, dict(out.forecast), out.guard.table_rows,
            sorted((c.table, c.action, c.rows) for c in out.cascades))


def _plan(shop, monkeypatch, by_index: bool) -> dict[str, tuple]:
    for impl in IMPLS:
        monkeypatch.setattr(impl, "counts_by_index", by_index)
    report = shop.run(shop.policy(POLICY), dry_run=True, now=NOW)
    return {r.rule: _numbers(r) for r in report.rules}


@pytest.fixture
def bare_counts():
    """The statements that count a whole table (``SELECT count(*) FROM t`` and nothing more)."""
    seen: list[str] = []

    def record(conn, cursor, statement, *args):
        text = " ".join(statement.split())
        if re.fullmatch(r"SELECT count\(\*\) AS \w+ FROM [\w.`\"]+", text):
            seen.append(text)

    event.listen(sa.engine.Engine, "before_cursor_execute", record)
    yield seen
    event.remove(sa.engine.Engine, "before_cursor_execute", record)


def test_index_and_one_pass_give_the_same_numbers(shop, monkeypatch, bare_counts):
    _fill(shop)
    _index(shop)
    one_pass = _plan(shop, monkeypatch, False)
    assert bare_counts == []
    by_index = _plan(shop, monkeypatch, True)
    assert len(bare_counts) == 2                    # orders and users, each counted through an index
    assert by_index == one_pass
    due, protected, touch, unreadable, oldest, forecast, rows, _cascades = by_index["orders-purge"]
    # 3 copies of 4 due clocks, less 2 with a zero total; the unreadable one of SQLite and PostgreSQL
    extra = 1 if shop.engine.dialect.name in ("sqlite", "postgresql") else 0
    assert (due, unreadable, rows) == (10 + extra, extra, 30 + extra)
    assert oldest.year == 2019
    assert forecast == {"7d": 2, "30d": 5, "90d": 8, "365d": 10}
    # user 1's due orders are held; the floor keeps the others' younger than 3 years; the rest go
    assert (protected, touch) == ([("hold", "litigation", 3), ("floor", "ecommerce-law-3y", 4)], 3 + extra)


def test_the_index_path_needs_an_index_on_the_clock(shop, monkeypatch, bare_counts):
    _fill(shop)
    plain = _plan(shop, monkeypatch, True)
    assert bare_counts == []                        # no index: one pass, as before
    _index(shop)
    assert _plan(shop, monkeypatch, True) == plain


def test_derived_protector_matches_a_counted_one(shop, monkeypatch):
    """The delete's last protector, derived, against the same protector counted directly."""
    _fill(shop)
    derived = _plan(shop, monkeypatch, False)["orders-purge"]
    monkeypatch.setattr(count, "_derives_last", lambda plan: False)
    counted = _plan(shop, monkeypatch, False)["orders-purge"]
    assert counted == derived
    assert derived[1][-1][2] > 0 and derived[2] > 0      # the derived protector and the touch both non-zero
