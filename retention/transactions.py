"""Where the job's statements run: per-batch transactions for a run, one rolled-back
transaction for a simulation.

A run reads on its own connection (without holding locks across statements
where the engine would) and commits each batch in its own transaction, taking
the write lock first where that matters (SQLite).  A simulation runs
everything on one connection inside one transaction that is rolled back.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from retention.dialects import impl_for
from retention.errors import RetentionError


#: named points inside a batch where an observer may act on the batch's own connection
#: (tests stage an application's concurrent write at an exact moment through them)
STAGES = ("batch.checked", "batch.step", "partition.locking", "partition.detached")
_observers: dict[str, list[Callable]] = {stage: [] for stage in STAGES}


def stage(name: str, conn: Connection, **info) -> None:
    """The batch on ``conn`` reached ``name``: call whoever observes it.

    ``batch.checked``: a cascading delete's batch has locked its rows (every
    level but a last one its check does not read, see
    ``retention.execute.cascade._lock_cascade``) and checked them again, right
    before its first delete (info: ``plan``, ``keys``); ``batch.step``: right before the statement that deletes or
    detaches one cascade level (info: ``plan``, ``table``, ``action``);
    ``partition.locking``: a whole partition's transaction is about to lock it
    (and then count it again); ``partition.detached``: it is detached, not yet
    dropped or committed (info: ``plan``, ``partition``).
    """
    for fn in list(_observers[name]):
        fn(conn, **info)


@contextmanager
def observing(name: str, fn: Callable) -> Iterator[None]:
    """Call ``fn(conn, **info)`` each time a batch reaches ``name``, inside the ``with`` block."""
    if name not in _observers:
        raise ValueError(f"no stage '{name}' (stages: {', '.join(STAGES)})")
    _observers[name].append(fn)
    try:
        yield
    finally:
        _observers[name].remove(fn)


@dataclass
class Held:
    """How long a batch held its transaction open, BEGIN to COMMIT: the evidence behind "short transactions".

    ``seconds`` stays None until the batch commits (a simulation's never does).
    """

    seconds: float | None = None


class Transactions:
    """Where reads and batches run: their own connection and transaction each (a run)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.impl = impl_for(engine)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            self.impl.hint_unlocked_reads(conn)
            try:
                yield conn
            finally:
                self.impl.clear_hints(conn)
                conn.rollback()

    def close(self) -> None:
        """Nothing to end: every read and batch closed its own connection."""

    @contextmanager
    def batch(self, held: Held | None = None) -> Iterator[Connection]:
        """A batch's own transaction, committed when the block ends; its length goes to ``held``."""
        with self.engine.connect() as conn:
            self.impl.hint_write(conn)
            try:
                began = time.monotonic()
                with conn.begin():
                    yield conn
                if held is not None:
                    held.seconds = time.monotonic() - began
            finally:
                self.impl.clear_hints(conn)


class SimulationBroken(RetentionError):
    """The database ended a simulation's transaction on its own: stop before anything commits."""


class Simulation(Transactions):
    """Everything on one connection inside one transaction that is rolled back at the end.

    Each read and batch is a savepoint, so a failing one unwinds as it would in
    a run, and each rule sees what the earlier rules did: the numbers are
    exactly a run's.  The price is a long transaction holding every lock a run
    would take, until the end: use it on a copy, or when the tables are quiet.

    Before every savepoint it checks that the database still has the outer
    transaction open: a savepoint outside a transaction would start one, and
    releasing it would commit.
    """

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.conn = engine.connect()
        self.impl.hint_write(self.conn)
        self.outer = self.conn.begin()
        self.broken = False

    @contextmanager
    def _savepoint(self) -> Iterator[Connection]:
        if self.broken or not self.impl.in_transaction(self.conn):
            self.broken = True
            raise SimulationBroken("the database ended the simulation's transaction on its own "
                                   "(a trigger or conflict clause rolled it back); stopped so that nothing "
                                   "is committed")
        with self.conn.begin_nested():
            yield self.conn

    def read(self):
        return self._savepoint()

    def batch(self, held: Held | None = None):
        return self._savepoint()

    def close(self) -> None:
        try:
            self.outer.rollback()
        finally:
            self.impl.clear_hints(self.conn)
            self.conn.close()


class EnoughRecorded(Exception):
    """A recording has its one batch: the executor stops there (caught by whoever recorded)."""


class Recording(Transactions):
    """One batch, run for real and rolled back, with every statement it sends recorded (``--sql``).

    Reads and the batch run on the connection a run would use: inside a
    simulation, the simulation's own (as a savepoint, so earlier rules' work is
    seen and their locks are no obstacle); otherwise a connection of its own.
    The batch takes a run's locks for the moment it lasts.  A second batch is
    not started: ``batch()`` raises :class:`EnoughRecorded`.
    """

    def __init__(self, tx: Transactions) -> None:
        super().__init__(tx.engine)
        self.inner = tx
        #: (statement, parameters, executemany, parameter names in order for positional drivers)
        self.sent: list[tuple[str, object, bool, tuple | None]] = []
        self.batches = 0

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        compiled = getattr(context, "compiled", None)
        names = tuple(compiled.positiontup) if compiled is not None and compiled.positiontup else None
        self.sent.append((statement, parameters, executemany, names))

    def read(self):
        return self.inner.read()

    @contextmanager
    def batch(self, held: Held | None = None) -> Iterator[Connection]:
        if self.batches:
            raise EnoughRecorded()
        self.batches += 1
        if isinstance(self.inner, Simulation):
            conn, own = self.inner.conn, False
            trans = conn.begin_nested()
        else:
            conn, own = self.engine.connect(), True
            self.impl.hint_write(conn)
            trans = conn.begin()
        event.listen(conn, "before_cursor_execute", self._record)
        try:
            yield conn
        finally:
            event.remove(conn, "before_cursor_execute", self._record)
            trans.rollback()
            if own:
                self.impl.clear_hints(conn)
                conn.close()
