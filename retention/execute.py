"""Count and execute plans: batches, transactions, guards.

One rule at a time, one transaction per batch.  A batch is a key range of the
rule's table, ``pk > lo AND pk <= hi AND <work>``; ``hi`` is found by the
database (the largest key among the next ``batch_size`` rows that need work),
so Python never holds more than a couple of keys, and never uses OFFSET.

When a delete cascades, the batch first locks and reads the parents' keys
(``FOR UPDATE`` where the engine has it), then deletes or detaches the
children deepest first, then the parents, all in the same transaction:
nothing can slip a new child under a parent between the steps, and a failure
rolls the whole batch back.

The dry-run and the run share every predicate: :func:`count_rule` is what
``retention plan`` shows and what ``retention run`` checks its guard against.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from retention.config import Settings
from retention.errors import RetentionError
from retention.log import Progress, progress
from retention.plan import CascadeStep, RulePlan, Variant
from retention.report.model import Cascade, Guard, Protection, RuleOutcome
from retention.timectx import TimeContext
from retention.transactions import Transactions

log = structlog.get_logger("retention.execute")


@dataclass
class ExecOptions:
    dry_run: bool = True
    allow_large: bool = False
    force_python: bool = False     # anonymize in Python even where SQL could (tests compare both)
    show_sql: bool = False
    batch_size: int = 5000         # dry-run scans (anonymize in Python) read this many rows at a time
    simulated: bool = False        # executes inside a rolled-back transaction: still a dry run


class BatchHooks:
    """What the batch loop tells the run around each batch (:class:`retention.runtime.Run`).

    The defaults do nothing.  ``before_commit`` runs inside the batch's
    transaction after its statements: an exception there rolls the batch
    back, which is how a run that cannot write its audit entry touches
    nothing.  ``committed`` runs once the batch is committed.  The loop asks
    ``stop_requested`` before each batch.  ``cascaded`` maps
    ``(child table, "delete" | "detach:<fk>")`` to rows.
    """

    def stop_requested(self) -> bool:
        return False

    def counted(self, plan: RulePlan, out: RuleOutcome) -> None:
        """The rule is counted and guarded, nothing touched yet: a reviewed plan may refuse or cap it here."""

    def before_commit(self, plan: RulePlan, batch: int, lo, hi, touched: int, cascaded: dict) -> None:
        """The batch's statements ran; it commits when this returns."""

    def committed(self, plan: RulePlan, batch: int, lo, hi, touched: int, cascaded: dict) -> None:
        """The batch is committed."""


# --- counting -----------------------------------------------------------------

def _count(conn: Connection, table: sa.Table, *where) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar() or 0)


def _sql_path(plan: RulePlan, variant: Variant, opts: ExecOptions) -> bool:
    if opts.force_python:
        return False
    col = plan.table.table.c
    return all(s.sql(col[c], plan.impl) is not None and s.done_sql(col[c], plan.impl) is not None
               for c, s in variant.strategies.items())


def _not_done(plan: RulePlan, variant: Variant) -> sa.ColumnElement:
    col = plan.table.table.c
    return sa.not_(sa.and_(sa.true(), *(s.done_sql(col[c], plan.impl) for c, s in variant.strategies.items())))


@dataclass(frozen=True)
class Roots:
    """Where a cascade starts: rows of the rule's table, and their keys once a batch has locked them."""

    where: sa.ColumnElement
    keys: list | None = None


def _children(plan: RulePlan, path: tuple[CascadeStep, ...], roots: Roots) -> tuple[sa.Table, sa.ColumnElement]:
    """The rows of ``path``'s last table that the cascade reaches from ``roots``.

    Deeper levels join the whole path back to the rule's table in one flat
    subquery: nesting one ``IN (SELECT ...)`` per level made SQLite's parser
    overflow on cascades a few levels deep.  With the batch's locked keys and
    a foreign key to the rule table's primary key, the keys are bound
    directly: a subquery there can make PostgreSQL hash-join a full scan of
    the child table on every batch.
    """
    t = plan.table.table
    last = path[-1]
    child = plan_table(plan, last.fk.child)
    if len(path) == 1 and roots.keys is not None and last.fk.parent_column == plan.pk.name:
        return child, child.c[last.fk.column].in_(roots.keys)
    joined, previous = t, t
    for step in path[:-1]:
        table = plan_table(plan, step.fk.child)
        joined = joined.join(table, table.c[step.fk.column] == previous.c[step.fk.parent_column])
        previous = table
    values = sa.select(previous.c[last.fk.parent_column]).select_from(joined).where(roots.where)
    return child, child.c[last.fk.column].in_(values)


