"""A delete's cascade: the child rows each step reaches, counted, locked and changed.

Children go deepest first, so no statement ever leaves a dangling reference;
the locks go parents first, so nothing new can arrive under a locked row (a
last level nothing reads is locked by its own statement, see _lock_cascade).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.sql import visitors

from retention.execute.keys import _count, _keys_in
from retention.plan import CascadeStep, RulePlan
from retention.report.model import Cascade
from retention.transactions import stage


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


def _lock_cascade(conn: Connection, plan: RulePlan, steps, roots: Roots, path: tuple = ()) -> None:
    """Lock the rows of each cascade level, parents before their children.

    A last level (a step with no step below it) is locked ahead only where the
    plan's ``work`` reads its table, or may (an operator's ``where_sql``);
    else its own DELETE or UPDATE locks its rows, and locking them first would
    only write every row lock twice.  Nothing the batch promises needs them
    locked earlier:

    * nothing new arrives under the locked parents meanwhile: a row inserted
      or moved there waits in its foreign-key check for the parent's lock;
    * nothing can arrive under its rows: every foreign key to a deleted
      level's table is a step below it or blocks, and a blocking child is a
      protector, which reads the table (a detached row stays: what points at
      it is not the cascade's business);
    * the re-check does not depend on its rows (``work`` does not read them),
      so a change to one after the check changes nothing the check decided;
    * the statement takes every row under the parents when it runs, and
      counts exactly those: a row changed meanwhile is taken as it is now, a
      row moved to a parent outside the batch is left with it.
    """
    read = None
    for step in steps:
        here = path + (step,)
        if not step.children:
            read = _tables_read(plan.work) if read is None else read
            if read is not _ANY and plan_table(plan, step.fk.child).fullname not in read:
                continue
        child, link = _children(plan, here, roots)
        rows = sa.select(sa.literal(1)).select_from(child).where(link).with_for_update().subquery()
        conn.execute(sa.select(sa.func.count()).select_from(rows)).scalar()
        if step.children:
            _lock_cascade(conn, plan, step.children, roots, here)


#: what a predicate holding SQL text the job did not build (``where_sql``) may read
_ANY = frozenset({"*"})


def _tables_read(pred: sa.ColumnElement) -> frozenset[str]:
    """The tables ``pred`` reads (full names), or ``_ANY`` when it holds an operator's SQL text."""
    names = set()
    for e in visitors.iterate(pred):
        if isinstance(e, sa.TextClause):
            return _ANY
        if isinstance(e, sa.Table):
            names.add(e.fullname)
    return frozenset(names)


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
