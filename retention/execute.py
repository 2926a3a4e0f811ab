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
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from retention.config import Settings
from retention.errors import RetentionError
from retention.plan import CascadeStep, RulePlan, Variant
from retention.report.model import Cascade, Guard, Protection, RuleOutcome
from retention.timectx import TimeContext
from retention.transactions import EnoughRecorded, Recording, Transactions, stage

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
    """Rows the SQL path rewrites: some column not done, and every column one SQL handles
    (the others are refused by the Python path as well, and never touched or marked)."""
    col = plan.table.table.c
    handled = [h for c, s in variant.strategies.items() if (h := s.handled_sql(col[c], plan.impl)) is not None]
    return sa.and_(sa.not_(sa.and_(sa.true(), *(s.done_sql(col[c], plan.impl)
                                                  for c, s in variant.strategies.items()))), *handled)


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
    if len(path) == 1 and roots.keys is not None and last.fk.parent_columns == tuple(c.name for c in plan.pk_columns):
        # a multi-column key binds the locked keys as row values: (a, b) IN ((1, 2), ...)
        return child, _keys_in(plan, [child.c[c] for c in last.fk.columns], roots.keys)
    joined, previous = t, t
    for step in path[:-1]:
        table = plan_table(plan, step.fk.child)
        joined = joined.join(table, step.fk.link(table, previous))
        previous = table
    values = sa.select(*(previous.c[c] for c in last.fk.parent_columns)).select_from(joined).where(roots.where)
    return child, last.fk.child_key(child).in_(values)


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
    """Rows the delete would reach, each counted once per report line (see cascade_key).

    A detach reaches only the rows still there when it runs: a child table's
    rows that an earlier delete step of the same cascade removes (another
    foreign key of that table) are not detached, so they are not counted so.
    """
    found: dict = {}
    _cascade_paths(plan, plan.cascade, roots, found)
    deleted: dict[str, list] = {}
    gone_first: dict[tuple, list] = {}
    for step, _child, link in _in_run_order(plan, plan.cascade, roots):
        if step.action == "delete":
            deleted.setdefault(step.fk.child, []).append(link)
        else:
            before = deleted.get(step.fk.child, [])
            # two-valued: a NULL foreign key is not deleted by that step, so the row is detached
            gone_first.setdefault(cascade_key(step), []).append(
                sa.and_(link, sa.case((sa.or_(*before), 0), else_=1) == 1) if before else link)
    return [Cascade(table=step.fk.child, action=step.action, via=", ".join(vias),
                    rows=_count(conn, child, sa.or_(*gone_first.get(key, links))))
            for key, (step, child, links, vias) in found.items()]


def _in_run_order(plan: RulePlan, steps, roots: Roots, path: tuple = ()) -> Iterator[tuple]:
    """(step, child table, rows reached) in the order :func:`_cascade` runs them: children first."""
    for step in steps:
        here = path + (step,)
        if step.children:
            yield from _in_run_order(plan, step.children, roots, here)
        child, link = _children(plan, here, roots)
        yield step, child, link