def plan_table(plan: RulePlan, key: str) -> sa.Table:
    return plan.table.table.metadata.tables[key.split(".", 1)[1]]


def cascade_key(step: CascadeStep) -> tuple[str, str]:
    """How cascades are reported: deleted rows once per child table, however many paths reach
    them; detached rows once per foreign key, since each detach is its own change."""
    return (step.fk.child, "delete") if step.action == "delete" else (step.fk.child, f"detach:{step.fk.via}")


def _cascade_paths(plan: RulePlan, steps, roots: Roots, found: dict, path: tuple = ()) -> None:
    for step in steps:
        here = path + (step,)
        child, link = _children(plan, here, roots)
        entry = found.setdefault(cascade_key(step), (step, child, [], []))
        entry[2].append(link)
        if step.fk.via not in entry[3]:
            entry[3].append(step.fk.via)
        if step.children:
            _cascade_paths(plan, step.children, roots, found, here)


def empty_cascades(plan: RulePlan) -> dict[tuple[str, str], Cascade]:
    found: dict = {}
    _cascade_paths(plan, plan.cascade, Roots(sa.true()), found)
    return {key: Cascade(table=step.fk.child, action=step.action, via=", ".join(vias), rows=0)
            for key, (step, _child, _links, vias) in found.items()}


def cascade_selections(plan: RulePlan) -> list[tuple[sa.Table, sa.ColumnElement]]:
    """(child table, rows reached) for every line of the rule's cascade, as the dry run counts them."""
    if plan.rule.action != "delete" or not plan.cascade:
        return []
    found: dict = {}
    _cascade_paths(plan, plan.cascade, Roots(plan.work), found)
    return [(child, sa.or_(*links)) for _step, child, links, _vias in found.values()]


def count_cascades(conn: Connection, plan: RulePlan, roots: Roots) -> list[Cascade]:
    """Rows the delete would reach, each counted once per report line (see cascade_key)."""
    found: dict = {}
    _cascade_paths(plan, plan.cascade, roots, found)
    return [Cascade(table=step.fk.child, action=step.action, via=", ".join(vias),
                    rows=_count(conn, child, sa.or_(*links)))
            for step, child, links, vias in found.values()]


def count_rule(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions) -> RuleOutcome:
    """What the rule would do now: the dry-run numbers."""
    rule, t = plan.rule, plan.table.table
    out = RuleOutcome(rule=rule.name, action=rule.action, table=rule.table, basis=rule.basis)
    # attribution: each due row counted once, under its first protector
    cases = [(p.predicate, i) for i, p in enumerate(plan.protectors)]
    bucket = sa.case(*cases, else_=-1) if cases else sa.literal(-1)
    rows = conn.execute(sa.select(bucket.label("b"), sa.func.count()).select_from(t)
                        .where(plan.due).group_by(bucket)).all()
    counts = {int(b): int(n) for b, n in rows}
    out.due = sum(counts.values())
    out.protected = [Protection(p.kind, p.name, counts[i]) for i, p in enumerate(plan.protectors)
                     if counts.get(i)]
    out.touch = count_touch(conn, plan, opts)
    out.unchanged = out.due - out.protected_total - out.touch
    if rule.action == "delete" and plan.cascade:
        out.cascades = count_cascades(conn, plan, Roots(plan.work))
    if rule.action == "anonymize":
        # only floors that actually hold back a column on some row this rule reaches
        out.kept_columns = sorted({c for v in plan.variants if v.kept
                                   and _count(conn, t, plan.work, v.predicate) for c in v.kept})
    oldest = conn.execute(sa.select(sa.func.min(plan.clock)).select_from(t).where(plan.due)).scalar()
    out.oldest_clock = ctx.from_column(plan.clock_type, oldest)
    sums = [sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0) for cond in plan.forecast.values()]
    not_due = sa.case((plan.due, 0), else_=1) == 1      # two-valued even when where_sql yields NULL
    later = conn.execute(sa.select(*sums).select_from(t)
                         .where(plan.conditions, not_due, plan.clock.is_not(None))).one()
    out.forecast = {w: int(n) for w, n in zip(plan.forecast, later)}
    out.guard = Guard(max_rows=plan.max_rows, max_fraction=plan.max_fraction, table_rows=_count(conn, t))
    return out


