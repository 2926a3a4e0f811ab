"""One batch's statements, in the caller's transaction.

When a delete cascades, the batch first locks and reads the parents' keys
(``FOR UPDATE`` where the engine has it), then deletes or detaches the
children deepest first, then the parents, all in the same transaction:
nothing can slip a new child under a parent between the steps, and a failure
rolls the whole batch back.
"""

from __future__ import annotations

from contextlib import nullcontext

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.execute.cascade import Roots, _cascade, _lock_cascade
from retention.execute.keys import _count, _key_of, _keys_in
from retention.execute.options import ExecOptions
from retention.plan import RulePlan, Variant
from retention.timectx import TimeContext
from retention.transactions import stage


#: why rows were not done (RuleOutcome.not_done), in the report's words
NOT_DONE = {
    "cancelled": "a trigger or rule in the database kept the delete or update from happening; "
                 "the rows are still there",
    "changed": "the database changed fewer rows than the batch selected and they no longer match the rule "
               "(changed by a trigger, a rule or the application meanwhile)",
    "unreadable": "a stored value the job cannot read (not shown)",
    "refused": "a value the strategy cannot handle (not shown)",
}


def _sql_path(plan: RulePlan, variant: Variant, opts: ExecOptions) -> bool:
    if opts.force_python:
        return False
    col = plan.table.table.c
    return all(s.sql(col[c], plan.impl) is not None and s.done_sql(col[c], plan.impl) is not None
               for c, s in variant.strategies.items())


def _not_done(plan: RulePlan, variant: Variant) -> sa.ColumnElement:
    """Rows the SQL path rewrites: some column not done, and every column one SQL handles
    (the others are refused by the Python path as well, and never touched or marked)."""
    col = plan.table.table.c
    handled = [h for c, s in variant.strategies.items() if (h := s.handled_sql(col[c], plan.impl)) is not None]
    return sa.and_(sa.not_(sa.and_(sa.true(), *(s.done_sql(col[c], plan.impl)
                                                  for c, s in variant.strategies.items()))), *handled)


def _candidates(plan: RulePlan, opts: ExecOptions) -> tuple[sa.ColumnElement, bool]:
    """The rows batches walk over, and whether each of them will be touched.

    Deletes and restricts touch every ``work`` row.  Anonymize rows may
    already be done; where SQL can tell (every variant on the SQL path), done
    rows are left out so batches never rescan them.
    """
    if plan.rule.action != "anonymize":
        return plan.work, True
    if all(_sql_path(plan, v, opts) for v in plan.variants):
        todo = sa.or_(*(sa.and_(v.predicate, _not_done(plan, v)) for v in plan.variants))
        return sa.and_(plan.work, todo), True
    return plan.work, False


class RangeTooLarge(Exception):
    """A computed range holds more rows than one batch may take: roll the batch back."""


def _capped(plan: RulePlan, q: sa.Select, cap: int | None) -> sa.Select:
    """``q`` reading at most ``cap + 1`` rows, in key order (more than ``cap``: the range is too large).

    A computed range's rows are known only once read; a range after sparse keys
    can reach into dense ones, and a batch must not read, lock and bind them all
    before it finds out.  SQLite gets the LIMIT as a suffix (no OFFSET, see
    :func:`retention.execute.keys._bound_query`); it has no FOR UPDATE to follow it.
    """
    if cap is None:
        return q
    q = q.order_by(*plan.pk_columns)
    if plan.impl.supports_for_update:
        return q.limit(cap + 1)
    return q.suffix_with(sa.text(f"LIMIT {int(cap) + 1}"))


def _within_cap(rows: list, cap: int | None) -> list:
    if cap is not None and len(rows) > cap:
        raise RangeTooLarge()
    return rows


