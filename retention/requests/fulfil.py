"""Each run fulfils the open erasure requests, one subject per transaction.

Called by :class:`retention.runtime.Run` after the rules.  A dry run lists
the requests with their deadlines and touches nothing; a simulation also
erases each open request's subject in a transaction it rolls back (exact
numbers, no ledger entry, nothing sent; it sees the data as it was before the
rules, whose own simulated transactions are rolled back first); a ``run``
erases each open request's subject (:mod:`retention.requests.erase`),
sets the request ``done`` or ``partial`` (in the same transaction when the
queue is the application's own table), emits
:class:`~retention.ledger.SubjectErased` (the ledger and the recipients'
outbox are written by its subscriber before the erasure commits), then
delivers the due notifications.  A ``partial`` request is tried again on
every run, so it completes by itself once the floor ends or the hold is
released.
"""

from __future__ import annotations

import structlog
from sqlalchemy.exc import SQLAlchemyError

from retention.audit import audit_key, keyed
from retention.errors import ConfigError, RetentionError
from retention.lazy import lazy
from retention.ledger import SubjectErased

# every run calls fulfil(); only a policy with [[requests]] reads a queue or erases a subject
Q = lazy("retention.requests.queue")

log = structlog.get_logger("retention.requests")


def check_requests(binding) -> None:
    """Refuse what the request entries name but the schema or this release cannot do (exit 2)."""
    for req in binding.config.model.requests:
        subject = binding.config.model.subjects[req.subject]
        if subject.table.split(".", 1)[0] not in binding.catalog.engines:
            continue      # the subject's database is unreachable; reported there
        if subject.table not in binding.catalog.tables:
            raise binding.config.error(f"the subject table {subject.table} does not exist",
                                       f"subject '{req.subject}'", "table")
        if req.action == "anonymize":
            _check_anonymize(binding, req)
        if not Q.is_state_queue(req):
            Q.check_app_queue(binding, req)


def _check_anonymize(binding, req) -> None:
    """An anonymizing request needs strategies for the subject's own row, and ``keep`` names linked tables."""
    from retention.requests.erase import anonymize_strategies, linked_tables
    where = f"request '{req.name}'"
    subject = binding.config.model.subjects[req.subject]
    if not anonymize_strategies(binding, subject.table):
        raise binding.config.error(
            f"action = \"anonymize\" rewrites the subject's row of {subject.table} with the strategies of the "
            f"anonymize rules on that table, and no enabled rule anonymizes it: add one, or erase by "
            f"action = \"delete\"", where, "action")
    linked = {table for table, _paths in linked_tables(binding, req.subject)}
    registers = {h.table for h in binding.config.model.holds}
    queue = {req.table} if not Q.is_state_queue(req) else set()
    deleted = sorted(t for t in linked - set(req.keep) - registers - queue if not anonymize_strategies(binding, t))
    warning = (f"request '{req.name}' (anonymize): no anonymize rule covers {', '.join(deleted)}: the subject's "
               f"rows there are deleted; list a table in keep to leave it as it is")
    if deleted and warning not in binding.warnings:
        binding.warnings.append(warning)
    for table in req.keep:
        if table == subject.table:
            raise binding.config.error(f"the subject's own table {table} cannot be kept: its row is what the "
                                       f"request anonymizes", where, "keep")
        if table not in linked:
            raise binding.config.error(f"{table} is not linked to subject '{req.subject}' (linked: "
                                       f"{', '.join(sorted(linked)) or 'none'})", where, "keep")


def open_rows(session, store, req, *, open_only: bool) -> list[Q.RequestRow]:
    """The requests of one ``[[requests]]`` entry, from its queue."""
    if Q.is_state_queue(req):
        return Q.list_state(store, req, session.ctx, open_only=open_only)
    db = req.table.split(".", 1)[0]
    with session.engines[db].connect() as conn:
        try:
            return Q.list_app(conn, session.binding, req, session.ctx, open_only=open_only)
        finally:
            conn.rollback()


def describe(row: Q.RequestRow, now, subject_hash: str | None) -> dict:
    """A request as the report shows it: never the key, its keyed hash."""
    return {"request": row.ref, "subject": row.subject, "subject_hash": subject_hash or row.subject_hash,
            "received_at": row.received_at.isoformat(), "deadline": row.deadline.isoformat(),
            "days_left": row.days_left(now) if row.open else None, "status": row.status,
            "urgency": row.urgency(now), "open": row.open, "erased": {}, "protected": [], "not_done": [],
            "registers": {}, "error": None}


