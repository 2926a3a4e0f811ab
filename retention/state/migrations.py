"""Schema versions of the state store, as an ordered list of steps.

Step ``n`` brings a store from version ``n - 1`` to ``n``.  Steps are
append-only: a shipped step never changes, so every store that reached a
version has the same tables.  A step creates its tables from
:mod:`retention.state.tables` by name, so the table definitions stay in one
place; a later step that alters a shipped table writes its DDL out instead.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Connection

from retention.state import tables


def _create(*names: str) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        for name in names:
            tables.metadata.tables[name].create(conn, checkfirst=True)
    step.__doc__ = f"create {', '.join(names)}"
    return step


#: index i holds the step to version i + 1
STEPS: list[Callable[[Connection], None]] = [
    _create("retention_leases", "retention_audit"),                    # 1: run leases, audit log
    _create("retention_requests", "retention_ledger", "retention_outbox"),   # 2: requests, ledger, outbox
]

#: the version this code writes and understands
CURRENT = len(STEPS)