def count_rule(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions) -> RuleOutcome:
    """What the rule would do now: the dry-run numbers."""
    rule, t = plan.rule, plan.table.table
    out = RuleOutcome(rule=rule.name, action=rule.action, table=rule.table, basis=rule.basis)
    # attribution: each due row counted once, under its first protector
    cases = [(p.predicate, i) for i, p in enumerate(plan.protectors)]
    if cases:
        bucket = sa.case(*cases, else_=-1)
        query = sa.select(bucket.label("b"), sa.func.count()).group_by(bucket)
    else:   # no GROUP BY a constant: MySQL reads GROUP BY -1 as a column position
        query = sa.select(sa.literal(-1), sa.func.count())
    rows = conn.execute(query.select_from(t).where(plan.due)).all()
    counts = {int(b): int(n) for b, n in rows}
    out.due = sum(counts.values())
    out.protected = [Protection(p.kind, p.name, counts[i]) for i, p in enumerate(plan.protectors)
                     if counts.get(i)]
    short: dict[str, int] = {}
    out.touch = count_touch(conn, plan, opts, short)
    for reason, n in short.items():
        out.add_not_done(reason, n, NOT_DONE[reason])
    out.remaining = out.not_done_total
    out.unchanged = out.due - out.protected_total - out.touch - out.remaining
    if rule.action == "delete" and plan.cascade:
        out.cascades = count_cascades(conn, plan, Roots(plan.work))
    if rule.action == "anonymize":
        # only floors that actually hold back a column on some row this rule reaches
        out.kept_columns = sorted({c for v in plan.variants if v.kept
                                   and _count(conn, t, plan.work, v.predicate) for c in v.kept})
    # a clock Python cannot hold (PostgreSQL's -infinity, a BC date) must not fail the rule:
    # such rows are due and processed like the others, only left out of the oldest clock
    readable = plan.impl.representable(plan.clock, plan.clock_type)
    if readable is None:
        oldest = conn.execute(sa.select(sa.func.min(plan.clock)).select_from(t).where(plan.due)).scalar()
    else:
        oldest, out.unreadable_clocks = conn.execute(
            sa.select(sa.func.min(sa.case((readable, plan.clock))),
                      sa.func.coalesce(sa.func.sum(sa.case((readable, 0), else_=1)), 0))
            .select_from(t).where(plan.due)).one()
        out.unreadable_clocks = int(out.unreadable_clocks or 0)
    out.oldest_clock = ctx.from_column(plan.clock_type, oldest)
    sums = [sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0) for cond in plan.forecast.values()]
    not_due = sa.case((plan.due, 0), else_=1) == 1      # two-valued even when where_sql yields NULL
    later = conn.execute(sa.select(*sums).select_from(t)
                         .where(plan.conditions, not_due, plan.clock.is_not(None))).one()
    out.forecast = {w: int(n) for w, n in zip(plan.forecast, later)}
    out.guard = Guard(max_rows=plan.max_rows, max_fraction=plan.max_fraction, table_rows=_count(conn, t))
    return out


def count_touch(conn: Connection, plan: RulePlan, opts: ExecOptions, short: dict | None = None) -> int:
    """Rows the rule would change now; rows it could not (see NOT_DONE) are added to ``short``."""
    t = plan.table.table
    if plan.rule.action != "anonymize":
        return _count(conn, t, plan.work)
    total = 0
    for variant in plan.variants:
        if _sql_path(plan, variant, opts):
            total += _count(conn, t, plan.work, variant.predicate, _not_done(plan, variant))
        else:
            for lo, hi in _ranges(conn, plan, sa.and_(plan.work, variant.predicate), opts.batch_size):
                total += _anonymize_python(conn, plan, variant, _range(plan, lo, hi), None, short=short)
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
    cond = [pred] if lo is None else [pk > _key_value(plan, lo), pred]
    limit = sa.text(f"LIMIT {int(size)}") if isinstance(size, int) else sa.text("LIMIT :batch_size")
    if not plan.composite:
        sub = sa.select(pk.label("k")).where(*cond).order_by(pk).suffix_with(limit).subquery()
        return sa.select(sa.func.max(sub.c.k))
    # a row value has no max(): the next rows in key order, then the last of them
    cols = plan.pk_columns
    sub = sa.select(*cols).where(*cond).order_by(*cols).suffix_with(limit).subquery()
    return sa.select(*sub.c).order_by(*(c.desc() for c in sub.c)).suffix_with(sa.text("LIMIT 1"))


def _next_bound(conn: Connection, plan: RulePlan, pred: sa.ColumnElement, lo, size: int, counted: bool = False):
    """The batch's upper key (a tuple for a composite key), or None when no row is left.

    With ``counted``: (that key, how many rows the batch holds), from the same statement.
    """
    query = _bound_query(plan, pred, lo, size)
    if not plan.composite:
        if counted:
            return tuple(conn.execute(query.add_columns(sa.func.count())).one())
        return conn.execute(query).scalar()
    if counted:
        # the last key of the next rows, and (as a window over them) how many there are
        row = conn.execute(query.add_columns(sa.func.count().over())).first()
        return (None, 0) if row is None else (tuple(row[:-1]), int(row[-1]))
    row = conn.execute(query).first()
    return None if row is None else tuple(row)


def _key_value(plan: RulePlan, key) -> sa.ColumnElement:
    """A key as SQL: bound as it is, or as a row value of bound parameters for a composite key."""
    if not plan.composite or isinstance(key, sa.ClauseElement):
        return key
    return sa.tuple_(*(sa.bindparam(None, v, type_=c.type) for c, v in zip(plan.pk_columns, key)))


def _key_of(plan: RulePlan, row) -> object:
    """A selected row's key: the value, or the tuple of values of a composite key."""
    return tuple(row[:len(plan.pk_columns)]) if plan.composite else row[0]


