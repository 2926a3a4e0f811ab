"""The dry-run numbers: what a rule would do now.

:func:`count_rule` is what ``retention plan`` shows and what ``retention run``
checks its guard against; it shares every predicate with the batches.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.execute.batch import NOT_DONE, _anonymize_python, _not_done, _sql_path
from retention.execute.cascade import Roots, count_cascades
from retention.execute.keys import _count, _range, _ranges
from retention.execute.options import ExecOptions
from retention.plan import RulePlan
from retention.report.model import Guard, Protection, RuleOutcome
from retention.timectx import TimeContext


def count_rule(conn: Connection, plan: RulePlan, ctx: TimeContext, opts: ExecOptions) -> RuleOutcome:
    """What the rule would do now: the dry-run numbers.

    One statement reads the table once for due rows by protector, the oldest
    clock, the forecast and the table's size.  The rows to touch are counted
    apart, with the rule's own ``WHERE`` (which the planner can turn into an
    anti-join, where a per-row CASE would run its subqueries row by row); an
    anonymization done in Python reads its rows, batch by batch.
    """
    rule, t = plan.rule, plan.table.table
    out = RuleOutcome(rule=rule.name, action=rule.action, table=rule.table, basis=rule.basis)
    # attribution: each due row counted once, under its first protector; -2: not due
    cases = [(p.predicate, i) for i, p in enumerate(plan.protectors)]
    bucket = sa.case((plan.due, sa.case(*cases, else_=-1) if cases else -1), else_=-2)
    # a clock Python cannot hold (PostgreSQL's -infinity, a BC date) must not fail the rule:
    # such rows are due and processed like the others, only left out of the oldest clock
    readable = plan.impl.representable(plan.clock, plan.clock_type)
    flag = lambda cond: sa.case((cond, 1), else_=0)  # noqa: E731
    row = {"b": bucket,
           "clock": plan.clock if readable is None else sa.case((readable, plan.clock)),
           "unreadable": sa.literal(0) if readable is None else sa.case((readable, 0), else_=1)}
    row |= {f"later{i}": flag(sa.and_(plan.conditions, plan.clock.is_not(None), cond))
            for i, cond in enumerate(plan.forecast.values())}
    sub = sa.select(*(v.label(k) for k, v in row.items())).select_from(t).subquery()
    # sums per group, each group's own picked below: the planner inlines the subquery, and a
    # condition on the group in an aggregate would run the protectors' subqueries once more per row
    total = lambda name: sa.func.coalesce(sa.func.sum(sub.c[name]), 0)  # noqa: E731
    aggs = [sa.func.count(), sa.func.min(sub.c.clock), total("unreadable")]
    aggs += [total(k) for k in row if k.startswith("later")]
    groups = conn.execute(sa.select(sub.c.b, *aggs).group_by(sub.c.b)).all()
    counts, oldest, table_rows, later = {}, None, 0, [0] * len(plan.forecast)
    for b, n, clock, unreadable, *rest in groups:
        b, table_rows = int(b), table_rows + int(n)
        if b == -2:
            later = [int(x) for x in rest]
            continue
        counts[b] = int(n)
        out.unreadable_clocks += int(unreadable)
        if clock is not None and (oldest is None or clock < oldest):
            oldest = clock
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
    out.oldest_clock = ctx.from_column(plan.clock_type, oldest)
    out.forecast = {w: n for w, n in zip(plan.forecast, later)}
    out.guard = Guard(max_rows=plan.max_rows, max_fraction=plan.max_fraction, table_rows=table_rows)
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