def fulfil(run, store, report) -> None:
    """List every request in ``report.requests``; in a ``run``, fulfil the open ones."""
    s = run.session
    cfg = s.config
    now = s.ctx.now
    key = audit_key(run.env)
    executes = run.mode.executes and not run.stop_signal
    commits = executes and run.mode.commits
    # a reviewed plan (run --plan) fulfils exactly the requests it lists
    reviewed = getattr(run.mode, "reviewed", None)
    # a sharded run's requests and outbox are shard 0's: done once, never by two shards at once
    shard = getattr(run, "shard", None)
    elsewhere = shard is not None and not shard.runs_requests
    for req in cfg.model.requests:
        db = cfg.model.subjects[req.subject].table.split(".", 1)[0]
        if db not in s.engines:
            report.errors.append(f"request '{req.name}': database '{db}' is unreachable; its requests wait")
            continue
        try:
            rows = open_rows(s, store, req, open_only=False)
        except (SQLAlchemyError, RetentionError) as e:
            report.errors.append(f"request '{req.name}': cannot read its queue: {e}")
            continue
        for row in rows:
            if not row.open and row.completed_at is not None and (now - row.completed_at).days > 30:
                continue      # answered long ago: the ledger remembers it
            item = describe(row, now, keyed(key, row.key) if row.key is not None else None)
            report.requests.append(item)
            if not (executes and row.open and row.key is not None):
                continue
            if run.only:
                item["skipped"] = [SKIPPED_ONLY]
                continue
            if elsewhere:
                item["skipped"] = [SKIPPED_SHARD]
                continue
            planned = None
            if reviewed is not None:
                planned = reviewed.requests.get(row.ref)
                why = _not_as_planned(planned, item)
                if why:
                    item["skipped"] = [why]
                    item["plan_drifted"] = planned is not None
                    continue
            if key is None:
                item["error"] = ("no RETENTION_AUDIT_KEY or RETENTION_HASH_KEY: the ledger cannot name the subject "
                                 "without the key; nothing erased")
                report.errors.append(f"request {row.ref}: {item['error']}")
                continue
            try:
                _fulfil_one(run, store, req, row, item, key, commits, planned, reviewed)
            except ConfigError:
                raise
            except (SQLAlchemyError, RetentionError) as e:
                from retention.execute import describe_error
                item["error"] = describe_error(e) if isinstance(e, SQLAlchemyError) else str(e)
                report.errors.append(f"request {row.ref}: {item['error']} (rolled back; tried again next run)")
    if commits and not elsewhere:
        from retention.recipients import deliver
        report.notifications = deliver(store, cfg, now).to_dict()
    elif executes and cfg.model.recipients and not elsewhere:
        from retention.recipients import outbox
        would = sum(1 for r in report.requests if r["erased"] or r["status"] == "done") * len(cfg.model.recipients)
        report.notifications = {"delivered": 0, "failed": 0, "pending": len(outbox(store)), "errors": [],
                                "would_send": would}


#: why a run limited by --only fulfils no request
SKIPPED_ONLY = ("this run was limited to some rules (--only): requests are fulfilled by a run without --only, "
                "or by a reviewed plan that lists them")


#: why shard 1 and above of a sharded run fulfil no request
SKIPPED_SHARD = "a sharded run fulfils requests in shard 0 only (with the recipients' outbox)"


def _not_as_planned(planned: dict | None, item: dict) -> str | None:
    """Why a run applying a reviewed plan must leave this request, or None."""
    if planned is None:
        return "not in the reviewed plan (filed after it was made): the next plan, or a run without --plan, fulfils it"
    if planned.get("subject_hash") != item["subject_hash"]:
        return "its subject is not the one the reviewed plan names: nothing erased; review a new plan"
    return None


def _fulfil_one(run, store, req, row: Q.RequestRow, item: dict, key: bytes, commits: bool,
                planned: dict | None = None, reviewed=None) -> None:
    from retention.requests.erase import build_subject_op, erase, typed_key
    s = run.session
    subject_key = typed_key(s.binding, req.subject, row.key)
    subject_hash = keyed(key, subject_key)
    op = build_subject_op(s.binding, s.ctx, req, subject_key)
    with s.engines[op.db].connect() as conn:
        tx = conn.begin()
        try:
            erasure = erase(conn, s.binding, s.ctx, op)
            if planned is not None and planned.get("rows") is not None \
                    and not reviewed.drift.allows(int(planned["rows"]), erasure.rows):
                tx.rollback()
                item.update(plan_drifted=True, skipped=[
                    f"{erasure.rows} rows to erase now, the reviewed plan counted {planned['rows']} (beyond "
                    f"--max-drift): nothing erased; review a new plan"])
                return
            if commits and not Q.is_state_queue(req) and erasure.status != row.status:
                Q.mark_app(conn, s.binding, req, s.ctx, row.id, erasure.status)
            # a partial erasure that erased nothing new is not a new ledger entry
            if commits and (erasure.rows or erasure.status != row.status):
                run.emit(SubjectErased(run, row.ref, subject_hash, erasure, s.ctx.now))
        except BaseException:
            tx.rollback()
            raise
        if commits:
            tx.commit()
        else:
            tx.rollback()
    if commits and Q.is_state_queue(req) and erasure.status != row.status:
        Q.mark_state(store, row.id, erasure.status, s.ctx, subject_hash)
    item.update(status=erasure.status, erased=erasure.tables, protected=[p.to_dict() for p in erasure.protected],
                not_done=erasure.not_done, registers=erasure.registers,
                urgency=None if erasure.status == "done" else item["urgency"])
    if erasure.status == "done":
        item["days_left"] = None
    log.info("request", request=row.ref, subject=subject_hash, status=erasure.status, rows=erasure.rows,
             protected=sum(p.rows for p in erasure.protected), not_done=sum(n["rows"] for n in erasure.not_done))