def _keys_in(plan: RulePlan, columns, keys: list) -> sa.ColumnElement:
    """``columns`` hold one of the batch's locked ``keys`` (tuples for a composite key)."""
    if len(columns) == 1:
        return columns[0].in_(keys)
    if isinstance(keys, sa.ClauseElement):        # --sql shows where the keys go
        return sa.tuple_(*columns).in_(keys)
    # the engine may have a better form than a long list of row values (PostgreSQL's parser
    # recurses once per row and overflows its stack on a batch of thousands)
    return plan.impl.row_values_in(list(columns), keys)


def _range(plan: RulePlan, lo, hi) -> sa.ColumnElement:
    pk = plan.pk
    hi = _key_value(plan, hi)
    return sa.and_(pk <= hi) if lo is None else sa.and_(pk > _key_value(plan, lo), pk <= hi)


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
        guard_state(out, plan, opts.allow_large)
        if hooks is not None:
            hooks.counted(plan, out)
        if opts.show_sql:
            out.statements = statements(tx, plan, settings, ctx, opts, limit=out.guard.rows)
        if not opts.dry_run and out.status in ("ok", "incomplete"):
            # from here on the outcome says what was committed, batch by batch, even if a later batch fails
            out.touch, out.batches = 0, 0
            if plan.cascade:
                out.cascades = list(empty_cascades(plan).values())
            # the run does at most what was counted and guarded: rows that become workable
            # meanwhile (a hold released, a row unblocked by this very rule) wait for the next run
            if out.guard.rows:
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


class StrategyError(RetentionError):
    """A strategy met a value it cannot handle (not an IP address, a date it cannot read...)."""


def describe_error(e: Exception) -> str:
    """The error's class, SQLSTATE and, when the database itself wrote it, its first line.

    Row values must never reach a report or a log, and database errors can
    carry them in three ways, each closed here:

    * ``DETAIL`` and ``CONTEXT`` lines (``Failing row contains (...)``, the
      statement a trigger ran): only the first line is ever used;
    * the application's own code (a trigger, a function, ``RAISE``/``SIGNAL``)
      can write any message under any SQLSTATE (``USING ERRCODE = '23514'``):
      such errors, recognised by the call stack the database reports with them
      (PostgreSQL's ``CONTEXT``, SQLite's trigger constraint code, MySQL's
      signal error numbers), show no text at all;
    * the database's own messages about data (SQLSTATE class 22: ``invalid
      input syntax for type integer: "..."``) quote the value: only the text
      before the quote is kept, and quoted literals are elided everywhere.

    A strategy's own error may quote the value it choked on, so only its class is shown.
    """
    if isinstance(e, StrategyError):
        return str(e)
    orig = getattr(e, "orig", None) or e
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    label = f"{type(orig).__name__}{f' [{code}]' if code else ''}"
    if _raised_by_application_code(orig, code):
        return f"{label}: raised by a trigger or function in the database (message not shown: it may quote row values)"
    args = getattr(orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = args[1]      # PyMySQL: (error number, message); its str() quotes the whole message
    else:
        text = str(orig)
    first = (text.strip().splitlines() or [""])[0]
    first = first.split("[SQL:")[0].strip()
    # a quoted literal can be a row value (SQLite: "... with text 'José@...'"); so can a
    # double-quoted one in PostgreSQL's data errors (class 22: 'invalid input syntax: "..."')
    first = re.sub(r"'.*'", "'…'", first)
    if code and str(code).startswith("22"):
        first = re.sub(r'".*"', '"…"', first).split(": ", 1)[0]
    return f"{label}: {first}"


#: MySQL/MariaDB error numbers of SIGNAL/RESIGNAL: a message the application wrote
_SIGNAL_ERRNOS = frozenset({1642, 1643, 1644})


def _raised_by_application_code(orig: BaseException, code) -> bool:
    """Whether the error was raised by code the application wrote, whose message may say anything."""
    if code and str(code).upper().startswith("P0"):       # PL/pgSQL RAISE's own class
        return True
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "context", None):
        # PostgreSQL reports a call stack (a trigger, a function, a DO block) with every error
        # raised inside one, whatever SQLSTATE it chose; its own statement-level errors have none
        return True
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_CONSTRAINT_TRIGGER":   # RAISE(ABORT, ...)
        return True
    args = getattr(orig, "args", ())
    return bool(args) and isinstance(args[0], int) and args[0] in _SIGNAL_ERRNOS


#: a batch that meets one of these (a child committed under a row being deleted, a deadlock)
#: is rolled back and tried again, at most this many times in all
BATCH_ATTEMPTS = 3

