"""Keys and key ranges of a rule's table: a batch is ``pk > lo AND pk <= hi AND <work>``.

``hi`` is found by the database (the largest key among the next rows that
need work), so Python never holds more than a couple of keys, and never uses
OFFSET.  A composite key is a row value throughout.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.plan import RulePlan


def _count(conn: Connection, table: sa.Table, *where) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(*where)).scalar() or 0)


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