def count_touch(conn: Connection, plan: RulePlan, opts: ExecOptions) -> int:
    t = plan.table.table
    if plan.rule.action != "anonymize":
        return _count(conn, t, plan.work)
    total = 0
    for variant in plan.variants:
        if _sql_path(plan, variant, opts):
            total += _count(conn, t, plan.work, variant.predicate, _not_done(plan, variant))
        else:
            for lo, hi in _ranges(conn, plan, sa.and_(plan.work, variant.predicate), opts.batch_size):
                total += _anonymize_python(conn, plan, variant, _range(plan, lo, hi), None)
    return total


def _ranges(conn: Connection, plan: RulePlan, pred: sa.ColumnElement, size: int) -> Iterator[tuple]:
    """Key ranges of at most ``size`` rows matching ``pred``, read inside ``conn``'s snapshot."""
    lo = None
    while True:
        hi = _next_bound(conn, plan, pred, lo, size)
        if hi is None:
            return
        yield lo, hi
        lo = hi


def _bound_query(plan: RulePlan, pred: sa.ColumnElement, lo, size) -> sa.Select:
    """The largest key among the next ``size`` rows after ``lo`` that match ``pred``.

    The LIMIT is written as a suffix: SQLAlchemy's SQLite dialect would add
    ``OFFSET 0`` to a ``.limit()``, and the job never uses OFFSET, not even a
    harmless one, so ``--sql`` shows exactly what runs.
    """
    pk = plan.pk
    cond = [pred] if lo is None else [pk > lo, pred]
    limit = sa.text(f"LIMIT {int(size)}") if isinstance(size, int) else sa.text("LIMIT :batch_size")
    sub = sa.select(pk.label("k")).where(*cond).order_by(pk).suffix_with(limit).subquery()
    return sa.select(sa.func.max(sub.c.k))


def _next_bound(conn: Connection, plan: RulePlan, pred: sa.ColumnElement, lo, size: int):
    return conn.execute(_bound_query(plan, pred, lo, size)).scalar()


def _range(plan: RulePlan, lo, hi) -> sa.ColumnElement:
    pk = plan.pk
    return sa.and_(pk <= hi) if lo is None else sa.and_(pk > lo, pk <= hi)


# --- executing ------------------------------------------------------------------

def guard_state(out: RuleOutcome, plan: RulePlan, allow_large: bool) -> None:
    """Trip the guard when the rule would touch more than ``max_rows`` or ``max_fraction``.

    A tripped rule touches nothing, in a dry run as in a run, so both report 0
    touched and ``guard.rows`` says how many it would have touched.
    """
    out.guard.rows = out.touch
    limit_rows = plan.max_rows
    over = limit_rows is not None and out.touch > limit_rows
    if out.guard.table_rows and out.touch > plan.max_fraction * out.guard.table_rows:
        over = True
    if over:
        out.guard.state = "allowed" if allow_large else "tripped"
        if not allow_large:
            out.status = "guard_tripped"
            out.remaining, out.touch = out.touch, 0
            out.cascades = [Cascade(c.table, c.action, c.via, 0) for c in out.cascades]


