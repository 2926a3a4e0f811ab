"""The erasure ledger: one entry per erasure of a subject, in the state store.

An entry names the subject by a keyed hash of its key (HMAC-SHA256 with the
job's key, :func:`retention.audit.keyed`), never the key itself; it records
the request, the tables and row counts, the time, what still protected rows
(``partial``), and ``gone_by``: the date by which every backup that may
still hold the erased data is removed (:func:`retention.backups.erasure_gone_by`),
or null with the reason when no backup policy gives a provable date.

The ledger lives beside the audit log, outside the application databases,
so restoring one does not roll it back: ``retention replay`` reads it to
erase the same people again (:mod:`retention.replay`).

Entries are written by :class:`LedgerWriter`, a subscriber of the run's
:class:`SubjectErased` event, inside the erasure's transaction before it
commits: an erasure whose entry cannot be written is rolled back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from retention.errors import RetentionError
from retention.state import StateStore
from retention.state.tables import ledger as L


class LedgerUnavailable(RetentionError):
    """The ledger entry could not be written: the erasure is rolled back."""


@dataclass(frozen=True)
class SubjectErased:
    """A subject's erasure ran in its transaction, which commits once every subscriber returns.

    ``erasure`` is a :class:`retention.requests.erase.Erasure`; ``request``
    names the request (``dsr#12``); ``subject_hash`` is the keyed hash.
    """

    run: object
    request: str
    subject_hash: str
    erasure: object
    erased_at: datetime


@dataclass(frozen=True)
class LedgerEntry:
    id: int
    run_id: str
    request: str
    subject: str
    database: str
    subject_hash: str
    action: str
    status: str
    tables: dict
    protected: list
    erased_at: str
    gone_by: str | None
    gone_by_reason: str | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _entry(row) -> LedgerEntry:
    return LedgerEntry(int(row.id), row.run_id, row.request, row.subject, row.database, row.subject_hash,
                       row.action, row.status, json.loads(row.tables), json.loads(row.protected), row.erased_at,
                       row.gone_by, row.gone_by_reason)


def gone_by(config, erased_at: datetime, now: datetime) -> tuple[datetime | None, str | None]:
    """(date, None), or (None, why there is no provable date)."""
    from retention.backups import erasure_gone_by
    missing = [b.name for b in config.model.backups if b.max_age is None]
    if missing:
        return None, f"backup set(s) {', '.join(missing)} have no max_age: no provable date"
    try:
        return erasure_gone_by(config, erased_at, now=now), None
    except (RetentionError, OSError) as e:
        return None, f"the backup inventory could not be listed: {e}"


class Ledger:
    """Append to and read the ledger in a state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def append(self, conn, *, run_id: str, request: str, subject: str, database: str, subject_hash: str,
               action: str, status: str, tables: dict, protected: list, erased_at: datetime,
               gone_by: datetime | None, gone_by_reason: str | None) -> int:
        """Insert one entry on ``conn`` (a state store transaction); return its id."""
        result = conn.execute(L.insert().values(
            run_id=run_id, request=request, subject=subject, database=database, subject_hash=subject_hash,
            action=action, status=status, tables=json.dumps(tables, sort_keys=True),
            protected=json.dumps(protected, sort_keys=True), erased_at=erased_at.isoformat(),
            gone_by=gone_by.isoformat() if gone_by else None, gone_by_reason=gone_by_reason))
        return int(result.inserted_primary_key[0])

    def entries(self, *, after: datetime | None = None, run_id: str | None = None) -> list[LedgerEntry]:
        """Entries in order; with ``after``, only those erased after that moment."""
        q = sa.select(L).order_by(L.c.id)
        if run_id:
            q = q.where(L.c.run_id == run_id)
        with self.store.reading() as conn:
            rows = [_entry(r) for r in conn.execute(q)]
        if after is not None:
            rows = [e for e in rows if datetime.fromisoformat(e.erased_at) > after]
        return rows


def _not_done(erasure) -> list[dict]:
    """Rows the database kept (a trigger cancelled their delete): listed beside what protectors kept,
    so an entry never reads as if they were erased."""
    return [{"kind": "not_done", "name": n["reason"], "table": n["table"], "rows": n["rows"], "until": None,
             "restricted": 0} for n in erasure.not_done]


class LedgerWriter:
    """Subscriber: writes a ledger entry and the recipients' notifications for each ``SubjectErased``."""

    def __init__(self, store: StateStore, config, now: datetime) -> None:
        self.store = store
        self.ledger = Ledger(store)
        self.config = config
        self.now = now
        self.written: list[LedgerEntry] = []

    def __call__(self, event) -> None:
        if not isinstance(event, SubjectErased):
            return
        from retention.recipients import enqueue
        e = event.erasure
        date, reason = gone_by(self.config, event.erased_at, self.now)
        try:
            with self.store.writing() as conn:
                entry_id = self.ledger.append(
                    conn, run_id=event.run.run_id, request=event.request, subject=e.subject, database=e.db,
                    subject_hash=event.subject_hash, action=e.action, status=e.status, tables=e.tables,
                    protected=[p.to_dict() for p in e.protected] + _not_done(e), erased_at=event.erased_at,
                    gone_by=date, gone_by_reason=reason)
                entry = _entry(conn.execute(sa.select(L).where(L.c.id == entry_id)).one())
                enqueue(conn, self.config, entry, self.now)
        except SQLAlchemyError as err:
            raise LedgerUnavailable(str(self.store.failure("cannot write the erasure ledger", err))) from None
        self.written.append(entry)
