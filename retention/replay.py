"""``retention replay``: after a restore, erase again everyone the ledger erased after the backup.

A database restored from a backup taken at ``T`` holds again every person
erased after ``T``.  Time-based rules need no replay (the next run deletes
those rows again); requests do.  The ledger (in the state store, which the
restore did not touch) names each erased subject by a keyed hash of its key,
so replay hashes every key of the restored subject table with the same job
key, finds the ledger's subjects among them, and erases each again with the
same operation a request uses (:mod:`retention.requests.erase`), one
transaction per subject.  ``--dry-run`` runs the same statements in a
transaction that is rolled back, so its numbers are exact.

Replay holds the run lock (no run interleaves) and writes one ``replay``
entry to the audit log.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from retention.audit import AuditLog, audit_key, keyed
from retention.config import RequestConfig
from retention.errors import ConfigError, RetentionError
from retention.ledger import Ledger
from retention.requests.erase import build_subject_op, erase
from retention.state import open_store


@dataclass
class Replay:
    """What a replay found and did (or, dry, would do)."""

    backup_time: datetime
    dry_run: bool
    entries: list[dict] = field(default_factory=list)

    @property
    def erased_subjects(self) -> int:
        return sum(1 for e in self.entries if e["found"] and e["rows"])

    def to_dict(self) -> dict:
        return {"backup_time": self.backup_time.isoformat(), "dry_run": self.dry_run,
                "subjects_found": sum(e["found"] for e in self.entries),
                "subjects_erased": self.erased_subjects, "entries": self.entries}

    def render_text(self) -> str:
        head = "REPLAY DRY RUN (nothing was changed)" if self.dry_run else "REPLAY"
        lines = [f"{head}: ledger erasures recorded after {self.backup_time.isoformat()}"]
        for e in self.entries:
            if not e["found"]:
                what = "not in the restored database (nothing to do)"
            else:
                verb = "would erase" if self.dry_run else "erased"
                what = f"{verb} {e['rows']} row(s): " + ", ".join(f"{t} {n}" for t, n in sorted(e["tables"].items()))
                if e["protected"]:
                    what += "; kept: " + ", ".join(f"{p['table']} {p['rows']} ({p['kind']} {p['name']})"
                                                   for p in e["protected"])
            lines.append(f"  {e['request']}  {e['subject_hash']}  {what}")
        if not self.entries:
            lines.append("  no erasure was recorded after the backup: nothing to replay")
        return "\n".join(lines) + "\n"


def backup_time_of(config, name: str) -> datetime:
    """The time of backup ``name``, from the ``[[backups]]`` inventories."""
    from retention.backups import open_store as open_backups
    from retention.backups import take_inventory
    for b in config.model.backups:
        for backup in take_inventory(b, open_backups(b.location), config.settings.tz).backups:
            if backup.name == name:
                return backup.time
    raise ConfigError(f"no backup named '{name}' in any [[backups]] set", file=config.path, where="--backup")


def replay(config_path: str | None, *, backup_time: datetime | None = None, backup: str | None = None,
           dry_run: bool = False, env: Mapping[str, str] | None = None) -> Replay:
    """Re-apply every ledger erasure recorded after the backup's time to the restored databases."""
    from retention.commands import open_session
    from retention.locks import RunLock
    env = os.environ if env is None else env
    if (backup_time is None) == (backup is None):
        raise ConfigError("give exactly one of --backup-time or --backup", where="--backup-time")
    key = audit_key(env)
    if key is None:
        raise ConfigError("replay finds subjects by their keyed hash: set the key the runs used "
                          "(RETENTION_AUDIT_KEY or RETENTION_HASH_KEY)", where="RETENTION_HASH_KEY")
    with open_session(config_path, env=env) as s:
        when = backup_time if backup_time is not None else backup_time_of(s.config, backup)
        if when.tzinfo is None:
            when = when.replace(tzinfo=s.ctx.tz)
        result = Replay(when, dry_run)
        store = open_store(s.config.settings.state_url, s.config.path, s.config.settings)
        try:
            entries = Ledger(store).entries(after=when)
            lock = None if dry_run else RunLock(store, s.engines, s.run_id)
            if lock:
                lock.acquire()
            try:
                _replay(s, entries, key, result)
            finally:
                if lock:
                    lock.release()
            AuditLog(store).append(s.run_id or uuid.uuid4().hex[:12], "replay", {
                "backup_time": when.isoformat(), "dry_run": dry_run,
                "entries": [{k: e[k] for k in ("ledger_id", "request", "subject_hash", "found", "rows")}
                            for e in result.entries]})
        finally:
            store.close()
    return result


def _replay(s, entries, key: bytes, result: Replay) -> None:
    latest: dict[tuple[str, str, str], object] = {}
    for e in entries:                  # one replay per subject: its latest entry
        latest[(e.database, e.subject, e.subject_hash)] = e
    found = _find_subjects(s, {(db, subj) for db, subj, _h in latest}, key)
    for (db, subject, subject_hash), entry in latest.items():
        item = {"ledger_id": entry.id, "request": entry.request, "subject": subject, "subject_hash": subject_hash,
                "found": False, "rows": 0, "tables": {}, "protected": []}
        result.entries.append(item)
        subject_key = found.get((db, subject), {}).get(subject_hash)
        if subject_key is None:
            continue
        item["found"] = True
        req = _request_for(s.config, entry, subject)
        op = build_subject_op(s.binding, s.ctx, req, subject_key)
        with s.engines[op.db].connect() as conn:
            tx = conn.begin()
            try:
                erasure = erase(conn, s.binding, s.ctx, op)
            except BaseException:
                tx.rollback()
                raise
            if result.dry_run:
                tx.rollback()
            else:
                tx.commit()
        item.update(rows=erasure.rows, tables=erasure.tables, protected=[p.to_dict() for p in erasure.protected])


def _find_subjects(s, wanted: set[tuple[str, str]], key: bytes) -> dict[tuple[str, str], dict[str, object]]:
    """hash -> key of every row of each wanted subject table (streamed; keys never leave this process)."""
    out: dict[tuple[str, str], dict[str, object]] = {}
    for db, subject in wanted:
        cfg = s.config.model.subjects.get(subject)
        if cfg is None or db not in s.engines:
            raise RetentionError(f"the ledger names subject '{subject}' in database '{db}', which this policy "
                                 f"file does not reach: replay with the policy file the runs used")
        col = s.binding.catalog.tables[cfg.table].table.c[cfg.key]
        hashes: dict[str, object] = {}
        with s.engines[db].connect() as conn:
            for (value,) in conn.execution_options(yield_per=10000).execute(sa.select(col)):
                hashes[keyed(key, value)] = value
            conn.rollback()
        out[(db, subject)] = hashes
    return out


def _request_for(config, entry, subject: str) -> RequestConfig:
    """The [[requests]] entry that erased it (its queue table is left to the cascade), else a plain one."""
    name = entry.request.split("#", 1)[0]
    for req in config.model.requests:
        if req.name == name and req.subject == subject:
            return req
    return RequestConfig.model_construct(name="replay", table="state.requests", subject=subject,
                                         subject_column="", action=entry.action)
