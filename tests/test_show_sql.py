"""``--sql`` shows what a run sends: the same statements, with the same values.

The first batch of each rule runs through the executor inside a transaction
that is rolled back, and every statement it sends is recorded; a run of the
same policy at the same instant sends exactly those statements for its first
batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention.execute import show_statement
from tests.shopkit import HOLDS, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

RULES = {
    "delete": """
        [[rules]]
        name = "logs-purge"
        table = "shop.logs"
        clock = "created_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0
        """,
    "cascade": """
        [[rules]]
        name = "closed-users"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        [tables."shop.logs"]
        on_parent_delete = "detach"
        """,
    "restrict": """
        [[rules]]
        name = "closed-restrict"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "restrict"
        where = { status = "closed" }
        max_fraction = 1.0
        """,
    "anonymize-sql": """
        [[rules]]
        name = "closed-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "anonymize"
        max_fraction = 1.0
        columns.name = { strategy = "constant", value = "deleted user" }
        columns.phone = { strategy = "mask", keep_last = 4 }
        mark = "anonymized_at"
        """,
    "anonymize-python": """
        [[rules]]
        name = "closed-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "anonymize"
        max_fraction = 1.0
        columns.email = "hash"
        columns.last_ip = { strategy = "generalize", ipv4_prefix = 16 }
        mark = "anonymized_at"
        """,
}


def fill(shop) -> None:
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="1 Road"))
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.1.2.3", created_at=OLD) for i in (1, 2)])
    shop.insert("legal_holds", dict(id=1, user_id=3, released_at=None))


@contextmanager
def sent_by(engine: sa.engine.Engine):
    """Every statement any connection of the process sends, rendered as --sql renders it."""
    sent: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        compiled = getattr(context, "compiled", None)
        names = tuple(compiled.positiontup) if compiled is not None and compiled.positiontup else None
        sent.append(show_statement(statement, parameters, executemany, names))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)


def contains_run(haystack: list[str], needle: list[str]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


@pytest.mark.parametrize("kind", list(RULES))
def test_sql_shows_exactly_what_the_run_sends(shop, kind):
    fill(shop)
    policy = shop.policy(RULES[kind] + HOLDS)
    before = shop.dump()
    plan = shop.run(policy, dry_run=True, now=NOW, show_sql=True).rules[0]
    assert shop.dump() == before                      # shown, then rolled back
    shown = plan.statements
    assert len(shown) >= 2
    with sent_by(shop.engine) as sent:
        run = shop.run(policy, now=NOW).rules[0]
    assert run.status == "ok" and run.touch == plan.touch > 0
    assert contains_run(sent, shown), "\n\n".join(shown)
    assert all("1 Road" not in s and "user1@example.com" not in s for s in shown)


def test_the_anonymize_update_shown_sets_the_mark(shop):
    fill(shop)
    out = outcome(shop.run(shop.policy(RULES["anonymize-sql"]), dry_run=True, now=NOW, show_sql=True),
                  "closed-anonymize")
    updates = [s for s in out.statements if s.startswith("UPDATE users")]
    assert updates and all("anonymized_at" in s.split("WHERE")[0] for s in updates)


def test_values_computed_from_the_row_are_not_shown(shop):
    fill(shop)
    out = outcome(shop.run(shop.policy(RULES["anonymize-python"]), dry_run=True, now=NOW, show_sql=True),
                  "closed-anonymize")
    text = "\n".join(out.statements)
    assert "<computed from the row>" in text and "10.1.0.0" not in text and "h_" not in text


def test_a_rule_with_nothing_to_do_says_a_run_sends_no_batch(shop):
    out = outcome(shop.run(shop.policy(RULES["delete"]), dry_run=True, now=NOW, show_sql=True), "logs-purge")
    assert out.statements == ["-- no row needs this rule now: a run sends no batch"]
