"""Request queues: the application's own table, or the state store's (``table = "state.requests"``).

An application queue is read and written through the columns its
``[[requests]]`` entry names (``subject_column``, ``received_column``,
``status_column``; ``completed_at`` and ``reason`` when the table has them);
its status changes in the same transaction as the erasure it records.  The
state store's queue (``retention_requests``) keeps the subject key only
until the request is done, then only its keyed hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.config import RequestConfig
from retention.errors import ConfigError
from retention.state import StateStore
from retention.state.tables import requests as SQ
from retention.timectx import TimeContext

STATE_QUEUE = "state.requests"
OPEN = ("pending", "partial")
#: a request is "due soon" when its deadline is this close
DUE_SOON = timedelta(days=3)


@dataclass
class RequestRow:
    """One erasure request as a queue holds it."""

    queue: str                   # the [[requests]] entry's name
    id: int
    subject: str
    key: object | None           # None once the person is gone (the link was detached or cleared)
    received_at: datetime
    status: str
    deadline: datetime
    completed_at: datetime | None = None
    subject_hash: str | None = None      # state queue: kept once the key is cleared

    @property
    def ref(self) -> str:
        """How reports, the ledger and recipients name the request: ``dsr#12``."""
        return f"{self.queue}#{self.id}"

    @property
    def open(self) -> bool:
        return self.status in OPEN

    def days_left(self, now: datetime) -> int:
        """Whole days until the deadline; negative once it has passed."""
        return _days_left(self.deadline, now)

    def urgency(self, now: datetime) -> str | None:
        """``overdue`` or ``due_soon`` for an open request, else None."""
        if not self.open:
            return None
        if now > self.deadline:
            return "overdue"
        if self.deadline - now <= DUE_SOON:
            return "due_soon"
        return None


def _days_left(deadline: datetime, now: datetime) -> int:
    """Whole days until the deadline; negative once it has passed (-1: less than a day late)."""
    return (deadline - now) // timedelta(days=1)


def is_state_queue(req: RequestConfig) -> bool:
    return req.table == STATE_QUEUE


def _aware(value, ctx: TimeContext, col_type=None) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if col_type is not None:
        return ctx.from_column(col_type, value)
    return value if value.tzinfo else value.replace(tzinfo=ctx.tz)


# -- the application's own queue ---------------------------------------------------------

def app_table(binding, req: RequestConfig) -> sa.Table:
    return binding.catalog.tables[req.table].table


def check_app_queue(binding, req: RequestConfig) -> None:
    """Refuse an application queue whose table or columns are not there (exit 2)."""
    where = f"request '{req.name}'"
    if req.table not in binding.catalog.tables:
        raise binding.config.error(f"table '{req.table}' not found", where, "table")
    t = app_table(binding, req)
    for key in ("subject_column", "received_column", "status_column"):
        if getattr(req, key) not in t.c:
            raise binding.config.error(f"column '{getattr(req, key)}' not found in {req.table}", where, key)
    if len(t.primary_key.columns) != 1:
        raise binding.config.error(f"{req.table} needs a one-column primary key to name its requests", where, "table")
    fk = [f for f in binding.catalog.parents_of(req.table) if f.column == req.subject_column]
    if fk and req.action == "delete" and binding.parent_action(fk[0]) != "detach":
        raise binding.config.error(
            f"deleting a subject must keep its request as proof: set [tables.\"{req.table}\"] "
            f"on_parent_delete = \"detach\" (now '{binding.parent_action(fk[0])}')", where, "table")


def list_app(conn: Connection, binding, req: RequestConfig, ctx: TimeContext, *, open_only: bool) -> list[RequestRow]:
    t = app_table(binding, req)
    pk = list(t.primary_key.columns)[0]
    q = sa.select(pk, t.c[req.subject_column], t.c[req.received_column], t.c[req.status_column],
                  *([t.c["completed_at"]] if "completed_at" in t.c else [])).order_by(pk)
    if open_only:
        q = q.where(t.c[req.status_column].in_(OPEN))
    out = []
    for row in conn.execute(q):
        received = _aware(row[2], ctx, t.c[req.received_column].type)
        done = _aware(row[4], ctx, t.c["completed_at"].type) if len(row) > 4 else None
        out.append(RequestRow(req.name, int(row[0]), req.subject, row[1], received, row[3],
                              req.deadline.after(received), done))
    return out


def file_app(conn: Connection, binding, req: RequestConfig, ctx: TimeContext, key, reason: str | None) -> int:
    t = app_table(binding, req)
    pk = list(t.primary_key.columns)[0]
    values = {req.subject_column: key, req.received_column: ctx.moment_for(t.c[req.received_column].type, ctx.now),
              req.status_column: "pending"}
    if reason is not None:
        if "reason" not in t.c:
            raise ConfigError(f"{req.table} has no 'reason' column to keep the reason in", where="--reason")
        values["reason"] = reason
    result = conn.execute(t.insert().values(values))
    if result.inserted_primary_key and result.inserted_primary_key[0] is not None:
        return int(result.inserted_primary_key[0])
    return int(conn.execute(sa.select(sa.func.max(pk))).scalar())


def mark_app(conn: Connection, binding, req: RequestConfig, ctx: TimeContext, request_id: int, status: str) -> None:
    t = app_table(binding, req)
    pk = list(t.primary_key.columns)[0]
    values = {req.status_column: status}
    if "completed_at" in t.c and status == "done":
        values["completed_at"] = ctx.moment_for(t.c["completed_at"].type, ctx.now)
    conn.execute(sa.update(t).where(pk == request_id).values(values))


# -- the state store's queue -------------------------------------------------------------

def list_state(store: StateStore, req: RequestConfig, ctx: TimeContext, *, open_only: bool) -> list[RequestRow]:
    q = sa.select(SQ).where(SQ.c.queue == req.name).order_by(SQ.c.id)
    if open_only:
        q = q.where(SQ.c.status.in_(OPEN))
    with store.reading() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        received = _aware(r.received_at, ctx)
        out.append(RequestRow(req.name, int(r.id), r.subject, r.subject_key, received, r.status,
                              req.deadline.after(received), _aware(r.completed_at, ctx),
                              r.subject_hash))
    return out


def file_state(store: StateStore, req: RequestConfig, ctx: TimeContext, key, reason: str | None) -> int:
    with store.writing() as conn:
        result = conn.execute(SQ.insert().values(queue=req.name, subject=req.subject, subject_key=str(key),
                                                 received_at=ctx.now.isoformat(), status="pending", reason=reason))
        return int(result.inserted_primary_key[0])


def mark_state(store: StateStore, request_id: int, status: str, ctx: TimeContext, subject_hash: str | None) -> None:
    values = {"status": status}
    if status == "done":
        # the request is answered: keep only the keyed hash of whom it was about
        values.update(completed_at=ctx.now.isoformat(), subject_key=None, subject_hash=subject_hash)
    with store.writing() as conn:
        conn.execute(sa.update(SQ).where(SQ.c.id == request_id).values(values))
