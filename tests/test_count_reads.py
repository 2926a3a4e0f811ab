"""What the pre-run count reads: one pass over the table when nothing is due.

A run that has nothing to do must cost about a ``COUNT(*)`` of each rule's
table, whatever the rule (a clock with an index is read through it instead,
see test_count_index.py; these tables' clocks have none): an anonymization done in Python, which reads its
rows batch by batch, reads none; no protector, touch, cascade or kept-column
count runs.  The statements are counted, never timed.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from retention.execute import rules
from tests.shopkit import CLOSED_ANONYMIZE, HOLDS, outcome

NOW = datetime(2025, 6, 1, tzinfo=UTC)

POLICY = HOLDS + CLOSED_ANONYMIZE + """
[[floors]]
name = "kyc-name"
table = "shop.users"
clock = "created_at"
keep = "10y"
columns = ["name"]

[[rules]]
name = "orders-purge"
table = "shop.orders"
clock = "completed_at"
after = "30d"
action = "delete"
max_fraction = 1.0

[tables."shop.order_items"]
on_parent_delete = "delete"
"""


@pytest.fixture
def statements(monkeypatch):
    """Every statement the pre-run count sends while the test runs (the policy's own checks
    before the rules, such as SQLite's scan for malformed clocks, are not the count's)."""
    seen: list[str] = []
    counting = []

    def record(conn, cursor, statement, *args):
        if counting:
            seen.append(" ".join(statement.split()))

    def count_rule(*args, **kwargs):
        counting.append(True)
        try:
            return real(*args, **kwargs)
        finally:
            counting.pop()

    real = rules.count_rule
    monkeypatch.setattr(rules, "count_rule", count_rule)
    event.listen(sa.engine.Engine, "before_cursor_execute", record)
    yield seen
    event.remove(sa.engine.Engine, "before_cursor_execute", record)


def _reading(seen: list[str], table: str) -> list[str]:
    return [s for s in seen if s.startswith("SELECT") and f"FROM {table}" in s]


@pytest.mark.parametrize("force_python", [True, False])
def test_nothing_due_reads_each_table_once(shop, statements, force_python):
    shop.user(1, closed_at=datetime(2025, 5, 30))                     # closed, not yet due
    shop.insert("orders", dict(id=1, user_id=1, completed_at=datetime(2025, 5, 30), total=1))
    shop.insert("order_items", dict(id=1, order_id=1, sku="s"))
    report = shop.run(shop.policy(POLICY), dry_run=True, now=NOW, force_python=force_python)
    assert [(r.due, r.touch) for r in report.rules] == [(0, 0), (0, 0)]
    assert len(_reading(statements, "users")) == 1
    assert len(_reading(statements, "orders")) == 1
    assert _reading(statements, "order_items") == []
    assert [c.rows for c in outcome(report, "orders-purge").cascades] == [0]


def test_every_due_row_protected_reads_no_rows_to_touch(shop, statements):
    shop.user(1, closed_at=datetime(2020, 1, 1))
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    out = outcome(shop.run(shop.policy(POLICY), dry_run=True, now=NOW, force_python=True), "closed-anonymize")
    assert (out.due, out.touch, [p.name for p in out.protected]) == (1, 0, ["litigation"])
    # the scan and the hold's count; the hold took every due row, so no later floor, touch or read
    assert len(_reading(statements, "users")) == 2
