"""What the batch loop tells its hooks: each committed batch, with how long its transaction was open.

The length reaches the hook as an argument, from the batch's own transaction,
so a hook on any thread (one per worker) hears the length of the batch it is
told about, and nothing is heard for a batch that never committed.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention import commands
from retention.execute import BatchHooks, ExecOptions, execute_rule
from retention.plan import build_plans
from retention.transactions import Simulation, Transactions
from tests.shopkit import HASH_ENV, LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
PAUSE = 0.03


class Heard(BatchHooks):
    def __init__(self) -> None:
        self.committed_batches: list[tuple[int, int, float | None, str]] = []

    def committed(self, plan, batch, lo, hi, touched, cascaded, seconds=None) -> None:
        self.committed_batches.append((batch, touched, seconds, threading.current_thread().name))


@pytest.fixture
def paused():
    """Each DELETE of logs waits PAUSE inside its batch's transaction; yields the pauses per thread."""
    pauses: dict[str, int] = {}

    def pause(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("DELETE FROM LOGS"):
            name = threading.current_thread().name
            pauses[name] = pauses.get(name, 0) + 1
            # the worker threads pause differently: a length mixed up between them shows
            time.sleep(PAUSE * (3 if name != "MainThread" else 1))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", pause)
    try:
        yield pauses
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", pause)


def _rule(shop, tx_class, workers: int, paused):
    shop.user(1)
    shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                          for i in range(1, 9)])
    policy = shop.policy(LOGS_PURGE, settings="batch_size = 2\nmax_batch_seconds = 1000")
    heard = Heard()
    with commands.open_session(policy, env=HASH_ENV, now=NOW) as s:
        (plan,) = build_plans(s.binding, s.ctx)
        tx = tx_class(s.engines["shop"])
        try:
            out = execute_rule(tx, plan, s.config.settings, s.ctx, ExecOptions(dry_run=False, workers=workers,
                                                                          simulated=tx_class is Simulation),
                               heard)
        finally:
            tx.close()
    return out, heard


def test_each_committed_batch_is_heard_with_how_long_its_transaction_was_open(sqlite_shop, paused):
    out, heard = _rule(sqlite_shop, Transactions, 1, paused)
    assert out.touch == 8 and out.batches == 4
    assert sorted(b for b, *_ in heard.committed_batches) == [1, 2, 3, 4]
    lengths = [seconds for _, _, seconds, _ in heard.committed_batches]
    assert all(seconds is not None and seconds >= PAUSE for seconds in lengths)
    assert sum(lengths) <= out.duration_seconds + 0.001


@pytest.mark.postgresql
def test_workers_hear_the_length_of_their_own_batches(pg_shop, paused):
    out, heard = _rule(pg_shop, Transactions, 2, paused)
    assert out.touch == 8
    threads = {thread for *_, thread in heard.committed_batches}
    for _, _, seconds, thread in heard.committed_batches:
        assert seconds >= PAUSE * (3 if thread != "MainThread" else 1)
    assert sum(paused.values()) == len(heard.committed_batches) and threads == set(paused)


def test_a_simulation_commits_nothing_so_no_length_is_heard(sqlite_shop, paused):
    out, heard = _rule(sqlite_shop, Simulation, 1, paused)
    assert out.touch == 8
    assert heard.committed_batches and all(seconds is None for _, _, seconds, _ in heard.committed_batches)
