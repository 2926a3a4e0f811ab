"""How batches are sized and addressed.

Over an integer key a batch's range is computed, not looked up: no statement
reads the rows a batch is about to write before the write itself (the write
carries the whole predicate, so holds and floors are checked in it).  Batches
are sized by time, the policy's ``batch_size`` is a ceiling never passed, and
a range that meets rows the run did not count is redone within the allowance.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa

from retention.execute import rules
from retention.execute.pace import CEILING, FIRST_ROWS, Pace, ceiling
from retention.config import Settings
from retention.events import RuleCounted
from tests.runkit import Statements, run_hearing
from tests.shopkit import HOLDS, LOGS_PURGE, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)


def logs(shop, ids, **row) -> None:
    shop.insert("logs", *[dict(dict(id=i, user_id=None, ip="10.1.2.3", created_at=OLD), **row) for i in ids])


def test_no_statement_reads_a_batch_before_its_write(shop):
    logs(shop, range(1, 21))
    with Statements() as seen:
        out = outcome(shop.run(shop.policy(LOGS_PURGE, settings="batch_size = 5"), now=NOW), "logs-purge")
    # batches are sized by time, at most 5 rows (the ceiling): at least 4 of them
    assert (out.status, out.touch) == ("ok", 20) and out.batches >= 4 and shop.ids("logs") == []
    deletes = [i for i, s in enumerate(seen.sent) if s.upper().startswith("DELETE")]
    assert len(deletes) == out.batches
    # between the first batch's write and the last, nothing but the writes reached the table
    between = seen.sent[deletes[0]:deletes[-1] + 1]
    assert [s for s in between if not s.upper().startswith(("DELETE", "BEGIN", "COMMIT", "SAVEPOINT",
                                                               "RELEASE", "SET", "SELECT PG_", "SELECT 1"))
            and "logs" in s] == []


def test_the_write_carries_the_whole_rule(shop):
    # a held row inside a computed range is skipped by the write itself
    for i in (1, 2):
        shop.user(i)
    logs(shop, range(1, 7))
    with shop.engine.begin() as conn:
        conn.execute(shop.t("logs").update().where(shop.t("logs").c.id.in_([3, 4])).values(user_id=2))
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))
    out = outcome(shop.run(shop.policy(LOGS_PURGE + HOLDS, settings="batch_size = 4"), now=NOW), "logs-purge")
    assert (out.status, out.touch, out.protected_total) == ("ok", 4, 2)
    assert shop.ids("logs") == [3, 4]


def test_batch_size_is_a_ceiling_never_passed(shop, monkeypatch):
    logs(shop, range(1, 41))
    logs(shop, range(1000, 1011))        # a gap in the keys, then a denser run
    sizes, original = [], rules._batch

    def batch_and_note_its_rows(*args, **kw):
        n = original(*args, **kw)
        sizes.append(n)
        return n

    monkeypatch.setattr(rules, "_batch", batch_and_note_its_rows)
    out = outcome(shop.run(shop.policy(LOGS_PURGE, settings="batch_size = 3"), now=NOW), "logs-purge")
    assert (out.status, out.touch) == ("ok", 51) and shop.ids("logs") == []
    assert sum(sizes) == 51 and max(sizes) <= 3


def test_rows_that_become_workable_inside_a_range_are_left_to_the_next_run(shop):
    # counted: 2 rows; then the app releases the holds on 8 more in the same key range. The computed
    # range would take all 10: its batch is rolled back and redone, stopping at what was counted
    for i in range(1, 6):
        shop.user(i)
        logs(shop, (2 * i, 2 * i + 1), user_id=i)
        if i > 1:
            shop.insert("legal_holds", dict(id=i, user_id=i, released_at=None))

    def app_releases_every_hold_once_counted(event):
        if isinstance(event, RuleCounted):
            with shop.engine.begin() as conn:
                conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2026, 6, 15)))

    out = outcome(run_hearing(shop.policy(LOGS_PURGE + HOLDS), app_releases_every_hold_once_counted, now=NOW),
                  "logs-purge")
    assert (out.status, out.touch) == ("ok", 2)
    assert shop.count("logs") == 8
    again = outcome(shop.run(shop.policy(LOGS_PURGE + HOLDS), now=NOW), "logs-purge")
    assert (again.status, again.touch) == ("ok", 8) and shop.count("logs") == 0


def test_pace_sizes_the_next_batch_by_time():
    pace = Pace(seconds=0.2, ceiling=1_000_000)
    assert pace.rows == FIRST_ROWS
    pace.learn(FIRST_ROWS, 0.001)             # very quick: grows, but at most fourfold at a time
    assert pace.rows == 4 * FIRST_ROWS
    pace.learn(2000, 1.0)                     # 2,000 rows/s: aims under 0.2 s
    assert 0 < pace.rows <= 400
    pace.learn(300, 0.15)                     # on target: stays about there
    assert 200 <= pace.rows <= 400


def test_pace_leaves_the_statements_half_the_target_whatever_a_batch_costs_besides():
    pace = Pace(seconds=0.2, ceiling=1_000_000)
    pace.learn(500, 0.3, working=0.1)         # 0.2 s of commit and audit: the statements still get 0.075 s
    assert pace.rows == 375
    pace.learn(375, 0.1, working=0.05)        # 0.05 s besides: the statements get 0.1 s
    assert pace.rows == 750


def test_pace_never_passes_its_ceiling():
    pace = Pace(seconds=10.0, ceiling=7)
    assert pace.rows == 7
    pace.learn(7, 0.0001)
    assert pace.rows == 7


def test_an_unset_batch_size_leaves_batches_to_time():
    assert ceiling(Settings(), None, None) == CEILING
    assert ceiling(Settings(batch_size=5000), None, None) == 5000
    # keys bound one parameter per key column stay under what the engine binds
    assert ceiling(Settings(), 2, 999) == 499
    assert Settings().max_batch_seconds == 0.2


def test_a_uuid_key_is_batched_in_key_order(shop):
    # PostgreSQL has no max(uuid): the batch bound of a key without a computed range
    # is the last of the next rows in key order, on every engine
    events = sa.Table("events", sa.MetaData(), sa.Column("id", sa.Uuid, primary_key=True),
                      sa.Column("created_at", sa.DateTime, nullable=False))
    events.create(shop.engine)
    keys = sorted(uuid.UUID(int=(i * 7919) << 64 | i) for i in range(1, 13))
    with shop.engine.begin() as conn:
        conn.execute(events.insert(), [dict(id=k, created_at=OLD if i % 3 else NOW.replace(tzinfo=None))
                                       for i, k in enumerate(keys)])
    policy = shop.policy("""
        [[rules]]
        name = "events-purge"
        table = "shop.events"
        clock = "created_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0
        """, settings="batch_size = 3")
    out = outcome(shop.run(policy, now=NOW), "events-purge")
    with shop.engine.connect() as conn:
        left = sorted(conn.execute(sa.select(events.c.id)).scalars())
    assert (out.status, out.touch) == ("ok", 8) and out.batches >= 3
    assert left == [k for i, k in enumerate(keys) if i % 3 == 0]