def execute_rule(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
                 opts: ExecOptions, hooks: BatchHooks | None = None) -> RuleOutcome:
    """Count the rule, check its guard, and (unless dry) enforce it batch by batch."""
    started = time.monotonic()
    rule = plan.rule
    engine = tx.engine
    try:
        with tx.read() as conn:
            out = count_rule(conn, plan, ctx, opts)
        guard_state(out, plan, opts.allow_large)
        if hooks is not None:
            hooks.counted(plan, out)
        if opts.show_sql:
            out.statements = statements(engine, plan, opts)
        if not opts.dry_run and out.status == "ok":
            # from here on the outcome says what was committed, batch by batch, even if a later batch fails
            out.touch, out.batches = 0, 0
            if plan.cascade:
                out.cascades = list(empty_cascades(plan).values())
            # the run does at most what was counted and guarded: rows that become workable
            # meanwhile (a hold released, a row unblocked by this very rule) wait for the next run
            if out.guard.rows:
                with progress(out.guard.rows, plan.rule.name) as bar:
                    _enforce(tx, plan, settings, ctx, opts, out, bar, limit=out.guard.rows,
                             hooks=hooks or BatchHooks())
            out.remaining = out.guard.rows - out.touch
    except (SQLAlchemyError, RetentionError) as e:
        out = locals().get("out") or RuleOutcome(rule=rule.name, action=rule.action, table=rule.table,
                                                 basis=rule.basis)
        out.status, out.error = "failed", describe_error(e)
        # what the run meant to touch and did not (its committed batches are in touch)
        out.remaining = max(0, out.guard.rows - out.touch) if out.guard.rows else \
            max(0, out.due - out.protected_total - out.unchanged - out.touch)
    out.duration_seconds = round(time.monotonic() - started, 3)
    log.info("rule", rule=rule.name, action=rule.action, table=rule.table, status=out.status,
             dry_run=opts.dry_run or opts.simulated, due=out.due, protected=out.protected_total, touch=out.touch,
             cascaded=out.cascaded_total, batches=out.batches, seconds=out.duration_seconds,
             error=out.error)
    return out


class StrategyError(RetentionError):
    """A strategy met a value it cannot handle (not an IP address, a date it cannot read...)."""


def describe_error(e: Exception) -> str:
    """The error's class and first line only: database DETAIL lines can quote row values.

    A strategy's own error may quote the value it choked on, so only its class is shown.
    """
    if isinstance(e, StrategyError):
        return str(e)
    orig = getattr(e, "orig", None) or e
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code and str(code).upper().startswith("P0"):
        # raised by the application's own trigger or function: its text may quote the row
        return f"{type(orig).__name__} [{code}]: raised by a trigger or function in the database (message not shown)"
    first = (str(orig).strip().splitlines() or [""])[0]
    first = first.split("[SQL:")[0].strip()
    # a quoted literal can be a row value (SQLite: "... with text 'José@...'"); so can a
    # double-quoted one in PostgreSQL's data errors (class 22: 'invalid input syntax: "..."')
    first = re.sub(r"'.*'", "'…'", first)
    if code and str(code).startswith("22"):
        first = re.sub(r'".*"', '"…"', first)
    return f"{type(orig).__name__}{f' [{code}]' if code else ''}: {first}"


