"""A rule from count to commit: guard, then batches, one transaction each."""

from __future__ import annotations

import time
from datetime import datetime

import structlog
from sqlalchemy.exc import SQLAlchemyError

from retention.config import Settings
from retention.errors import RetentionError
from retention.execute.batch import NOT_DONE, _batch, _candidates, _locks_parents, _tally
from retention.execute.cascade import empty_cascades
from retention.execute.count import count_rule, count_touch
from retention.execute.errors import describe_error
from retention.execute.keys import _next_bound, _range
from retention.execute.options import BatchHooks, ExecOptions
from retention.execute.partitions import take_partitions
from retention.execute.show import show_statement
from retention.plan import RulePlan
from retention.report.model import Cascade, RuleOutcome
from retention.timectx import TimeContext
from retention.transactions import EnoughRecorded, Recording, Transactions

log = structlog.get_logger("retention.execute")


def guard_state(out: RuleOutcome, plan: RulePlan, allow_large: bool, whole: int | None = None) -> None:
    """Trip the guard when the rule would touch more than ``max_rows`` or ``max_fraction``.

    A tripped rule touches nothing, in a dry run as in a run, so both report 0
    touched and ``guard.rows`` says how many it would have touched.  A shard
    passes ``whole``, what the whole rule would touch: the limits are checked
    against that, so every shard decides as one run would.
    """
    out.guard.rows = out.touch
    counted = out.touch if whole is None else whole
    out.guard.rule_rows = whole
    limit_rows = plan.max_rows
    over = limit_rows is not None and counted > limit_rows
    if out.guard.table_rows and counted > plan.max_fraction * out.guard.table_rows:
        over = True
    if over:
        out.guard.state = "allowed" if allow_large else "tripped"
        if not allow_large:
            out.status = "guard_tripped"
            out.remaining, out.touch = out.remaining + out.touch, 0
            out.cascades = [Cascade(c.table, c.action, c.via, 0) for c in out.cascades]


def execute_rule(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
                 opts: ExecOptions, hooks: BatchHooks | None = None) -> RuleOutcome:
    """Count the rule, check its guard, and (unless dry) enforce it batch by batch."""
    started = time.monotonic()
    rule = plan.rule
    try:
        with tx.read() as conn:
            out = count_rule(conn, plan, ctx, opts)
            whole = None if plan.whole is None else count_touch(conn, plan.whole, opts)
        if whole is None:
            guard_state(out, plan, opts.allow_large)
        else:
            guard_state(out, plan, opts.allow_large, whole)
        if hooks is not None:
            hooks.counted(plan, out)
        if opts.show_sql:
            out.statements = statements(tx, plan, settings, ctx, opts, limit=out.guard.rows)
        if opts.dry_run and out.status in ("ok", "incomplete"):
            take_partitions(tx, plan, ctx, opts, out, hooks or BatchHooks())
        if not opts.dry_run and out.status in ("ok", "incomplete"):
            # from here on the outcome says what was committed, batch by batch, even if a later batch fails
            out.touch, out.batches = 0, 0
            if plan.cascade:
                out.cascades = list(empty_cascades(plan).values())
            # the run does at most what was counted and guarded: rows that become workable
            # meanwhile (a hold released, a row unblocked by this very rule) wait for the next run
            # whole partitions first (partitions = "drop" | "detach"): their rows count in out.touch
            take_partitions(tx, plan, ctx, opts, out, hooks or BatchHooks())
            if out.guard.rows > out.touch:
                _enforce(tx, plan, settings, ctx, opts, out, limit=out.guard.rows, hooks=hooks or BatchHooks())
            # counted rows not touched, including those the batches could not do (out.not_done)
            out.remaining = out.due - out.protected_total - out.unchanged - out.touch
    except (SQLAlchemyError, RetentionError) as e:
        out = locals().get("out") or RuleOutcome(rule=rule.name, action=rule.action, table=rule.table,
                                                 basis=rule.basis)
        out.status, out.error = "failed", describe_error(e)
        # what the run meant to touch and did not (its committed batches are in touch)
        out.remaining = max(0, out.due - out.protected_total - out.unchanged - out.touch)
    out.cutoff = plan.cutoff if isinstance(plan.cutoff, datetime) else None
    out.duration_seconds = round(time.monotonic() - started, 3)
    log.info("rule", rule=rule.name, action=rule.action, table=rule.table, status=out.status,
             dry_run=opts.dry_run or opts.simulated, due=out.due, protected=out.protected_total, touch=out.touch,
             cascaded=out.cascaded_total, batches=out.batches, seconds=out.duration_seconds,
             error=out.error)
    return out


#: a batch that meets one of these (a child committed under a row being deleted, a deadlock)
#: is rolled back and tried again, at most this many times in all
BATCH_ATTEMPTS = 3


