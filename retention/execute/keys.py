"""Keys and key ranges of a rule's table: a batch is ``pk > lo AND pk <= hi AND <work>``.

Over a single integer key, ranges are computed (:class:`KeyWalk`): ``hi`` is
``lo`` plus a step learned from how many rows the last range held, so no query
re-reads the rows a batch is about to write.  Over any other key (composite,
text, UUID) ``hi`` is found by the database, the largest key among the next
rows that need work (:func:`_next_bound`).  Either way Python never holds more
than a couple of keys, and never uses OFFSET.  A composite key is a row value
throughout.
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


def _has_max(plan: RulePlan) -> bool:
    """Whether the key is one column whose type every engine can take the max() of
    (PostgreSQL has none for uuid)."""
    if plan.composite:
        return False
    return isinstance(plan.pk.type, (sa.Integer, sa.Numeric, sa.String, sa.Date, sa.DateTime))


def _bound_query(plan: RulePlan, pred: sa.ColumnElement, lo, size) -> sa.Select:
    """The largest key among the next ``size`` rows after ``lo`` that match ``pred``.

    The LIMIT is written as a suffix: SQLAlchemy's SQLite dialect would add
    ``OFFSET 0`` to a ``.limit()``, and the job never uses OFFSET, not even a
    harmless one, so ``--sql`` shows exactly what runs.
    """
    pk = plan.pk
    cond = [pred] if lo is None else [_beyond(plan, ">", lo), pred]
    limit = sa.text(f"LIMIT {int(size)}") if isinstance(size, int) else sa.text("LIMIT :batch_size")
    if _has_max(plan):
        sub = sa.select(pk.label("k")).where(*cond).order_by(pk).suffix_with(limit).subquery()
        return sa.select(sa.func.max(sub.c.k))
    # a row value (or PostgreSQL's uuid) has no max(): the next rows in key order, then the last of them
    cols = plan.pk_columns
    sub = sa.select(*cols).where(*cond).order_by(*cols).suffix_with(limit).subquery()
    return sa.select(*sub.c).order_by(*(c.desc() for c in sub.c)).suffix_with(sa.text("LIMIT 1"))


def _next_bound(conn: Connection, plan: RulePlan, pred: sa.ColumnElement, lo, size: int, counted: bool = False):
    """The batch's upper key (a tuple for a composite key), or None when no row is left.

    With ``counted``: (that key, how many rows the batch holds), from the same statement.
    """
    query = _bound_query(plan, pred, lo, size)
    if _has_max(plan):
        if counted:
            return tuple(conn.execute(query.add_columns(sa.func.count())).one())
        return conn.execute(query).scalar()
    if counted:
        # the last key of the next rows, and (as a window over them) how many there are
        row = conn.execute(query.add_columns(sa.func.count().over())).first()
        return (None, 0) if row is None else (_key_of(plan, row), int(row[-1]))
    row = conn.execute(query).first()
    return None if row is None else _key_of(plan, row)


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
    if isinstance(keys, sa.ClauseElement):        # --sql shows where the keys go
        return columns[0].in_(keys) if len(columns) == 1 else sa.tuple_(*columns).in_(keys)
    if len(columns) == 1:
        return plan.impl.values_in(columns[0], keys)
    # the engine may have a better form than a long list of row values (PostgreSQL's parser
    # recurses once per row and overflows its stack on a batch of thousands)
    return plan.impl.row_values_in(list(columns), keys)


def _beyond(plan: RulePlan, op: str, key) -> sa.ColumnElement:
    """``pk > key`` or ``pk <= key``; a composite key as the engine compares row values best."""
    if not plan.composite or isinstance(key, sa.ClauseElement):
        return plan.pk > _key_value(plan, key) if op == ">" else plan.pk <= _key_value(plan, key)
    values = [sa.bindparam(None, v, type_=c.type) for c, v in zip(plan.pk_columns, key)]
    return plan.impl.row_compare(list(plan.pk_columns), op, values)


def _range(plan: RulePlan, lo, hi) -> sa.ColumnElement:
    upto = _beyond(plan, "<=", hi)
    return plan.impl.open_below(list(plan.pk_columns), upto) if lo is None else sa.and_(_beyond(plan, ">", lo), upto)


def stepped(plan: RulePlan) -> bool:
    """Whether the rule's ranges can be computed from the key: a single integer column."""
    if plan.composite:
        return False
    try:
        return plan.pk.type.python_type is int
    except NotImplementedError:
        return False


class KeyWalk:
    """Ranges over an integer key, each ``hi`` computed from ``lo`` and a learned density.

    Where the walk starts, and after a range that held no row, the database
    finds the next rows (:func:`_next_rows`: the first and last key of the next
    ``rows`` rows, and how many there are), which also tells how densely they
    lie.  Ranges after that are computed: ``hi = lo + rows / density``, with
    the density what the last range held.  Gaps cost one query, not a run of
    empty batches, and the walk never steps blindly from sparse keys into dense ones
    for more than one range.
    """

    def __init__(self) -> None:
        self.density = 0.0      # rows needing work per key unit, as last seen
        self.seek = True        # ask the database where the next rows are

    def probe(self, conn: Connection, plan: RulePlan, pred: sa.ColumnElement, lo, rows: int) -> tuple:
        """``(hi, selected)`` of the next ``rows`` rows of ``pred`` after ``lo`` (hi None: no row left)."""
        first, last, n = _next_rows(conn, plan, pred, lo, rows)
        n = int(n or 0)
        if n:
            self.density = n / (int(last) - int(first) + 1)
        # fewer than asked for: nothing lies beyond, or too little to learn from
        self.seek = n < rows
        return (None if n == 0 else int(last)), n

    def step(self, lo: int, rows: int) -> int:
        """The ``hi`` of a computed range after ``lo`` meant to hold about ``rows`` rows."""
        return lo + max(1, int(rows / self.density))

    def learn(self, lo: int, hi: int, rows: int, seconds: float | None = None) -> None:
        """The computed range ``(lo, hi]`` held ``rows`` rows (in ``seconds``: the density alone sizes key ranges)."""
        self.seek = rows == 0
        if rows:
            self.density = rows / max(hi - lo, 1)


def _next_rows(conn: Connection, plan: RulePlan, pred: sa.ColumnElement, lo, size: int) -> tuple:
    """The first and last key of the next ``size`` rows after ``lo`` matching ``pred``, and their number."""
    pk = plan.pk
    cond = [pred] if lo is None else [pk > lo, pred]
    sub = sa.select(pk.label("k")).where(*cond).order_by(pk).suffix_with(sa.text(f"LIMIT {int(size)}")).subquery()
    return conn.execute(sa.select(sa.func.min(sub.c.k), sa.func.max(sub.c.k), sa.func.count())).one()
