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