#: why rows were not done (RuleOutcome.not_done), in the report's words
NOT_DONE = {
    "cancelled": "a trigger or rule in the database kept the delete or update from happening; "
                 "the rows are still there",
    "changed": "the database changed fewer rows than the batch selected and they no longer match the rule "
               "(changed by a trigger, a rule or the application meanwhile)",
    "unreadable": "a stored value the job cannot read (not shown)",
    "refused": "a value the strategy cannot handle (not shown)",
}

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
           rng: sa.ColumnElement, cascaded: dict, allowance: int | None = None,
           short: dict | None = None, selected: int | None = None) -> int:
    """One batch's statements on ``conn``; returns the rows of the rule's table it changed.

    ``selected`` is how many rows the batch's bound query found to work on (when
    every one of them is to be changed): a statement that changes fewer makes
    the batch look again and count the difference in ``short`` (see NOT_DONE).
    """
    short = {} if short is None else short
    t = plan.table.table
    action = plan.rule.action
    if action == "delete":
        if not _locks_parents(plan):
            n = conn.execute(sa.delete(t).where(rng, plan.work)).rowcount
            return _look_again(conn, plan, rng, plan.work, selected, n, short)
        keys = _locked_keys(conn, plan, rng)
        if not keys:
            return 0
        return _delete_locked(conn, plan, keys, cascaded, short)
    if action == "restrict":
        col = plan.rule.restrict_column
        rows = _writable(conn, plan, rng, plan.work)
        if rows is None:
            return 0
        n = conn.execute(sa.update(t).where(rows)
                         .values({col: ctx.moment_for(t.c[col].type, ctx.now)})).rowcount
        return _look_again(conn, plan, rng, plan.work, selected, n, short)
    total = 0
    for variant in plan.variants:
        if _sql_path(plan, variant, opts):
            total += _anonymize_sql(conn, plan, variant, rng, ctx)
        else:
            left = None if allowance is None else allowance - total
            total += _anonymize_python(conn, plan, variant, rng, ctx, left, short=short)
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


def _locked_keys(conn: Connection, plan: RulePlan, rng) -> list:
    """The batch's keys, locked with every row the cascade reaches, then checked again.

    Top-down: the rule table's rows, then each cascade level's.  A row inserted
    under a locked row must wait for its foreign-key check (FOR KEY SHARE), so
    once every level is locked nothing new can arrive anywhere in the cascade,
    and the re-check (a fresh snapshot under READ COMMITTED) sees everything
    committed before: the protection it confirms holds until the batch's last
    statement.
    """
    keys_q = sa.select(*plan.pk_columns).where(rng, plan.work)
    if not plan.impl.supports_for_update:
        # SQLite: the batch holds the database's write lock from its first statement
        keys = [_key_of(plan, r) for r in conn.execute(keys_q)]
        stage("batch.checked", conn, plan=plan, keys=keys)
        return keys
    keys = [_key_of(plan, r) for r in conn.execute(keys_q.with_for_update())]
    if keys:
        locked = _keys_in(plan, plan.pk_columns, keys)
        _lock_cascade(conn, plan, plan.cascade, Roots(locked, keys))
        keys = [_key_of(plan, r) for r in conn.execute(sa.select(*plan.pk_columns).where(locked, plan.work))]
    stage("batch.checked", conn, plan=plan, keys=keys)
    return keys


def _lock_cascade(conn: Connection, plan: RulePlan, steps, roots: Roots, path: tuple = ()) -> None:
    """Lock the rows of each cascade level, parents before their children."""
    for step in steps:
        here = path + (step,)
        child, link = _children(plan, here, roots)
        rows = sa.select(sa.literal(1)).select_from(child).where(link).with_for_update().subquery()
        conn.execute(sa.select(sa.func.count()).select_from(rows)).scalar()
        if step.children:
            _lock_cascade(conn, plan, step.children, roots, here)


def _delete_locked(conn: Connection, plan: RulePlan, keys: list, cascaded: dict, short: dict) -> int:
    """Delete locked parents after their children, deepest first.

    When the database keeps some parents (a trigger or rule cancels their
    delete), the batch undoes its cascade to a savepoint and does it again
    without them: their children stay, nothing is left half done.
    """
    t = plan.table.table
    for attempt in (1, 2):
        counts = {key: 0 for key in cascaded}
        with (conn.begin_nested() if plan.cascade else nullcontext()) as savepoint:
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
                rng: sa.ColumnElement, cascaded: dict) -> int:
    """Run one batch of ``plan`` over the rows ``rng`` selects, in the caller's transaction.

    The one statement path for every operation: rules batch by batch, erasure
    requests and replays subject by subject (:mod:`retention.requests.erase`).
    """
    return _batch(conn, plan, ctx, opts, rng, cascaded)