def _batch(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions,
           rng: sa.ColumnElement, cascaded: dict, allowance: int | None = None,
           short: dict | None = None, selected: int | None = None, cap: int | None = None) -> int:
    """One batch's statements on ``conn``; returns the rows of the rule's table it changed.

    ``selected`` is how many rows the batch's bound query found to work on (when
    every one of them is to be changed): a statement that changes fewer makes
    the batch look again and count the difference in ``short`` (see NOT_DONE).
    ``cap``: the range was computed, not counted; a statement that must first
    read its rows reads at most ``cap`` of them, else raises :class:`RangeTooLarge`.
    """
    short = {} if short is None else short
    t = plan.table.table
    action = plan.rule.action
    if action == "delete":
        if not _locks_parents(plan):
            n = conn.execute(sa.delete(t).where(rng, plan.work)).rowcount
            return _look_again(conn, plan, rng, plan.work, selected, n, short)
        keys = _locked_keys(conn, plan, rng, cap)
        if not keys:
            return 0
        return _delete_locked(conn, plan, keys, cascaded, short)
    if action == "restrict":
        col = plan.rule.restrict_column
        rows = _writable(conn, plan, (rng, plan.work), cap)
        if rows is None:
            return 0
        n = conn.execute(sa.update(t).where(rows)
                         .values({col: ctx.moment_for(t.c[col].type, ctx.now)})).rowcount
        return _look_again(conn, plan, rng, plan.work, selected, n, short)
    total = 0
    for variant in plan.variants:
        if _sql_path(plan, variant, opts):
            total += _anonymize_sql(conn, plan, variant, rng, ctx, cap)
        else:
            left = None if allowance is None else allowance - total
            total += _anonymize_python(conn, plan, variant, rng, ctx, left, short=short, cap=cap)
    candidates, exact = _candidates(plan, opts)
    return _look_again(conn, plan, rng, candidates, selected, total, short) if exact else total


def _look_again(conn: Connection, plan: RulePlan, rng, pred, selected: int | None, done: int,
                short: dict) -> int:
    """After a statement changed fewer rows than the batch selected, tell why.

    The common path costs nothing: only a shortfall reads again.  Rows of the
    range that still match are what the database refused to change (a BEFORE
    trigger returning NULL, ``RAISE(IGNORE)``, a ``DO INSTEAD`` rule); the rest
    no longer match, changed by a trigger, a rule or the application.
    """
    if selected is None or done >= selected:
        return done
    still = min(selected - done, _count(conn, plan.table.table, rng, pred))
    _tally(short, "cancelled", still)
    _tally(short, "changed", selected - done - still)
    return done


def _tally(short: dict, reason: str, n: int) -> None:
    if n > 0:
        short[reason] = short.get(reason, 0) + n


def _locked_keys(conn: Connection, plan: RulePlan, rng, cap: int | None = None) -> list:
    """The batch's keys, locked with every row the cascade reaches, then checked again.

    Top-down: the rule table's rows, then each cascade level's (but a last
    level the plan does not read, which its own statement locks: see
    :func:`retention.execute.cascade._lock_cascade`).  A row inserted under a
    locked row must wait for its foreign-key check (FOR KEY SHARE), so once
    the levels are locked nothing new can arrive anywhere in the cascade, and
    the re-check (a fresh snapshot under READ COMMITTED) sees everything
    committed before: the protection it confirms holds until the batch's last
    statement.  The re-check stays even when the protectors read no level of
    the cascade: the first SELECT's subqueries (a hold register's EXISTS) read
    the snapshot its statement began with, not what was committed while it
    waited for a row's lock, and a transaction that placed a hold and then
    changed that row is only seen by a statement begun after the lock.
    """
    keys_q = _capped(plan, sa.select(*plan.pk_columns).where(rng, plan.work), cap)
    if not plan.impl.supports_for_update:
        # SQLite: the batch holds the database's write lock from its first statement
        keys = _within_cap(_read_keys(plan, conn.execute(keys_q)), cap)
        stage("batch.checked", conn, plan=plan, keys=keys)
        return keys
    keys = _within_cap(_read_keys(plan, conn.execute(keys_q.with_for_update())), cap)
    if keys:
        locked = _keys_in(plan, plan.pk_columns, keys)
        _lock_cascade(conn, plan, plan.cascade, Roots(locked, keys))
        keys = _read_keys(plan, conn.execute(sa.select(*plan.pk_columns).where(locked, plan.work)))
    stage("batch.checked", conn, plan=plan, keys=keys)
    return keys