_NO_MORE = object()


def _enforce(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
             opts: ExecOptions, out: RuleOutcome, limit: int, hooks: BatchHooks) -> None:
    """Run the batches, adding each committed batch's counts to ``out``; touch at most ``limit`` rows.

    A batch the database could not finish as selected (a trigger cancelled a
    delete, a value could not be read) still commits what it did; the rest is
    counted under ``out.not_done`` and the batches move on past it.  ``hooks``
    hear of each batch before it commits and after, and may ask the run to stop.
    """
    size = settings.batch_size
    if _locks_parents(plan) and plan.impl.max_bind_params:
        # a batch's locked keys are bound one parameter per key column
        size = min(size, plan.impl.max_bind_params // len(plan.pk_columns))
    lines = dict(zip(empty_cascades(plan), out.cascades))
    met: dict[str, int] = {}
    try:
        _batches(tx, plan, ctx, opts, out, limit, size, settings, lines, met, hooks)
    finally:
        for reason, n in met.items():
            # the count already found the values it could not read or anonymize (the batches
            # may not reach them all); what the database refused only the batches can see
            known = next((d.rows for d in out.not_done if d.reason == reason), 0)
            if reason in ("unreadable", "refused"):
                n = max(0, n - known)
            out.add_not_done(reason, n, NOT_DONE[reason])


def _batches(tx: Transactions, plan: RulePlan, ctx: TimeContext, opts: ExecOptions, out: RuleOutcome,
             limit: int, size: int, settings: Settings, lines: dict, met: dict,
             hooks: BatchHooks) -> None:
    candidates, exact = _candidates(plan, opts)
    lo = None
    # rows the database refused count against the allowance: the run never does more than it
    # counted, not even by taking rows that became workable meanwhile in their place
    used = lambda: out.touch + met.get("cancelled", 0) + met.get("changed", 0)  # noqa: E731
    while used() < limit and not hooks.stop_requested():
        t0 = time.monotonic()
        allowance = limit - used()
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            cascaded = {key: 0 for key in lines}
            short: dict[str, int] = {}
            try:
                with tx.batch() as conn:
                    # where every candidate row will be touched, the batch itself stops at the allowance
                    hi, selected = _next_bound(conn, plan, candidates, lo,
                                               max(1, min(size, allowance)) if exact else size, counted=True)
                    if hi is None:
                        hi = _NO_MORE
                        break
                    touched = _batch(conn, plan, ctx, opts, _range(plan, lo, hi), cascaded, allowance,
                                     short=short, selected=int(selected) if exact else None)
                    hooks.before_commit(plan, out.batches + 1, lo, hi, touched, cascaded)
                break
            except SQLAlchemyError as e:
                if attempt == BATCH_ATTEMPTS or not plan.impl.retryable(e):
                    raise
                log.warning("batch_retry", rule=plan.rule.name, attempt=attempt, error=describe_error(e))
        if hi is _NO_MORE:
            break
        # committed: only now does the batch count
        out.touch += touched
        out.batches += 1
        for key, n in cascaded.items():
            lines[key].rows += n
        for reason, n in short.items():
            _tally(met, reason, n)
        hooks.committed(plan, out.batches, lo, hi, touched, cascaded)
        lo = hi
        elapsed = time.monotonic() - t0
        # keep each transaction under max_batch_seconds: shrink fast, grow back slowly
        if elapsed > settings.max_batch_seconds and size > 1:
            size = max(1, size // 2)
        elif elapsed < settings.max_batch_seconds / 4 and size < settings.batch_size:
            size = min(settings.batch_size, size + max(1, size // 4))
        log.debug("batch", rule=plan.rule.name, lo=lo, hi=hi, size=size, seconds=round(elapsed, 3))


def statements(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
               opts: ExecOptions, limit: int) -> list[str]:
    """The statements the rule's first batch sends, with their values (``--sql``).

    The batch really runs, through the same code as a run's, inside a
    transaction that is then rolled back; what the database received is what
    is shown.  Values a strategy computed in Python are not shown (they derive
    from the row's personal data); keys, cutoffs and the policy's own values are.
    ``limit`` is what the run would touch (its guard's count), as in a run.
    """
    if not limit:
        return ["-- no row needs this rule now: a run sends no batch"]
    recording = Recording(tx)
    scratch = RuleOutcome(rule=plan.rule.name, action=plan.rule.action, table=plan.rule.table,
                          cascades=list(empty_cascades(plan).values()) if plan.cascade else [])
    try:
        _enforce(recording, plan, settings, ctx, opts, scratch, limit=limit, hooks=BatchHooks())
    except EnoughRecorded:
        pass
    return [show_statement(*sent) for sent in recording.sent]
