"""Telling the recipients of the data: an outbox in the state store, delivered over HTTP.

Every ledger entry (a fulfilled or partly fulfilled request) puts one
notification per ``[[recipients]]`` entry in the outbox, in the same state
store transaction as the entry itself: a notification is never lost.  Each
run with ``retention run`` then POSTs the due ones as JSON::

    {"subject": "hmac:...", "request": "dsr#12", "status": "done", "erased_at": "...",
     "gone_by": "...", "tables": {...}}

with an ``Idempotency-Key`` header that stays the same on every attempt.  A
2xx answer marks it delivered and it is never sent again; anything else (an
error status, a refused connection, a timeout after the recipient's
``timeout``, default 10s) leaves it in the outbox with the error and the next
attempt due after an exponential backoff (1 min, 2, 4 ... capped at a day),
across runs.  The subject is the keyed hash, never the key: a recipient that
holds the key can compute the same hash.  If the process dies between a 2xx
and recording it, the next run sends it again with the same idempotency key,
so the recipient can tell.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from retention.dialects.base import duration_ms
from retention.log import mask_text
from retention.state import StateStore
from retention.state.tables import outbox as O

FIRST_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(days=1)


def backoff(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failure: 1 min, 2, 4 ... at most a day."""
    return min(FIRST_BACKOFF * (2 ** max(0, attempts - 1)), MAX_BACKOFF)


def idempotency_key(recipient: str, entry) -> str:
    return hashlib.sha256(f"{recipient}|{entry.id}|{entry.subject_hash}|{entry.erased_at}".encode()).hexdigest()[:40]


def payload(entry) -> dict:
    return {"subject": entry.subject_hash, "request": entry.request, "status": entry.status,
            "erased_at": entry.erased_at, "gone_by": entry.gone_by, "tables": entry.tables}


def enqueue(conn, config, entry, now: datetime) -> int:
    """One outbox row per recipient for ledger ``entry``, on ``conn`` (the ledger's transaction)."""
    n = 0
    for r in config.model.recipients:
        conn.execute(O.insert().values(
            recipient=r.name, ledger_id=entry.id, idempotency_key=idempotency_key(r.name, entry),
            payload=json.dumps(payload(entry), sort_keys=True), created_at=now.isoformat(), attempts=0,
            next_attempt_at=now.isoformat()))
        n += 1
    return n


@dataclass
class Delivery:
    """What one delivery round did, and what stays in the outbox."""

    delivered: int = 0
    failed: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"delivered": self.delivered, "failed": self.failed, "pending": self.pending,
                "errors": list(self.errors)}


def post(url: str, body: dict, key: str, timeout: float) -> tuple[int | None, str | None]:
    """POST ``body`` as JSON; (status, None) on an answer, (None, why) when there was none."""
    # imported here: every committing run reads the outbox, few have anything to send
    import urllib.error
    import urllib.request
    data = json.dumps(body, sort_keys=True).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST", headers={
        "Content-Type": "application/json", "Idempotency-Key": key, "User-Agent": "retention"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:   # noqa: S310 - the operator's URL
            return resp.status, None
    except urllib.error.HTTPError as e:
        return e.code, None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        return None, f"{type(reason).__name__}: {mask_text(str(reason))}"


def deliver(store: StateStore, config, now: datetime) -> Delivery:
    """Send every notification due at ``now``; record each answer; return the counts."""
    recipients = {r.name: r for r in config.model.recipients}
    out = Delivery()
    with store.reading() as conn:
        rows = conn.execute(sa.select(O).where(O.c.delivered_at.is_(None)).order_by(O.c.id)).all()
    for row in rows:
        if datetime.fromisoformat(row.next_attempt_at) > now:
            out.pending += 1
            continue
        r = recipients.get(row.recipient)
        if r is None:
            out.pending += 1
            out.errors.append(f"recipient '{row.recipient}' is no longer in the policy file: "
                              f"notification {row.id} stays in the outbox")
            continue
        status, why = post(r.url, json.loads(row.payload), row.idempotency_key, duration_ms(r.timeout) / 1000)
        with store.writing() as conn:
            if status is not None and 200 <= status < 300:
                conn.execute(sa.update(O).where(O.c.id == row.id).values(
                    delivered_at=now.isoformat(), attempts=row.attempts + 1, last_error=None))
                out.delivered += 1
                continue
            attempts = row.attempts + 1
            error = why or f"HTTP {status}"
            conn.execute(sa.update(O).where(O.c.id == row.id).values(
                attempts=attempts, last_error=error, next_attempt_at=(now + backoff(attempts)).isoformat()))
        out.failed += 1
        out.pending += 1
        out.errors.append(f"recipient '{row.recipient}' ({mask_text(r.url)}): {error}; "
                          f"attempt {attempts}, next after {(now + backoff(attempts)).isoformat()}")
    return out


def outbox(store: StateStore, *, all_rows: bool = False) -> list[dict]:
    """The outbox: undelivered notifications (every one with ``all_rows``), oldest first."""
    q = sa.select(O).order_by(O.c.id)
    if not all_rows:
        q = q.where(O.c.delivered_at.is_(None))
    with store.reading() as conn:
        return [{"id": r.id, "recipient": r.recipient, "ledger_id": r.ledger_id, "idempotency_key": r.idempotency_key,
                 "request": json.loads(r.payload).get("request"), "created_at": r.created_at, "attempts": r.attempts,
                 "next_attempt_at": r.next_attempt_at, "last_error": r.last_error, "delivered_at": r.delivered_at}
                for r in conn.execute(q)]
