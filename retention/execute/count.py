"""The dry-run numbers: what a rule would do now.

:func:`count_rule` is what ``retention plan`` shows and what ``retention run``
checks its guard against; it shares every predicate with the batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.execute.batch import NOT_DONE, _anonymize_python, _not_done, _sql_path
from retention.execute.cascade import Roots, count_cascades, empty_cascades
from retention.execute.keys import _count, _range, _ranges
from retention.execute.options import ExecOptions
from retention.plan import RulePlan
from retention.report.model import Guard, Protection, RuleOutcome
from retention.schema import indexed
from retention.timectx import TimeContext


def count_rule(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions) -> RuleOutcome:
    """What the rule would do now: the dry-run numbers.

    The table is read for its rows, the due rows, their oldest clock and the
    forecast (:func:`_scan`).  Protected rows are then counted per protector,
    and the rows to touch apart, each with its predicate in the ``WHERE``
    clause, where the planner can turn a hold's subquery into a (anti-)join:
    inside a per-row CASE it would run once per row.  Nothing more is read
    when nothing is due, or (but for a delete's rows to touch) when every due
    row is protected; an anonymization done in Python reads its rows, batch by
    batch.

    A delete touches exactly its due rows that no protector protects: its rows
    to touch are counted first, and its last protector's rows are the due rows
    left over, not counted again.
    """
    rule, t = plan.rule, plan.table.table
    out = RuleOutcome(rule=rule.name, action=rule.action, table=rule.table, basis=rule.basis)
    table_rows, oldest, later = _scan(conn, plan, out)
    short: dict[str, int] = {}
    derived = _derives_last(plan)
    if derived and out.due:
        out.touch = count_touch(conn, plan, opts, short)
    # attribution: each due row counted once, under its first protector
    before: list[sa.ColumnElement] = []
    for i, p in enumerate(plan.protectors):
        rows = 0
        if out.due > out.protected_total + (out.touch if derived else 0):
            if derived and i == len(plan.protectors) - 1:
                # every predicate is two-valued, so the due rows no earlier protector took are
                # this one's or clean
                rows = out.due - out.protected_total - out.touch
            else:
                rows = _count(conn, t, plan.due, p.predicate, *([sa.not_(sa.or_(*before))] if before else []))
        if rows:
            out.protected.append(Protection(p.kind, p.name, rows))
        before.append(p.predicate)
    # due and protected by nothing: nothing to touch, reach, or keep a column of
    workable = out.due > out.protected_total
    if not derived:
        out.touch = count_touch(conn, plan, opts, short) if workable else 0
    for reason, n in short.items():
        out.add_not_done(reason, n, NOT_DONE[reason])
    out.remaining = out.not_done_total
    out.unchanged = out.due - out.protected_total - out.touch - out.remaining
    if rule.action == "delete" and plan.cascade:
        out.cascades = (count_cascades(conn, plan, Roots(plan.work)) if workable
                        else list(empty_cascades(plan).values()))
    if rule.action == "anonymize" and workable:
        # only floors that actually hold back a column on some row this rule reaches
        out.kept_columns = sorted({c for v in plan.variants if v.kept
                                   and _exists(conn, t, plan.work, v.predicate) for c in v.kept})
    out.oldest_clock = ctx.from_column(plan.clock_type, oldest)
    out.forecast = {w: n for w, n in zip(plan.forecast, later)}
    out.guard = Guard(max_rows=plan.max_rows, max_fraction=plan.max_fraction, table_rows=table_rows)
    return out


def _derives_last(plan: RulePlan) -> bool:
    """A delete touches its clean rows (see RulePlan.work), due less everything protected: its
    touch is counted first and its last protector's rows follow from the others'."""
    return plan.rule.action == "delete" and bool(plan.protectors)


def _flag(*whens, else_: int = 0) -> sa.ColumnElement:
    """How many rows the first matching WHEN gives 1 (``sum(CASE ...)``, not ``FILTER``: every engine takes it)."""
    return sa.func.coalesce(sa.func.sum(sa.case(*whens, else_=else_)), 0)


def _scan(conn: Connection, plan: RulePlan, out: RuleOutcome) -> tuple[int, object, list[int]]:
    """The table's rows, its due rows and their clocks, the forecast: sets ``out.due`` and
    ``out.unreadable_clocks``; returns (the table's rows, the oldest readable clock among due
    rows, the forecast's rows per window).

    One read of the table, with plain per-row expressions; or, where the engine
    counts a table without reading its rows and the clock has an index of its
    own, narrow statements that read that index: the rows, the due range, its
    oldest readable clock, the forecast's range (:func:`_scan_by_index`).
    """
    if plan.impl.counts_by_index and _clock_indexed(plan):
        return _scan_by_index(conn, plan, out)
    due = plan.due
    # a clock Python cannot hold (PostgreSQL's -infinity, a BC date) must not fail the rule:
    # such rows are due and processed like the others, only left out of the oldest clock
    readable = plan.impl.representable(plan.clock, plan.clock_type)
    # a due row's clock is never NULL: the due rows whose clock is not readable are the due rows
    # less the readable clocks, so the (costly, on SQLite) readability test runs once per due row
    clock = sa.case((due, plan.clock if readable is None else sa.case((readable, plan.clock))))
    aggs = [sa.func.count(), _flag((due, 1)), sa.func.min(clock), sa.func.count(clock)]
    # the forecast counts rows not due yet whose clock runs within each window
    aggs += [_flag((due, 0), (sa.and_(plan.conditions, plan.clock.is_not(None), cond), 1))
             for cond in plan.forecast.values()]
    table_rows, n_due, oldest, readable_clocks, *later = conn.execute(sa.select(*aggs).select_from(plan.table.table)).one()
    out.due, out.unreadable_clocks = int(n_due), int(n_due) - int(readable_clocks)
    return int(table_rows), oldest, [int(n) for n in later]


def _clock_indexed(plan: RulePlan) -> bool:
    """The rule's clock is a column of its table that some index begins with."""
    clock = plan.clock
    return isinstance(clock, sa.Column) and clock.table is plan.table.table and indexed(clock.table, (clock.name,))


def _scan_by_index(conn: Connection, plan: RulePlan, out: RuleOutcome) -> tuple[int, object, list[int]]:
    """:func:`_scan` as statements that each read a range of the clock's index.

    The oldest readable clock is the first in the index's order that is
    readable: the engine stops at it.  The readability test (SQLite parses
    every value) runs on the due rows only, and only to count the unreadable.
    """
    t, clock, due = plan.table.table, plan.clock, plan.due
    table_rows = int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar())
    readable = plan.impl.representable(clock, plan.clock_type)
    if readable is None:
        n_due, oldest = conn.execute(sa.select(sa.func.count(), sa.func.min(clock)).select_from(t).where(due)).one()
        unreadable = 0
    else:
        n_due, unreadable = conn.execute(sa.select(sa.func.count(), _flag((readable, 0), else_=1))
                                         .select_from(t).where(due)).one()
        oldest = None
        if n_due and n_due > unreadable:
            oldest = conn.execute(sa.select(clock).where(due, readable).order_by(clock).limit(1)).scalar()
    out.due, out.unreadable_clocks = int(n_due), int(unreadable or 0)
    later = [0] * len(plan.forecast)
    if plan.forecast:
        # a row not due yet whose clock has started (under the rule's conditions, a started clock
        # is due exactly when it has run) and is within the widest window: one range of the index
        widest = plan.forecast[max(plan.forecast, key=lambda w: int(w[:-1]))]
        row = conn.execute(sa.select(*(_flag((cond, 1)) for cond in plan.forecast.values()))
                           .select_from(t).where(plan.pending, widest, plan.conditions)).one()
        later = [int(n) for n in row]
    return table_rows, oldest, later


def _exists(conn: Connection, table: sa.Table, *where) -> bool:
    return bool(conn.execute(sa.select(sa.exists(sa.select(sa.literal(1)).select_from(table).where(*where)))).scalar())


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
