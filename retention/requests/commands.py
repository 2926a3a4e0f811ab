"""``retention request erase SUBJECT:KEY`` and ``retention requests``, as functions."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime

import sqlalchemy as sa

from retention.audit import audit_key, keyed
from retention.errors import ConfigError
from retention.requests import queue as Q
from retention.requests.erase import typed_key
from retention.requests.fulfil import check_requests, describe, open_rows
from retention.state import open_store


def _queue_for(config, subject: str, name: str | None):
    reqs = [r for r in config.model.requests if r.subject == subject and (name is None or r.name == name)]
    if not reqs:
        known = ", ".join(sorted({r.subject for r in config.model.requests})) or "none"
        raise ConfigError(f"no [[requests]] entry for subject '{subject}'" + (f" named '{name}'" if name else "")
                          + f" (subjects with requests: {known})", file=config.path, where="SUBJECT:KEY")
    if len(reqs) > 1:
        raise ConfigError(f"several [[requests]] entries take subject '{subject}': name one with --queue",
                          file=config.path, where="--queue")
    return reqs[0]


def file_request(config_path: str | None, target: str, *, reason: str | None = None, queue: str | None = None,
                 now: datetime | None = None, env: Mapping[str, str] | None = None) -> dict:
    """File an erasure request for ``subject:key``; return it as ``retention requests`` shows it."""
    from retention.commands import open_session
    subject, sep, key = target.partition(":")
    if not sep or not subject or not key:
        raise ConfigError(f"'{target}' is not SUBJECT:KEY (e.g. customer:42)", where="SUBJECT:KEY")
    with open_session(config_path, env=env, now=now) as s:
        if subject not in s.config.model.subjects:
            known = ", ".join(sorted(s.config.model.subjects)) or "none"
            raise ConfigError(f"unknown subject '{subject}' (subjects: {known})", file=s.config.path,
                              where="SUBJECT:KEY")
        check_requests(s.binding)
        req = _queue_for(s.config, subject, queue)
        subj = s.config.model.subjects[subject]
        try:
            value = typed_key(s.binding, subject, key)
        except ValueError:
            raise ConfigError(f"'{key}' is not a valid key of {subj.table}", where="SUBJECT:KEY") from None
        t = s.binding.catalog.tables[subj.table].table
        with s.engines[subj.table.split(".", 1)[0]].connect() as conn:
            exists = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c[subj.key] == value)).scalar()
            conn.rollback()
        if not exists:
            raise ConfigError(f"no {subject} with {subj.key} = {key} in {subj.table}", where="SUBJECT:KEY")
        store = open_store(s.config.settings.state_url, s.config.path, s.config.settings)
        try:
            if Q.is_state_queue(req):
                request_id = Q.file_state(store, req, s.ctx, value, reason)
            else:
                with s.engines[req.table.split(".", 1)[0]].begin() as conn:
                    request_id = Q.file_app(conn, s.binding, req, s.ctx, value, reason)
            row = next(r for r in open_rows(s, store, req, open_only=False) if r.id == request_id)
        finally:
            store.close()
        return describe(row, s.ctx.now, keyed(audit_key(os.environ if env is None else env), value))


def list_requests(config_path: str | None, *, now: datetime | None = None,
                  env: Mapping[str, str] | None = None, outbox: bool = False) -> dict:
    """Every request with its deadline and status, the ledger, and the recipients' outbox."""
    from retention.ledger import Ledger
    from retention.recipients import outbox as read_outbox
    from retention.commands import open_session
    env = os.environ if env is None else env
    with open_session(config_path, env=env, now=now) as s:
        check_requests(s.binding)
        store = open_store(s.config.settings.state_url, s.config.path, s.config.settings)
        try:
            items = []
            for req in s.config.model.requests:
                for row in open_rows(s, store, req, open_only=False):
                    item = describe(row, s.ctx.now, keyed(audit_key(env), row.key) if row.key is not None else None)
                    item["subject_key"] = row.key
                    items.append(item)
            ledger = [e.to_dict() for e in Ledger(store).entries()]
            box = read_outbox(store) if outbox else []
        finally:
            store.close()
    summary = {"total": len(items), "open": sum(i["status"] in Q.OPEN for i in items),
               "overdue": sum(i["urgency"] == "overdue" for i in items),
               "due_soon": sum(i["urgency"] == "due_soon" for i in items)}
    return {"now": s.ctx.now.isoformat(), **summary, "requests": items, "ledger": ledger,
            **({"outbox": box} if outbox else {})}


def render_listing(data: dict) -> str:
    """``retention requests`` for a terminal: overdue and due-soon requests flagged."""
    from retention.report.text import format_table
    flag = {"overdue": "OVERDUE", "due_soon": "DUE SOON"}
    lines = [f"erasure requests as of {data['now']}: {data['open']} open, {data['overdue']} overdue, "
             f"{data['due_soon']} due within 3 days"]
    if data["requests"]:
        rows = [[r["request"], f"{r['subject']}:{r['subject_key']}" if r["subject_key"] is not None else "(erased)",
                 r["received_at"][:10], r["deadline"][:10], "" if r["days_left"] is None else str(r["days_left"]),
                 r["status"], flag.get(r["urgency"] or "", "")] for r in data["requests"]]
        lines += [""] + format_table(["request", "subject", "received", "deadline", "days left", "status", ""],
                                     rows, numeric={4})
    if data["ledger"]:
        lines += ["", "erasure ledger"]
        rows = [[str(e["id"]), e["request"], e["subject_hash"], e["status"], e["erased_at"][:19],
                 str(sum(e["tables"].values())), e["gone_by"][:10] if e["gone_by"] else "none: " + (e["gone_by_reason"] or "")]
                for e in data["ledger"]]
        lines += format_table(["entry", "request", "subject", "status", "erased at", "rows", "gone from backups by"],
                              rows, numeric={5})
    if "outbox" in data:
        lines += ["", f"outbox: {len(data['outbox'])} undelivered notification(s)"]
        rows = [[str(o["id"]), o["recipient"], o["request"] or "", str(o["attempts"]), o["next_attempt_at"][:19],
                 o["last_error"] or ""] for o in data["outbox"]]
        if rows:
            lines += format_table(["id", "recipient", "request", "attempts", "next attempt", "last error"], rows,
                                  numeric={3})
    return "\n".join(lines) + "\n"