def _locks_parents(plan: RulePlan) -> bool:
    """Deletes that touch other tables' rows, or that children may block, lock their keys first;
    so do all deletes where a DELETE may not read its own table (see _writable)."""
    return (bool(plan.cascade) or any(p.kind == "children" for p in plan.protectors)
            or not plan.impl.writes_may_read_their_table)


def _writable(conn: Connection, plan: RulePlan, *where) -> sa.ColumnElement | None:
    """The rows an UPDATE of the batch writes: ``where`` itself, or, where the engine
    forbids an UPDATE to read its own table in a subquery (MySQL), the keys matching
    ``where``, read and locked first (None: no row)."""
    if plan.impl.writes_may_read_their_table:
        return sa.and_(*where)
    keys = [_key_of(plan, r) for r in conn.execute(sa.select(*plan.pk_columns).where(*where).with_for_update())]
    return _keys_in(plan, plan.pk_columns, keys) if keys else None


def _cascade(conn: Connection, plan: RulePlan, steps, roots: Roots, cascaded: dict, path: tuple = ()) -> None:
    """Children deepest first, so no statement ever leaves a dangling reference."""
    for step in steps:
        here = path + (step,)
        if step.children:
            _cascade(conn, plan, step.children, roots, cascaded, here)
        child, link = _children(plan, here, roots)
        key = cascade_key(step)
        stage("batch.step", conn, plan=plan, table=step.fk.child, action=step.action)
        # by the foreign key's values where the engine may not read the table it writes (MySQL)
        for rows in plan.impl.write_sets(conn, child, link, [child.c[c] for c in step.fk.columns]):
            if step.action == "delete":
                cascaded[key] += conn.execute(sa.delete(child).where(rows)).rowcount
            else:
                cascaded[key] += conn.execute(sa.update(child).where(rows)
                                              .values({c: None for c in step.fk.columns})).rowcount


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
    rows = _writable(conn, plan, rng, plan.work, variant.predicate, _not_done(plan, variant))
    if rows is None:
        return 0
    return conn.execute(sa.update(t).where(rows).values(values)).rowcount


def _anonymize_python(conn: Connection, plan: RulePlan, variant: Variant, rng,
                      ctx: TimeContext | None, allowance: int | None = None, short: dict | None = None) -> int:
    """Read one batch, anonymize in Python, write back the rows that change.

    With ``ctx=None`` it only counts (the dry-run path): the same selection and
    the same ``done`` test decide both.  A row whose stored value cannot be read
    or that a strategy cannot handle is skipped and counted in ``short``
    (``unreadable``, ``refused``), never shown: the rest of the batch goes on.
    """
    short = {} if short is None else short
    t = plan.table.table
    cols = list(variant.strategies)
    q = sa.select(*plan.pk_columns, *(t.c[c] for c in cols)).where(rng, plan.work, variant.predicate)
    if ctx is not None and plan.impl.supports_for_update:
        q = q.with_for_update()
    updates = []
    # CHAR(n) comes back blank-padded; the database ignores the padding (length, comparisons),
    # so Python must too, or it masks spaces and never sees a constant as done
    padded = {c for c in cols if isinstance(t.c[c].type, sa.CHAR)}
    n = len(plan.pk_columns)
    for row in _readable_rows(conn, plan, q, short):
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


# --- showing --------------------------------------------------------------------

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


def show_statement(statement: str, parameters, executemany: bool, names: tuple | None = None) -> str:
    """One statement as sent, with its values; values computed from row data are not shown.

    ``names`` are the parameters' names in order where the driver takes them by
    position (SQLite), so computed values are recognised there too.
    """
    text = statement.strip().rstrip(";") + ";"
    rows = list(parameters) if executemany else [parameters]
    if not rows or rows == [None] or rows == [()] or rows == [{}]:
        return text
    first = rows[0]
    if names is not None and not isinstance(first, dict) and len(names) == len(first):
        first = dict(zip(names, first))
    if isinstance(first, dict):
        values = ", ".join(f"{k} = {'<computed from the row>' if k.startswith('v_') else _value(v)}"
                           for k, v in first.items())
    else:
        values = ", ".join(_value(v) for v in first)
    many = f" (and {len(rows) - 1} more rows like it)" if len(rows) > 1 else ""
    return f"{text}\n-- values: {values}{many}"


def _value(v) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return "x'" + bytes(v).hex() + "'"
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, str):
        return repr(v)
    return str(v)
