"""A run killed mid-batch (SIGKILL, no handler runs) leaves the database consistent, and a
rerun finishes the work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path

from tests.shopkit import USERS_PURGE, cascades, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


_DIE_MID_BATCH = textwrap.dedent("""
    import os, signal, sys
    from datetime import datetime, timezone
    from retention import commands
    from retention.execute import batch
    original, seen = batch._cascade, []

    def cascade_then_die(conn, plan, steps, roots, cascaded, path=()):
        original(conn, plan, steps, roots, cascaded, path)
        if not path:                       # the batch's top-level cascade: children gone, parents not yet
            seen.append(1)
            if len(seen) == 3:
                os.kill(os.getpid(), signal.SIGKILL)

    batch._cascade = cascade_then_die
    commands.run(sys.argv[1], now=datetime(2026, 6, 15, 12, tzinfo=timezone.utc),
                 env={"RETENTION_HASH_KEY": "k"})
    """)


def test_killed_mid_batch_the_database_stays_consistent_and_a_rerun_finishes(shop):
    for i in range(1, 11):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
        shop.insert("orders", dict(id=i, user_id=i, completed_at=OLD, total=1, buyer_name="b", shipping="s"))
        shop.insert("order_items", dict(id=i, order_id=i, sku="x"))
    policy = shop.policy(USERS_PURGE + """
        [tables."shop.addresses"]
        on_parent_delete = "delete"
        [tables."shop.orders"]
        on_parent_delete = "delete"
        [tables."shop.order_items"]
        on_parent_delete = "delete"
        """, settings="batch_size = 2\nmax_batch_seconds = 1000")
    shop.engine.dispose()
    root = str(Path(__file__).resolve().parent.parent)
    proc = subprocess.run([sys.executable, "-c", _DIE_MID_BATCH, policy], cwd=root, capture_output=True,
                          env={**os.environ, "PYTHONPATH": root}, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    # two batches committed; the third died between its children and its parents and rolled back whole
    assert shop.dangling() == []
    for table in ("users", "addresses", "orders", "order_items"):
        assert shop.ids(table) == list(range(5, 11)), table
    again = outcome(shop.run(policy, now=NOW), "closed-users-purge")
    assert (again.status, again.due, again.touch) == ("ok", 6, 6) and adds_up(again)
    assert cascades(again) == {"shop.addresses:delete": 6, "shop.orders:delete": 6,
                               "shop.order_items:delete": 6}
    assert shop.ids("users") == [] and shop.dangling() == []
    assert outcome(shop.run(policy, now=NOW), "closed-users-purge").touch == 0