def _enforce(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
             opts: ExecOptions, out: RuleOutcome, bar: Progress, limit: int, hooks: BatchHooks) -> None:
    """Run the batches, adding each committed batch's counts to ``out``; touch at most ``limit`` rows."""
    size = settings.batch_size
    if _locks_parents(plan) and plan.impl.max_bind_params:
        size = min(size, plan.impl.max_bind_params)
    lines = dict(zip(empty_cascades(plan), out.cascades))
    candidates, exact = _candidates(plan, opts)
    lo = None
    while out.touch < limit and not hooks.stop_requested():
        t0 = time.monotonic()
        cascaded = {key: 0 for key in lines}
        allowance = limit - out.touch
        with tx.batch() as conn:
            # where every candidate row will be touched, the batch itself stops at the allowance
            hi = _next_bound(conn, plan, candidates, lo, max(1, min(size, allowance)) if exact else size)
            if hi is None:
                break
            touched = _batch(conn, plan, ctx, opts, _range(plan, lo, hi), cascaded, allowance)
            hooks.before_commit(plan, out.batches + 1, lo, hi, touched, cascaded)
        # committed: only now does the batch count
        out.touch += touched
        bar.advance(touched)
        out.batches += 1
        for key, n in cascaded.items():
            lines[key].rows += n
        hooks.committed(plan, out.batches, lo, hi, touched, cascaded)
        lo = hi
        elapsed = time.monotonic() - t0
        # keep each transaction under max_batch_seconds: shrink fast, grow back slowly
        if elapsed > settings.max_batch_seconds and size > 1:
            size = max(1, size // 2)
        elif elapsed < settings.max_batch_seconds / 4 and size < settings.batch_size:
            size = min(settings.batch_size, size + max(1, size // 4))
        log.debug("batch", rule=plan.rule.name, lo=lo, hi=hi, size=size, seconds=round(elapsed, 3))


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


def _batch(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions,
           rng: sa.ColumnElement, cascaded: dict, allowance: int | None = None) -> int:
    t = plan.table.table
    action = plan.rule.action
    if action == "delete":
        if not _locks_parents(plan):
            return conn.execute(sa.delete(t).where(rng, plan.work)).rowcount
        keys_q = sa.select(plan.pk).where(rng, plan.work)
        if plan.impl.supports_for_update:
            keys = [k for (k,) in conn.execute(keys_q.with_for_update())]
            # A child committed while FOR UPDATE waited for its parent's lock is not in that
            # statement's snapshot. Now that the parents are locked no new child can arrive:
            # a fresh look (READ COMMITTED) keeps only the parents that are still work.
            if keys:
                keys = [k for (k,) in conn.execute(sa.select(plan.pk).where(plan.pk.in_(keys), plan.work))]
        else:
            keys = [k for (k,) in conn.execute(keys_q)]
        if not keys:
            return 0
        _cascade(conn, plan, plan.cascade, Roots(plan.pk.in_(keys), keys), cascaded)
        return conn.execute(sa.delete(t).where(plan.pk.in_(keys))).rowcount
    if action == "restrict":
        col = plan.rule.restrict_column
        return conn.execute(sa.update(t).where(rng, plan.work)
                            .values({col: ctx.moment_for(t.c[col].type, ctx.now)})).rowcount
    total = 0
    for variant in plan.variants:
        if _sql_path(plan, variant, opts):
            total += _anonymize_sql(conn, plan, variant, rng, ctx)
        else:
            left = None if allowance is None else allowance - total
            total += _anonymize_python(conn, plan, variant, rng, ctx, left)
    return total


def apply_batch(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions,
                rng: sa.ColumnElement, cascaded: dict) -> int:
    """Run one batch of ``plan`` over the rows ``rng`` selects, in the caller's transaction.

    The one statement path for every operation: rules batch by batch, erasure
    requests and replays subject by subject (:mod:`retention.requests.erase`).
    """
    return _batch(conn, plan, ctx, opts, rng, cascaded)


def _locks_parents(plan: RulePlan) -> bool:
    """Deletes that touch other tables' rows, or that children may block, lock their keys first."""
    return bool(plan.cascade) or any(p.kind == "children" for p in plan.protectors)


def _cascade(conn: Connection, plan: RulePlan, steps, roots: Roots, cascaded: dict, path: tuple = ()) -> None:
    """Children deepest first, so no statement ever leaves a dangling reference."""
    for step in steps:
        here = path + (step,)
        if step.children:
            _cascade(conn, plan, step.children, roots, cascaded, here)
        child, link = _children(plan, here, roots)
        key = cascade_key(step)
        if step.action == "delete":
            cascaded[key] += conn.execute(sa.delete(child).where(link)).rowcount
        else:
            cascaded[key] += conn.execute(sa.update(child).where(link).values({step.fk.column: None})).rowcount


def _mark_values(plan: RulePlan, variant: Variant, ctx: TimeContext) -> dict:
    mark = plan.rule.mark
    if mark and variant.mark:
        return {mark: ctx.moment_for(plan.table.table.c[mark].type, ctx.now)}
    return {}


def _anonymize_sql(conn: Connection, plan: RulePlan, variant: Variant, rng, ctx: TimeContext) -> int:
    t = plan.table.table
    values = {}
    for c, s in variant.strategies.items():
        # leave values that are already anonymized as they are (hash is not idempotent)
        values[c] = sa.case((s.done_sql(t.c[c], plan.impl), t.c[c]), else_=s.sql(t.c[c], plan.impl))
    values.update(_mark_values(plan, variant, ctx))
    stmt = sa.update(t).where(rng, plan.work, variant.predicate, _not_done(plan, variant)).values(values)
    return conn.execute(stmt).rowcount


def _anonymize_python(conn: Connection, plan: RulePlan, variant: Variant, rng,
                      ctx: TimeContext | None, allowance: int | None = None) -> int:
    """Read one batch, anonymize in Python, write back the rows that change.

    With ``ctx=None`` it only counts (the dry-run path): the same selection and
    the same ``done`` test decide both.
    """
    t = plan.table.table
    cols = list(variant.strategies)
    q = sa.select(plan.pk, *(t.c[c] for c in cols)).where(rng, plan.work, variant.predicate)
    if ctx is not None and plan.impl.supports_for_update:
        q = q.with_for_update()
    updates = []
    # CHAR(n) comes back blank-padded; the database ignores the padding (length, comparisons),
    # so Python must too, or it masks spaces and never sees a constant as done
    padded = {c for c in cols if isinstance(t.c[c].type, sa.CHAR)}
    for row in conn.execute(q):
        key, values = row[0], tuple(v.rstrip(" ") if c in padded and isinstance(v, str) else v
                                    for c, v in zip(cols, row[1:]))
        try:
            if all(variant.strategies[c].done(v) for c, v in zip(cols, values)):
                continue
            new = {f"v_{c}": (v if variant.strategies[c].done(v) else variant.strategies[c].apply(v))
                   for c, v in zip(cols, values)}
        except (ValueError, TypeError, ArithmeticError) as e:
            # only the class: the message may quote the value
            raise StrategyError(f"{type(e).__name__} while anonymizing in Python "
                                f"(a value in {', '.join(cols)} that a strategy cannot handle; not shown)") from None
        new["k_pk"] = key
        updates.append(new)
    if ctx is None or not updates:
        return len(updates)
    if allowance is not None:
        updates = updates[:max(0, allowance)]     # never more than the run counted and guarded
        if not updates:
            return 0
    values = {c: sa.bindparam(f"v_{c}", type_=t.c[c].type) for c in cols}
    values.update(_mark_values(plan, variant, ctx))
    conn.execute(sa.update(t).where(plan.pk == sa.bindparam("k_pk")).values(values), updates)
    return len(updates)


# --- showing --------------------------------------------------------------------

def statements(engine: Engine, plan: RulePlan, opts: ExecOptions) -> list[str]:
    """The statements one batch of this rule runs, compiled for the engine (``--sql``)."""
    t = plan.table.table
    dialect = engine.dialect
    lo, hi = sa.bindparam("lo"), sa.bindparam("hi")
    rng = sa.and_(plan.pk > lo, plan.pk <= hi)

    def show(stmt) -> str:
        # the batch's locked keys are only known at run time: show where they go
        text = str(stmt.compile(dialect=dialect)).strip()
        return text.replace("(__[POSTCOMPILE_keys])", "(<this batch's locked keys>)") + ";"

    out = [show(_bound_query(plan, plan.work, lo, None))]
    action = plan.rule.action
    if action == "delete" and not _locks_parents(plan):
        out.append(show(sa.delete(t).where(rng, plan.work)))
    elif action == "delete":
        keys = sa.bindparam("keys", expanding=True)
        sel = sa.select(plan.pk).where(rng, plan.work)
        out.append(show(sel.with_for_update() if plan.impl.supports_for_update else sel))
        if plan.impl.supports_for_update:
            out.append(show(sa.select(plan.pk).where(plan.pk.in_(keys), plan.work)))

        roots = Roots(plan.pk.in_(keys), keys)

        def walk(steps, path=()):
            for step in steps:
                here = path + (step,)
                if step.children:
                    walk(step.children, here)
                child, link = _children(plan, here, roots)
                if step.action == "delete":
                    out.append(show(sa.delete(child).where(link)))
                else:
                    out.append(show(sa.update(child).where(link).values({step.fk.column: None})))
        walk(plan.cascade)
        out.append(show(sa.delete(t).where(plan.pk.in_(keys))))
    elif action == "restrict":
        out.append(show(sa.update(t).where(rng, plan.work).values({plan.rule.restrict_column: sa.bindparam("now")})))
    else:
        for variant in plan.variants:
            if _sql_path(plan, variant, opts):
                values = {c: s.sql(t.c[c], plan.impl) for c, s in variant.strategies.items()}
                out.append(show(sa.update(t).where(rng, plan.work, variant.predicate, _not_done(plan, variant))
                                .values(values)))
            else:
                cols = list(variant.strategies)
                out.append(show(sa.select(plan.pk, *(t.c[c] for c in cols)).where(rng, plan.work, variant.predicate)))
                out.append(f"-- then, per changed row, in Python: {', '.join(f'{c} = {s.describe()}' for c, s in variant.strategies.items())}")
                out.append(show(sa.update(t).where(plan.pk == sa.bindparam("pk"))
                                .values({c: sa.bindparam(f"v_{c}") for c in cols})))
    return out
