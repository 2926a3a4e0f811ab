"""The hash-chained audit log, in the state store.

Every run, dry or not, appends entries: ``run-started`` (mode, policy file
SHA-256, ``now``, user, host), per batch ``batch-intent`` (written inside the
batch's transaction, before it commits) and ``batch-committed`` (after, with
``transaction_ms``: how long the batch's transaction was open),
likewise ``partition-intent`` and ``partition-committed`` around a whole
partition detached or dropped (its name and row count),
``rule-ended`` (the rule's counts) and ``run-ended`` (outcome, totals,
errors).  A run killed mid-batch therefore leaves an intent without its
outcome, and a run without ``run-ended`` was interrupted.

Each entry stores the SHA-256 of the previous entry, and its own hash over a
canonical JSON encoding (sorted keys, no whitespace, UTF-8) of
``{seq, run_id, kind, at, body, prev}``; the first entry's ``prev`` is 64
zeros.  Editing, inserting, deleting or reordering an entry breaks the chain
at that entry; truncating the tail is caught by comparing with a head a
report printed (``verify(head=...)``).

Key ranges of batches on a subject table identify people: they are written
as HMAC-SHA256 with the job's key (``RETENTION_AUDIT_KEY``, else
``RETENTION_HASH_KEY``), or withheld when no key is set.  Keys of other
tables are written as they are.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
import os
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from retention.errors import RetentionError
from retention.events import (BatchCommitted, BatchIntent, Event, PartitionCommitted, PartitionIntent, RuleEnded,
                              RunAbandoned, RunEnded, RunStarted)
from retention.plan import RulePlan
from retention.state import StateStore
from retention.state.tables import audit as T
from retention.timectx import utcnow

if TYPE_CHECKING:
    from retention.config import Config
    from retention.runtime import Run

GENESIS = "0" * 64
KEY_ENVS = ("RETENTION_AUDIT_KEY", "RETENTION_HASH_KEY")


class AuditUnavailable(RetentionError):
    """The audit entry could not be written: the job touches no application data without it."""


def canonical(value: Any) -> bytes:
    """The one encoding entries are hashed over: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_plain).encode("utf-8")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def entry_hash(seq: int, run_id: str, kind: str, at: str, body: Any, prev: str) -> str:
    """SHA-256 (hex) of an entry's canonical encoding, its predecessor's hash included."""
    doc = {"seq": seq, "run_id": run_id, "kind": kind, "at": at, "body": body, "prev": prev}
    return hashlib.sha256(canonical(doc)).hexdigest()


def audit_key(env: Mapping[str, str]) -> bytes | None:
    """The job's key for keyed hashes in the audit log, or None when none is set."""
    for name in KEY_ENVS:
        if env.get(name):
            return env[name].encode("utf-8")
    return None


