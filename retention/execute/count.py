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
from retention.timectx import TimeContext


def count_rule(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions) -> RuleOutcome:
    """What the rule would do now: the dry-run numbers.

    One statement reads the table once, with plain per-row expressions: its
    rows, the due rows, their oldest clock and the forecast.  Protected rows
    are then counted per protector, and the rows to touch apart, each with its
    predicate in the ``WHERE`` clause, where the planner can turn a hold's
    subquery into a (anti-)join: inside a per-row CASE it would run once per
    row.  Nothing more is read when nothing is due, or when every due row is
    protected; an anonymization done in Python reads its rows, batch by batch.
    """
    rule, t = plan.rule, plan.table.table
    out = RuleOutcome(rule=rule.name, action=rule.action, table=rule.table, basis=rule.basis)
    table_rows, oldest, later = _scan(conn, plan, out)
    # attribution: each due row counted once, under its first protector
    before: list[sa.ColumnElement] = []
    for p in plan.protectors:
        rows = 0
        if out.due > out.protected_total:       # once every due row is attributed, the rest protect none
            rows = _count(conn, t, plan.due, p.predicate, *([sa.not_(sa.or_(*before))] if before else []))
        if rows:
            out.protected.append(Protection(p.kind, p.name, rows))
        before.append(p.predicate)
    # due and protected by nothing: nothing to touch, reach, or keep a column of
    workable = out.due > out.protected_total
    short: dict[str, int] = {}
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


def _scan(conn: Connection, plan: RulePlan, out: RuleOutcome) -> tuple[int, object, list[int]]:
    """One read of the table: sets ``out.due`` and ``out.unreadable_clocks``; returns
    (the table's rows, the oldest readable clock among due rows, the forecast's rows per window).

    Conditional sums (``sum(CASE ...)``), not ``FILTER``: every engine takes them.
    """
    due = plan.due
    # a clock Python cannot hold (PostgreSQL's -infinity, a BC date) must not fail the rule:
    # such rows are due and processed like the others, only left out of the oldest clock
    readable = plan.impl.representable(plan.clock, plan.clock_type)
    flag = lambda *whens: sa.func.coalesce(sa.func.sum(sa.case(*whens, else_=0)), 0)  # noqa: E731
    # a due row's clock is never NULL: the due rows whose clock is not readable are the due rows
    # less the readable clocks, so the (costly, on SQLite) readability test runs once per due row
    clock = sa.case((due, plan.clock if readable is None else sa.case((readable, plan.clock))))
    aggs = [sa.func.count(), flag((due, 1)), sa.func.min(clock), sa.func.count(clock)]
    # the forecast counts rows not due yet whose clock runs within each window
    aggs += [flag((due, 0), (sa.and_(plan.conditions, plan.clock.is_not(None), cond), 1))
             for cond in plan.forecast.values()]
    table_rows, n_due, oldest, readable_clocks, *later = conn.execute(sa.select(*aggs).select_from(plan.table.table)).one()
    out.due, out.unreadable_clocks = int(n_due), int(n_due) - int(readable_clocks)
    return int(table_rows), oldest, [int(n) for n in later]


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
