"""Each committed batch's audit entry says how long its transaction was open (the evidence for short locks)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import sqlalchemy as sa

from tests.runkit import audit_rows, state_url, with_state  # noqa: F401
from tests.shopkit import LOGS_PURGE

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
PAUSE = 0.03


def test_every_committed_batch_records_how_long_its_transaction_was_open(sqlite_shop, state_url):
    sqlite_shop.user(1)
    sqlite_shop.insert("logs", *[dict(id=i, user_id=1, ip="10.0.0.1", created_at=datetime(2026, 1, 1))
                                 for i in range(1, 6)])
    policy = with_state(sqlite_shop.policy(LOGS_PURGE, settings="batch_size = 2"), state_url)

    def slow_delete(conn, cursor, statement, parameters, context, executemany):
        # a pause inside each batch's transaction, after BEGIN and before COMMIT
        if statement.lstrip().upper().startswith("DELETE FROM LOGS"):
            time.sleep(PAUSE)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", slow_delete)
    try:
        report = sqlite_shop.run(policy, now=NOW)
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", slow_delete)

    batches = [json.loads(r["body"]) for r in audit_rows(state_url) if r["kind"] == "batch-committed"]
    assert len(batches) == report.rules[0].batches == 3
    assert all(b["transaction_ms"] >= PAUSE * 1000 for b in batches)
    assert sum(b["transaction_ms"] for b in batches) <= report.rules[0].duration_seconds * 1000 + 1
    # the intent is written before the commit: it cannot know the transaction's length yet
    intents = [json.loads(r["body"]) for r in audit_rows(state_url) if r["kind"] == "batch-intent"]
    assert intents and all("transaction_ms" not in b for b in intents)