def _read_keys(plan: RulePlan, result) -> list:
    """The keys a SELECT of the key columns returned, in its order (tuples for a composite key):
    a batch reads thousands, and asking the plan about its key once per row cost more than the reading."""
    if plan.composite:
        return [tuple(r) for r in result]
    return list(result.scalars())


def _delete_locked(conn: Connection, plan: RulePlan, keys: list, cascaded: dict, short: dict) -> int:
    """Delete locked parents after their children, deepest first.

    When the database keeps some parents (a trigger or rule cancels their
    delete), the batch undoes its cascade to a savepoint and does it again
    without them: their children stay, nothing is left half done.  Where no
    trigger can cancel a delete (MySQL, MariaDB) there is no savepoint: a
    deadlock there ends the whole transaction, savepoints included, and must
    reach the retry as itself, not as a savepoint that no longer exists.
    """
    t = plan.table.table
    undoable = bool(plan.cascade) and plan.impl.cancels_row_writes
    for attempt in (1, 2):
        counts = {key: 0 for key in cascaded}
        with (conn.begin_nested() if undoable else nullcontext()) as savepoint:
            locked = _keys_in(plan, plan.pk_columns, keys)
            _cascade(conn, plan, plan.cascade, Roots(locked, keys), counts)
            n = conn.execute(sa.delete(t).where(locked)).rowcount
            kept = set()
            if n < len(keys):
                kept = {_key_of(plan, r) for r in conn.execute(sa.select(*plan.pk_columns).where(locked))}
            if kept and savepoint is not None and attempt == 1:
                savepoint.rollback()
                _tally(short, "cancelled", len(kept))
                keys = [k for k in keys if k not in kept]
                if not keys:
                    return 0
                continue
        for key, v in counts.items():
            cascaded[key] += v
        _tally(short, "cancelled", len(kept))
        # rows that are gone are gone, whatever the statement's count said (a rule may report 0)
        return len(keys) - len(kept)
    raise AssertionError("unreachable")


def apply_batch(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions,
                rng: sa.ColumnElement, cascaded: dict, short: dict | None = None) -> int:
    """Run one batch of ``plan`` over the rows ``rng`` selects, in the caller's transaction.

    The one statement path for every operation: rules batch by batch, erasure
    requests and replays subject by subject (:mod:`retention.requests.erase`).
    With ``short`` given, rows the batch selected and the database did not
    change (a trigger cancelled them, a value could not be handled) are
    counted there by reason (see NOT_DONE).
    """
    selected = None
    if short is not None:
        candidates, exact = _candidates(plan, opts)
        if exact:
            selected = _count(conn, plan.table.table, rng, candidates)
    return _batch(conn, plan, ctx, opts, rng, cascaded, short=short, selected=selected)


def _locks_parents(plan: RulePlan) -> bool:
    """Deletes that touch other tables' rows, or that children may block, lock their keys first;
    so do all deletes where a DELETE may not read its own table (see _writable)."""
    return (bool(plan.cascade) or any(p.kind == "children" for p in plan.protectors)
            or not plan.impl.writes_may_read_their_table)


def _writable(conn: Connection, plan: RulePlan, where: tuple, cap: int | None = None) -> sa.ColumnElement | None:
    """The rows an UPDATE of the batch writes: ``where`` itself, or, where the engine
    forbids an UPDATE to read its own table in a subquery (MySQL), the keys matching
    ``where``, read and locked first (None: no row; at most ``cap``, see :func:`_batch`)."""
    if plan.impl.writes_may_read_their_table:
        return sa.and_(*where)
    q = _capped(plan, sa.select(*plan.pk_columns).where(*where), cap).with_for_update()
    keys = _within_cap(_read_keys(plan, conn.execute(q)), cap)
    return _keys_in(plan, plan.pk_columns, keys) if keys else None


def _mark_values(plan: RulePlan, variant: Variant, ctx: TimeContext) -> dict:
    mark = plan.rule.mark
    if mark and variant.mark:
        return {mark: ctx.moment_for(plan.table.table.c[mark].type, ctx.now)}
    return {}