def keyed(key: bytes | None, value: Any) -> str | None:
    """``hmac:<hex>`` of ``value`` under ``key`` (None without a key, or for None)."""
    if key is None or value is None:
        return None
    return "hmac:" + hmac.new(key, str(value).encode("utf-8"), hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    seq: int
    run_id: str
    kind: str
    at: str
    body: dict
    prev_hash: str
    hash: str

    def to_dict(self) -> dict:
        return {"seq": self.seq, "run_id": self.run_id, "kind": self.kind, "at": self.at,
                "body": self.body, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class Verdict:
    """What ``verify`` found: ``ok``, how many entries it checked, and the first bad one."""

    ok: bool
    checked: int
    head: str
    bad_seq: int | None = None
    reason: str | None = None


class AuditLog:
    """Append to, read and verify the chain in a state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def append(self, run_id: str, kind: str, body: dict) -> Entry:
        """Append one entry after the current head; raise AuditUnavailable if it cannot be written."""
        body = json.loads(canonical(body))       # exactly what is hashed is what is stored
        at = utcnow().isoformat()
        try:
            with self.store.writing() as conn:
                last = conn.execute(sa.select(T.c.seq, T.c.hash).order_by(T.c.seq.desc()).limit(1)).first()
                seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                digest = entry_hash(seq, run_id, kind, at, body, prev)
                conn.execute(T.insert().values(seq=seq, run_id=run_id, kind=kind, at=at,
                                               body=canonical(body).decode("utf-8"), prev_hash=prev, hash=digest))
        except SQLAlchemyError as e:
            raise AuditUnavailable(str(self.store.failure("cannot write the audit log", e))) from None
        return Entry(seq, run_id, kind, at, body, prev, digest)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last entry; (0, 64 zeros) for an empty log."""
        with self.store.reading() as conn:
            last = conn.execute(sa.select(T.c.seq, T.c.hash).order_by(T.c.seq.desc()).limit(1)).first()
        return (int(last[0]), last[1]) if last else (0, GENESIS)

    def entries(self, run_id: str | None = None, since: datetime | None = None) -> Iterator[Entry]:
        """Entries in chain order, optionally of one run, or at or after ``since``."""
        q = sa.select(T).order_by(T.c.seq)
        if run_id:
            q = q.where(T.c.run_id == run_id)
        with self.store.reading() as conn:
            for row in conn.execute(q):
                if since is not None and datetime.fromisoformat(row.at) < since:
                    continue
                yield _entry(row)

    def verify(self, head: str | None = None) -> Verdict:
        """Walk the chain from the first entry; stop at the first entry that does not fit.

        An entry is bad when its ``seq`` is not one more than its predecessor's
        (deleted or inserted), its ``prev_hash`` is not its predecessor's hash
        (deleted, inserted, reordered), or its hash does not match its content
        (edited).  With ``head``, a hash a report printed, the chain must also
        contain it: a log cut short after that report is caught too.
        """
        prev, expected, checked, seen_head = GENESIS, 1, 0, head is None
        with self.store.reading() as conn:
            for row in conn.execute(sa.select(T).order_by(T.c.seq)):
                try:
                    body = json.loads(row.body)
                except ValueError:
                    return Verdict(False, checked, prev, row.seq, "its body is not JSON")
                if row.seq != expected:
                    return Verdict(False, checked, prev, row.seq,
                                   f"sequence number {row.seq} where {expected} was due (an entry was "
                                   f"deleted or inserted before it)")
                if row.prev_hash != prev:
                    return Verdict(False, checked, prev, row.seq,
                                   "it does not follow the entry before it (an entry was deleted, inserted "
                                   "or moved)")
                if entry_hash(row.seq, row.run_id, row.kind, row.at, body, row.prev_hash) != row.hash:
                    return Verdict(False, checked, prev, row.seq, "its content does not match its hash (edited)")
                if row.body != canonical(body).decode("utf-8"):
                    return Verdict(False, checked, prev, row.seq, "its body is not in canonical form (edited)")
                prev, expected, checked = row.hash, expected + 1, checked + 1
                seen_head = seen_head or row.hash == head
        if not seen_head:
            return Verdict(False, checked, prev, None,
                           f"the head {head} is not in the log: entries after it were removed or rewritten")
        return Verdict(True, checked, prev)


def _entry(row) -> Entry:
    try:
        body = json.loads(row.body)
    except ValueError:
        body = {"unreadable": True}
    return Entry(int(row.seq), row.run_id, row.kind, row.at, body, row.prev_hash, row.hash)


def runs(entries: list[Entry]) -> list[dict]:
    """One summary per run: mode, start, end, outcome; a run without its end is ``interrupted``.

    A run whose last entry is a batch intent was stopped between writing
    the intent and its outcome: whether that batch committed is only known
    from the application database.
    """
    out: dict[str, dict] = {}
    for e in entries:
        r = out.setdefault(e.run_id, {"run_id": e.run_id, "mode": None, "started_at": None, "ended_at": None,
                                      "outcome": "interrupted (no end recorded)", "rules": 0, "batches": 0,
                                      "open_batch": None})
        if e.kind == "run-started":
            r["mode"], r["started_at"] = e.body.get("mode"), e.at
            r.update({k: e.body.get(k) for k in ("user", "host", "policy_sha256", "shard")})
        elif e.kind == "batch-intent":
            r["open_batch"] = e.body.get("batch")
        elif e.kind == "batch-committed":
            r["batches"] += 1
            r["open_batch"] = None
        elif e.kind == "rule-ended":
            r["rules"] += 1
        elif e.kind == "run-ended":
            r["ended_at"], r["outcome"] = e.at, e.body.get("outcome")
        elif e.kind == "run-abandoned":
            r["outcome"] = "interrupted (" + e.body.get("reason", "abandoned") + ")"
    return list(out.values())


# -- the audit trail: a run's subscriber ----------------------------------------------------------

class AuditTrail:
    """Writes a run's events to the audit log (:mod:`retention.audit`).

    Batch keys of a subject table (whose keys name people) are written as
    keyed hashes; see the module's docstring.  A simulation's batches are
    not written: nothing they did was kept; its rule counts are.
    """

    def __init__(self, log_: AuditLog, key: bytes | None, config: Config) -> None:
        self.log = log_
        self.key = key
        self.subject_tables = {s.table for s in config.model.subjects.values()}

    def __call__(self, event: Event) -> None:
        handler = getattr(self, "_" + type(event).__name__, None)
        if handler:
            handler(event)

    def _append(self, run: Run, kind: str, body: dict, run_id: str | None = None) -> None:
        if getattr(run, "shard", None) is not None:
            # concurrent shards interleave in the one chain: every entry says whose it is
            body = {**body, "shard": str(run.shard)}
        entry = self.log.append(run_id or run.run_id, kind, body)
        if run.report is not None:
            run.report.audit_seq, run.report.audit_head = entry.seq, entry.hash

    def _RunStarted(self, e: RunStarted) -> None:
        r = e.run
        self._append(r, "run-started", {
            "mode": r.mode.name, "policy_path": r.config.path, "policy_sha256": r.config.sha256,
            "now": r.session.ctx.now.isoformat(), "user": r.user, "host": r.host, "pid": os.getpid(),
            "only": list(r.only or []), "allow_large": r.allow_large,
            **({"plan_sha256": r.mode.reviewed.sha256} if getattr(r.mode, "reviewed", None) else {})})

    def _RunAbandoned(self, e: RunAbandoned) -> None:
        self._append(e.run, "run-abandoned", {"reason": e.reason, "found_by": e.run.run_id},
                     run_id=e.abandoned_run_id)

    def _keys(self, plan: RulePlan, lo, hi) -> dict:
        if plan.rule.table not in self.subject_tables:
            return {"lo": lo, "hi": hi, "form": "plain"}
        if self.key is None:
            return {"lo": None, "hi": None, "form": "withheld (no RETENTION_AUDIT_KEY or RETENTION_HASH_KEY)"}
        return {"lo": keyed(self.key, lo), "hi": keyed(self.key, hi), "form": "hmac-sha256"}

    def _batch(self, kind: str, e: BatchIntent | BatchCommitted, extra: dict | None = None) -> None:
        if not e.run.mode.commits:
            return
        self._append(e.run, kind, {
            "rule": e.plan.rule.name, "table": e.plan.rule.table, "batch": e.batch,
            "keys": self._keys(e.plan, e.lo, e.hi), "touched": e.touched,
            "cascaded": {f"{table} {action}": n for (table, action), n in e.cascaded.items()}, **(extra or {})})

    def _BatchIntent(self, e: BatchIntent) -> None:
        self._batch("batch-intent", e)

    def _BatchCommitted(self, e: BatchCommitted) -> None:
        # how long the batch held its locks, for whoever must show that transactions stayed short
        self._batch("batch-committed", e,
                    {} if e.seconds is None else {"transaction_ms": round(e.seconds * 1000, 1)})

    def _partition(self, kind: str, e: PartitionIntent | PartitionCommitted) -> None:
        # a partition's name and row count only: what it held is gone (dropped) or kept aside (detached)
        if not e.run.mode.commits:
            return
        p = e.partition
        self._append(e.run, kind, {"rule": e.plan.rule.name, "table": e.plan.rule.table, "partition": p.partition,
                                   "action": p.action, "rows": p.rows, "status": p.status})

    def _PartitionIntent(self, e: PartitionIntent) -> None:
        self._partition("partition-intent", e)

    def _PartitionCommitted(self, e: PartitionCommitted) -> None:
        self._partition("partition-committed", e)

    def _RuleEnded(self, e: RuleEnded) -> None:
        o = e.outcome
        self._append(e.run, "rule-ended", {
            "rule": o.rule, "action": o.action, "table": o.table, "status": o.status, "due": o.due,
            "protected": {f"{p.kind}:{p.name}": p.rows for p in o.protected}, "touched": o.touch,
            "unchanged": o.unchanged, "remaining": o.remaining,
            "cascaded": {f"{c.table} {c.action} via {c.via}": c.rows for c in o.cascades},
            "batches": o.batches, "guard": o.guard.state, "error": o.error,
            **({"partitions": {p.partition: f"{p.status} ({p.rows} rows)" for p in o.partitions}}
               if o.partitions else {})})

    def _SubjectErased(self, e) -> None:
        """An erasure request's subject, inside its transaction (retention.ledger.SubjectErased)."""
        x = e.erasure
        self._append(e.run, "request-erased", {
            "request": e.request, "subject": x.subject, "subject_hash": e.subject_hash, "status": x.status,
            "tables": dict(x.tables), "protected": [p.to_dict() for p in x.protected]})

    def _RunEnded(self, e: RunEnded) -> None:
        r = e.report
        self._append(e.run, "run-ended", {
            "outcome": e.outcome, "exit_code": r.exit_code, "interrupted": r.interrupted,
            "skipped": list(r.skipped), "errors": list(r.errors),
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "finished_at": r.finished_at.isoformat() if r.finished_at else None,
            "totals": {k: v for k, v in r.to_dict()["totals"].items()}})
