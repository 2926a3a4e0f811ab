"""Whole partitions: the fastest delete is no delete.

With ``[tables."db.t"] partitions = "drop"`` (or ``"detach"``), a delete rule
on a partitioned table first takes whole partitions, and the batches then
delete the rows left, row by row.  A partition is taken only when

* its bound proves that every row it could ever hold is past the cutoff: a
  range partition whose key starts with the rule's clock column (a column of
  the table itself) and whose upper bound is at or before the cutoff.  A
  partition that may still receive rows that are not due (the current
  month's, a list, hash or default partition, a range over another column) is
  never taken, empty or not: dropping it would make the application's
  inserts fail, or take rows before their time;
* every row it holds is due and protected by nothing (the rule's ``work``:
  holds, floors, blocking children, ``where`` and ``where_sql``), and no row
  of another table references one of its rows (those rows go through the
  batches, which delete or detach their children first).

Each partition is taken in a short transaction of its own: lock the
partition against writes, count again under the lock (a row inserted or a hold
placed since means: leave the partition to the batches), detach, and drop it
for ``"drop"`` (``"detach"`` leaves it as a table of its own, for an archive
step).  The statements are transactional, so a failure anywhere leaves the
partition attached with every row; its rows then go through the batches.
"""

from __future__ import annotations

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from retention.dialects.base import Partition
from retention.execute.cascade import plan_table
from retention.execute.errors import describe_error
from retention.execute.options import BatchHooks, ExecOptions
from retention.plan import RulePlan
from retention.report.model import PartitionOutcome, RuleOutcome
from retention.timectx import Beyond, TimeContext
from retention.transactions import Transactions, stage

log = structlog.get_logger("retention.execute")


class _Changed(Exception):
    """The partition's rows changed between the count and the lock: leave it to the batches."""


def applies(plan: RulePlan) -> bool:
    """Whether the rule may take whole partitions (a delete, ``partitions`` set, an engine that can)."""
    return plan.partitions != "delete" and plan.rule.action == "delete" and plan.impl.drops_partitions


def take_partitions(tx: Transactions, plan: RulePlan, ctx: TimeContext, opts: ExecOptions, out: RuleOutcome,
                    hooks: BatchHooks) -> None:
    """List (dry run) or take the partitions whose rows are all workable, adding their rows to ``out.touch``.

    At most ``out.guard.rows`` rows are taken, as the batches do: a partition
    that would take the run past what it counted is left to them.
    """
    if not applies(plan):
        return
    with tx.read() as conn:
        found = takeable(conn, plan, ctx)
    verb = plan.partitions
    if opts.dry_run:
        out.partitions = [PartitionOutcome(name, verb, rows, f"would {verb}") for _part, name, rows in found]
        if opts.show_sql and found:
            with tx.read() as conn:
                out.statements += _shown(conn, plan, found)
        return
    for part, name, rows in found:
        if hooks.stop_requested():
            break
        if out.touch + rows > out.guard.rows:
            out.partitions.append(PartitionOutcome(name, verb, rows, "kept", "more rows than the run may still "
                                                   "touch (its counted and guarded rows): deleted row by row"))
            continue
        done = PartitionOutcome(name, verb, rows, "dropped" if verb == "drop" else "detached",
                                "" if verb == "drop" else f"left as the table {name}, no longer part of {plan.rule.table}")
        try:
            with tx.batch() as conn:
                lock, detach, drop = plan.impl.partition_ddl(conn, part)
                stage("partition.locking", conn, plan=plan, partition=part)
                conn.exec_driver_sql(lock)
                held, workable = _tally(conn, plan, part)
                if held != rows or workable != rows:
                    raise _Changed(f"changed since it was counted ({rows} rows, all due; now {held} rows, "
                                   f"{workable} of them workable): deleted row by row")
                conn.exec_driver_sql(detach)
                stage("partition.detached", conn, plan=plan, partition=part)
                if verb == "drop":
                    conn.exec_driver_sql(drop)
                hooks.partition_intent(plan, done)
        except _Changed as e:
            out.partitions.append(PartitionOutcome(name, verb, rows, "kept", str(e)))
            continue
        except SQLAlchemyError as e:
            # a lock not granted in time, a missing ownership, a reference the catalog did not show:
            # nothing was done (the transaction rolled back), and the batches delete the rows instead
            error = describe_error(e)
            log.warning("partition_kept", rule=plan.rule.name, partition=name, error=error)
            out.partitions.append(PartitionOutcome(name, verb, rows, "kept", f"{error}: deleted row by row"))
            continue
        out.touch += rows
        out.partitions.append(done)
        hooks.partition_committed(plan, done)
        log.info("partition", rule=plan.rule.name, partition=name, action=verb, rows=rows)