def _anonymize_sql(conn: Connection, plan: RulePlan, variant: Variant, rng, ctx: TimeContext,
                   cap: int | None = None) -> int:
    t = plan.table.table
    values = {}
    for c, s in variant.strategies.items():
        # leave values that are already anonymized as they are (hash is not idempotent); an
        # idempotent strategy gives them back unchanged, and is spared the test on every row
        values[c] = s.sql(t.c[c], plan.impl) if s.idempotent else \
            sa.case((s.done_sql(t.c[c], plan.impl), t.c[c]), else_=s.sql(t.c[c], plan.impl))
    values.update(_mark_values(plan, variant, ctx))
    rows = _writable(conn, plan, (rng, plan.work, variant.predicate, _not_done(plan, variant)), cap)
    if rows is None:
        return 0
    return conn.execute(sa.update(t).where(rows).values(values)).rowcount


def _anonymize_python(conn: Connection, plan: RulePlan, variant: Variant, rng,
                      ctx: TimeContext | None, allowance: int | None = None, short: dict | None = None,
                      cap: int | None = None) -> int:
    """Read one batch, anonymize in Python, write back the rows that change.

    With ``ctx=None`` it only counts (the dry-run path): the same selection and
    the same ``done`` test decide both.  A row whose stored value cannot be read
    or that a strategy cannot handle is skipped and counted in ``short``
    (``unreadable``, ``refused``), never shown: the rest of the batch goes on.
    """
    short = {} if short is None else short
    t = plan.table.table
    cols = list(variant.strategies)
    q = _capped(plan, sa.select(*plan.pk_columns, *(t.c[c] for c in cols)).where(rng, plan.work, variant.predicate),
                cap)
    if ctx is not None and plan.impl.supports_for_update:
        q = q.with_for_update()
    updates = []
    # CHAR(n) comes back blank-padded; the database ignores the padding (length, comparisons),
    # so Python must too, or it masks spaces and never sees a constant as done
    padded = {c for c in cols if isinstance(t.c[c].type, sa.CHAR)}
    n = len(plan.pk_columns)
    for row in _within_cap(_readable_rows(conn, plan, q, short), cap):
        key, values = _key_of(plan, row), tuple(v.rstrip(" ") if c in padded and isinstance(v, str) else v
                                                for c, v in zip(cols, row[n:]))
        try:
            if all(variant.strategies[c].done(v) for c, v in zip(cols, values)):
                continue
            new = {f"v_{c}": (v if variant.strategies[c].done(v) else variant.strategies[c].apply(v))
                   for c, v in zip(cols, values)}
        except (ValueError, TypeError, ArithmeticError):
            # the message may quote the value: count the row, show nothing of it
            _tally(short, "refused", 1)
            continue
        new.update({f"k_pk{i}": v for i, v in enumerate(key if plan.composite else (key,))})
        updates.append(new)
    if ctx is None or not updates:
        return len(updates)
    if allowance is not None:
        updates = updates[:max(0, allowance)]     # never more than the run counted and guarded
        if not updates:
            return 0
    values = {c: sa.bindparam(f"v_{c}", type_=t.c[c].type) for c in cols}
    values.update(_mark_values(plan, variant, ctx))
    same_key = [c == sa.bindparam(f"k_pk{i}") for i, c in enumerate(plan.pk_columns)]
    n = conn.execute(sa.update(t).where(*same_key).values(values), updates).rowcount
    # the rows are locked (or the database is): a shortfall is the database refusing the update
    _tally(short, "cancelled", len(updates) - n)
    return n


def _readable_rows(conn: Connection, plan: RulePlan, q: sa.Select, short: dict) -> list:
    """The rows of ``q``; when one cannot be read (a value the driver or the column type
    cannot convert), read them one by one and count the unreadable ones in ``short``."""
    try:
        return conn.execute(q).all()
    except (ValueError, TypeError, ArithmeticError, OverflowError, sa.exc.DataError):
        pass
    keys = [_key_of(plan, r) for r in conn.execute(q.with_only_columns(*plan.pk_columns))]
    rows = []
    for key in keys:
        try:
            rows += conn.execute(q.where(_keys_in(plan, plan.pk_columns, [key]))).all()
        except (ValueError, TypeError, ArithmeticError, OverflowError, sa.exc.DataError):
            _tally(short, "unreadable", 1)
    return rows