def _shown(conn: Connection, plan: RulePlan, found: list) -> list[str]:
    """What ``--sql`` shows of the partitions a run would take: each one's own transaction."""
    shown = []
    for part, name, rows in found:
        lock, detach, drop = plan.impl.partition_ddl(conn, part)
        lines = [f"-- {name}: {rows} rows, in a transaction of its own", f"{lock};",
                 f"-- counted again under the lock: still {rows} rows, all due and unprotected", f"{detach};"]
        shown.append("\n".join(lines + ([f"{drop};"] if plan.partitions == "drop" else [])))
    return shown


def takeable(conn: Connection, plan: RulePlan, ctx: TimeContext) -> list[tuple[Partition, str, int]]:
    """(partition, its name in reports, rows) for each partition the rule may take now."""
    found = []
    db = plan.table.db
    for part in plan.impl.partitions(conn, plan.table.table):
        if not _bound_past_cutoff(conn, plan, ctx, part) or not part.constraint:
            continue
        held, workable = _tally(conn, plan, part)
        if held == workable:
            name = f"{db}.{part.name}" if part.schema is None else f"{db}.{part.schema}.{part.name}"
            found.append((part, name, held))
    return found


def _bound_past_cutoff(conn: Connection, plan: RulePlan, ctx: TimeContext, part: Partition) -> bool:
    """Every row the partition could ever hold has its clock at or before the cutoff.

    A range bound over ``(clock, ...)`` keeps every row's clock at or below the
    upper bound's first value, so that value at or before the cutoff proves it;
    the database compares, in the clock's own type.
    """
    clock = plan.clock
    if not (isinstance(clock, sa.Column) and clock.table is plan.table.table):
        return False        # a clock read through a foreign key says nothing about this table's bounds
    if part.strategy != "range" or not part.key or part.key[0] != clock.name:
        return False
    upper = part.upper_first
    if upper is None or plan.cutoff is None or plan.cutoff is Beyond.PAST:
        return False
    if plan.cutoff is Beyond.FUTURE:
        return True
    bound = sa.cast(sa.literal(upper, sa.Text), plan.clock_type)
    cutoff = sa.bindparam(None, ctx.moment_for(plan.clock_type, plan.cutoff), type_=plan.clock_type)
    return bool(conn.execute(sa.select(bound <= cutoff)).scalar())


def _referenced(plan: RulePlan) -> sa.ColumnElement:
    """A row another table references through a key the delete cascades along (blocking
    children are protectors already): such rows go through the batches, children first."""
    t = plan.table.table
    terms = []
    for step in plan.cascade:
        child = plan_table(plan, step.fk.child).alias()
        terms.append(sa.exists(sa.select(sa.literal(1)).select_from(child)
                               .where(step.fk.link(child, t))).correlate(t))
    return sa.or_(sa.false(), *terms)


def _tally(conn: Connection, plan: RulePlan, part: Partition) -> tuple[int, int]:
    """(rows the partition holds, how many of them the rule may take whole).

    The partition is read through the partitioned table, with the partition's
    own constraint as the condition (the planner then reads that partition
    only), so every predicate of the plan applies as written.
    """
    t = plan.table.table
    # the constraint is the database's own text; escape colons so none reads as a bound parameter
    inside = sa.text("(" + part.constraint.replace(":", "\\:") + ")")
    takes = sa.and_(plan.work, sa.not_(_referenced(plan)))
    held, workable = conn.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((takes, 1), else_=0)), 0))
        .select_from(t).where(inside)).one()
    return int(held), int(workable)
