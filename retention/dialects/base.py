"""The dialect base class and its registry."""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from retention.durations import Duration

_REGISTRY: dict[str, type["DialectImpl"]] = {}
#: SQLAlchemy's ``dialect.name`` -> the module that registers its class, imported when first
#: needed: a policy pays only for its own engines (each pulls in SQLAlchemy's dialect package)
MODULES = {"sqlite": "retention.dialects.sqlite", "postgresql": "retention.dialects.postgresql",
           "mysql": "retention.dialects.mysql", "mariadb": "retention.dialects.mysql"}

#: joins a composite key's columns before hashing (DialectImpl.stable_hash)
KEY_SEPARATOR = "\x1f"


def register(cls: type["DialectImpl"]) -> type["DialectImpl"]:
    _REGISTRY[cls.name] = cls
    return cls


def impl_for(bind: Engine | Connection) -> "DialectImpl":
    """The implementation for an engine or connection, by ``dialect.name``."""
    name = bind.dialect.name
    if name not in _REGISTRY and name in MODULES:
        importlib.import_module(MODULES[name])
    try:
        return _REGISTRY[name]()
    except KeyError:
        supported = ", ".join(sorted(MODULES))
        raise NotImplementedError(f"database dialect '{name}' is not supported (supported: {supported})") from None


#: a table as the catalog names it: (schema, name), schema None for the connection's default
TableRef = tuple[str | None, str]


@dataclass(frozen=True)
class RawForeignKey:
    """One foreign-key constraint as the database declares it (columns in key order)."""

    child: TableRef
    columns: tuple[str, ...]
    parent: TableRef
    parent_columns: tuple[str, ...]
    nullable: bool          # every column may be NULL (a detach sets them all NULL)


@dataclass
class CatalogGraph:
    """Every table of a database and its foreign keys, read without reflecting any table.

    ``partitions`` maps each partition to its partitioned table (the topmost
    one); partitions are not in ``tables``.  Foreign keys the database clones
    onto partitions from a key declared on the partitioned table are left out:
    that key is listed once, on the partitioned table.
    """

    tables: list[TableRef] = field(default_factory=list)
    fks: list[RawForeignKey] = field(default_factory=list)
    partitions: dict[TableRef, TableRef] = field(default_factory=dict)
    #: partition -> the partitioned tables between it and its root (closest first)
    partition_parents: dict[TableRef, list[TableRef]] = field(default_factory=dict)
    #: partitions that hold rows (not themselves partitioned)
    leaf_partitions: set[TableRef] = field(default_factory=set)
    #: partitioned tables that are not themselves partitions (what a policy may name)
    partitioned: set[TableRef] = field(default_factory=set)


@dataclass(frozen=True)
class Partition:
    """One partition that holds rows, as the database describes it (:meth:`DialectImpl.partitions`).

    ``bound`` is the partition's bound as the database writes it (``FOR VALUES
    FROM (...) TO (...)``, ``DEFAULT``); ``constraint`` a boolean SQL expression
    over the partitioned table's columns that is true exactly for the rows the
    partition holds; ``strategy`` and ``key`` are its parent's partitioning
    (``range``, ``list``, ``hash``; the key's columns, None for an expression).
    """

    schema: str | None
    name: str
    parent_schema: str | None
    parent: str
    strategy: str
    key: tuple[str | None, ...]
    bound: str
    constraint: str | None

    @property
    def upper_first(self) -> str | None:
        """The literal of the first column of a range partition's upper bound, as written
        (``'2020-02-01 00:00:00'``, ``100``); None when there is none (MAXVALUE, not a range)."""
        m = re.match(r"^FOR VALUES FROM \((.*?)\) TO \((.*)\)$", self.bound or "", re.S)
        if self.strategy != "range" or m is None:
            return None
        upper = m.group(2).strip()
        if upper.startswith("'"):
            # a quoted literal: up to the quote that is not doubled
            lit = re.match(r"'((?:[^']|'')*)'", upper)
            return lit.group(1).replace("''", "'") if lit else None
        first = upper.split(",", 1)[0].strip()
        return None if first.upper() in ("MAXVALUE", "MINVALUE") else first


@dataclass(frozen=True)
class LockHolder:
    """The database session holding a run lock, as far as the engine shows it."""

    session: str                    # the server's id of the session
    tag: str | None = None          # what the holder said about itself (shows_lock_holder)
    since: str | None = None        # ISO time the session started, where known


class DialectImpl:
    """What the job needs to know about one database engine."""

    name: ClassVar[str] = "default"
    #: SELECT ... FOR UPDATE locks the rows read (SQLite locks the whole file on write instead)
    supports_for_update: ClassVar[bool] = False
    #: most bound parameters one statement may carry (None: no practical limit)
    max_bind_params: ClassVar[int | None] = None
    #: an UPDATE/DELETE may read the table it writes in a subquery (MySQL: no)
    writes_may_read_their_table: ClassVar[bool] = True
    #: a batch's keys bind as one array per key column (:meth:`values_in`, :meth:`row_values_in`),
    #: so no parameter limit bounds how many keys a batch may take
    binds_key_arrays: ClassVar[bool] = False

    def other_schemas(self, engine: Engine) -> list[str]:
        """Schemas besides the default one whose tables may reference the policy's tables."""
        return []

    def catalog_graph(self, engine: Engine) -> CatalogGraph:
        """Tables and foreign keys of the whole database, as cheaply as the engine allows.

        This portable version asks SQLAlchemy's inspector table by table;
        dialects override it with one catalog query.
        """
        inspector = sa.inspect(engine)
        default = inspector.default_schema_name
        graph = CatalogGraph()
        for schema in [None, *self.other_schemas(engine)]:
            for name in inspector.get_table_names(schema=schema):
                graph.tables.append((schema, name))
                nullable = {c["name"]: c.get("nullable", True) for c in inspector.get_columns(name, schema=schema)}
                for fk in inspector.get_foreign_keys(name, schema=schema):
                    cols = tuple(fk["constrained_columns"])
                    ref_schema = fk.get("referred_schema")
                    parent = (None if ref_schema in (None, default) else ref_schema, fk["referred_table"])
                    graph.fks.append(RawForeignKey((schema, name), cols, parent, tuple(fk["referred_columns"]),
                                                   all(nullable.get(c, True) for c in cols)))
        return graph

    # -- partitions (retention.execute.partitions) --------------------------

    #: whole partitions can be detached and dropped instead of deleting their rows
    drops_partitions: ClassVar[bool] = False

    def partitions(self, conn: Connection, table: sa.Table) -> list[Partition]:
        """The partitions of ``table`` that hold rows (at every level), in name order."""
        return []

    def partition_ddl(self, conn: Connection, part: Partition) -> tuple[str, str, str]:
        """The statements that take ``part``, in one transaction: lock it against writes (its
        rows are then counted again), detach it (it becomes a table of its own), drop that table."""
        raise NotImplementedError

    def owners(self, conn: Connection, tables: list[tuple[str | None, str]]) -> dict[tuple[str | None, str], str]:
        """The role owning each table (engines whose privileges know owners)."""
        return {}

    def row_compare(self, columns: list, op: str, values: list) -> ColumnElement:
        """``(a, b) > (1, 2)`` (``op`` one of ``>``, ``<=``): how a batch's range bounds a composite key."""
        left, right = sa.tuple_(*columns), sa.tuple_(*values)
        return left > right if op == ">" else left <= right

    def values_in(self, column: ColumnElement, keys: list) -> ColumnElement:
        """``a IN (1, 2, ...)``: ``column`` holds one of ``keys`` (a batch's locked keys)."""
        return column.in_(keys)

    def open_below(self, columns: list, upto: ColumnElement) -> ColumnElement:
        """A batch's first range, ``upto`` (``key <= hi``) with no lower bound, as the engine
        best finds it: by default ``upto`` itself."""
        return upto

    def row_values_in(self, columns: list, keys: list[tuple]) -> ColumnElement:
        """``(a, b) IN ((1, 2), (3, 4), ...)``: the row of ``columns`` is one of ``keys``."""
        return sa.tuple_(*columns).in_(keys)

    def stable_hash(self, texts: list) -> ColumnElement | None:
        """A non-negative integer from the key's text columns, the same on every call (sharded runs).

        The first 32 bits of the MD5 of the texts joined by a unit separator
        (``\\x1f``), so it does not change with the server's version or
        settings; None where the engine cannot compute it.
        """
        return None
    def write_sets(self, conn: Connection, table: sa.Table, where: ColumnElement,
                   by: list) -> list[ColumnElement]:
        """The predicates an UPDATE or DELETE of ``table`` names the rows matching ``where`` by.

        ``[where]`` itself here.  An engine that refuses a write reading its own
        table in a subquery (MySQL's error 1093) reads the values of ``by``
        (columns of ``table`` that identify the rows, such as the foreign key a
        cascade follows) first, and writes by them, in as many statements as
        its parameter limit needs (none: no row).
        """
        return [where]

    # -- transaction hints (SQLite needs them; engines with MVCC and row locks do not) --

    def hint_write(self, conn: Connection) -> None:
        """The next transaction on ``conn`` will write: take the write lock up front where that matters."""

    def hint_unlocked_reads(self, conn: Connection) -> None:
        """The reads on ``conn`` need no common snapshot: don't hold a lock across them."""

    def clear_hints(self, conn: Connection) -> None:
        """Forget unused hints before the connection goes back to the pool."""

    def serialize_writers(self, conn: Connection) -> None:
        """Inside a transaction on the job's state store: wait until this is its only writer.

        The audit chain appends by reading its head; two runs must not both
        append after the same head.  The default relies on ``hint_write``
        having taken the database's write lock (SQLite's ``BEGIN IMMEDIATE``).
        """

    def end_serialized(self, conn: Connection) -> None:
        """The writer's transaction has ended: give back what ``serialize_writers`` took beyond it."""

    def in_transaction(self, conn: Connection) -> bool:
        """Whether the database still has ``conn``'s transaction open (it may end one on its own).

        The default suits drivers that open a transaction before any statement
        (psycopg): there a SAVEPOINT can never run outside one.
        """
        return True

    #: whether batches on separate connections write at the same time (``--workers``)
    concurrent_writers: ClassVar[bool] = True
    #: a trigger or rule can keep a row's DELETE from happening while the statement goes on
    #: (PostgreSQL's BEFORE trigger returning NULL or DO INSTEAD rule, SQLite's RAISE(IGNORE))
    cancels_row_writes: ClassVar[bool] = True

    def rewrites_writes(self, conn: Connection, table: sa.Table) -> bool:
        """Whether ``table`` has triggers or rules that may change what a DELETE or UPDATE does.

        Batches over such a table count the rows each one selects, so that a
        statement changing fewer can be told apart (see ``NOT_DONE``).  The
        default cannot tell, so it says yes.
        """
        return True

    #: batches may walk ranges of where rows are stored (:meth:`heap_pages`, :meth:`page_range`)
    page_ranges: ClassVar[bool] = False
    #: what one unit of those ranges is, as the audit log names a batch's ends ("page 12")
    page_unit: ClassVar[str] = "page"

    def heap_pages(self, conn: Connection, table: sa.Table) -> int | None:
        """How many pages ``table``'s rows are stored on, where batches can walk them as ranges of
        physical rows (:meth:`page_range`); None where they cannot (the engine has no such ranges, the
        table is partitioned or has children): batches then walk key ranges."""
        return None

    def page_range(self, table: sa.Table, lo: int, hi: int) -> ColumnElement:
        """The rows of ``table`` stored on pages ``lo`` up to (not including) ``hi``, as the engine
        finds them without an index (only where :meth:`heap_pages` gives a number)."""
        raise NotImplementedError(f"{self.name} has no physical row ranges")

    #: SQLSTATEs after which a batch is rolled back and tried again: a foreign-key violation
    #: (a child committed under a row being deleted), a serialization failure, a deadlock
    retry_sqlstates: ClassVar[frozenset[str]] = frozenset({"23503", "40001", "40P01"})

    #: the same, for drivers that give an error number instead of a SQLSTATE
    retry_errnos: ClassVar[frozenset[int]] = frozenset()

    def retryable(self, error: Exception) -> bool:
        """Whether a batch that failed with ``error`` may succeed when tried again.

        The error a savepoint's rollback raised may stand in front of the one that
        ended the whole transaction (a deadlock on MySQL): the chain is looked through.
        """
        seen = 0
        while error is not None and seen < 5:
            orig = getattr(error, "orig", None) or error
            code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
            if code is not None and str(code).upper() in self.retry_sqlstates:
                return True
            args = getattr(orig, "args", ())
            if args and isinstance(args[0], int) and args[0] in self.retry_errnos:
                return True
            error, seen = error.__context__, seen + 1
        return False

    #: the pre-run count reads the clock's index, statement by statement (the table's rows, the
    #: due rows, the forecast), rather than the whole table once (retention.execute.count)
    counts_by_index: ClassVar[bool] = False

    def representable(self, col: ColumnElement, col_type) -> ColumnElement | None:
        """A predicate true where a temporal ``col`` holds a value Python can represent, or None
        when every value is (PostgreSQL has -infinity and BC dates; Python's years are 1 to 9999)."""
        return None

    #: SQLSTATE classes and codes of failures of the moment, not of the statement: connection
    #: (08), resources (53), lock not available (55P03), cancelled by statement_timeout (57014),
    #: shutdown (57P), deadlock or serialization (40), login refused (28), missing privilege (42501)
    transient_states: ClassVar[tuple[str, ...]] = ("08", "53", "55P03", "57014", "57P", "40", "28", "42501")
    #: the same, for drivers without SQLSTATEs: words of their messages
    transient_words: ClassVar[tuple[str, ...]] = ()

    def is_transient(self, e: Exception) -> bool:
        """Whether a database error says something about the moment (a lock, a timeout, the
        connection, a privilege) rather than about the statement: a runtime failure, exit 1."""
        if getattr(e, "connection_invalidated", False):
            return True
        orig = getattr(e, "orig", None) or e
        code = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
        if code and code.startswith(self.transient_states):
            return True
        text = str(orig).lower()
        return any(word in text for word in self.transient_words)

    def malformed_clock(self, col, date_only: bool):
        """A predicate matching clock values the engine would compare wrongly, or None.

        Engines with real timestamp types have none; SQLite compares text.
        """
        return None

    def comparable_moment(self, col: ColumnElement) -> ColumnElement:
        """A timestamp column in a form whose comparisons order instants (engines with real types: itself)."""
        return col

    def prepare_engine(self, engine: Engine, settings=None) -> None:
        """Session settings for every connection the job opens (an engine is the job's own).

        ``settings`` is the policy's ``[settings]``: where the engine has them,
        the session time zone (so a naive ``:now`` means what the job means)
        and the lock and statement timeouts, which then bound every statement
        the job runs, reads included.
        """

    def prepare_store(self, engine: Engine) -> None:
        """Settings for the job's own state store, beside :meth:`prepare_engine` (see retention.state.store).

        Every commit there must be durable when it returns (the audit log is
        evidence); engines whose commits are durable by default need nothing.
        """

    # -- the run lock (retention.locks) ------------------------------------
    # A lock that belongs to a database session dies with it: a killed run never
    # leaves it behind.  Engines without one (SQLite) get a lease in the state store.

    #: the engine has locks owned by a database session, named by a scope string
    session_locks: ClassVar[bool] = False
    #: another session can read who holds such a lock (else the state store records it)
    shows_lock_holder: ClassVar[bool] = False

    def try_session_lock(self, conn: Connection, scope: str, tag: str) -> bool:
        """Take the lock ``scope`` for ``conn``'s session without waiting; whether it was free.

        ``tag`` names the holder (run, pid, host) where the engine lets other
        sessions read it.  The lock outlives the transaction; it ends with
        :meth:`release_session_lock` or with the session.
        """
        raise NotImplementedError(f"{self.name} has no session locks")

    def release_session_lock(self, conn: Connection, scope: str) -> None:
        """Give back the lock ``scope`` that ``conn``'s session holds."""
        raise NotImplementedError(f"{self.name} has no session locks")

    def session_lock_holder(self, conn: Connection, scope: str) -> "LockHolder | None":
        """The session holding the lock ``scope`` (None: nobody holds it now)."""
        return None

    # -- privileges (retention.privileges) --------------------------------

    def privileges_held(self, conn: Connection, atoms: list[tuple]) -> list[bool] | None:
        """For each ``(kind, schema, table, column)``, whether the login holds it; None: no grants here.

        ``kind`` is USAGE (on the schema), SELECT, UPDATE (of ``column``), LOCK
        (``SELECT ... FOR UPDATE``) or DELETE; ``schema`` None is the default one.
        """
        return None

    def login(self, conn: Connection) -> tuple[str, str | None]:
        """The role the connection acts as, and its default schema (for GRANT statements)."""
        return "", None

    def storage_access(self, conn: Connection, table: sa.Table | None) -> tuple[list[str], list[tuple[str, str]]]:
        """Notes on how the engine controls access, and problems as (what, how to fix it)."""
        return [], []

    # -- building blocks for anonymization (retention.anonymize) -----------
    # Each returns a Core expression, or None when this engine can't express it
    # and the strategy must run in Python. NULL in gives NULL out.

    def text_length(self, col: ColumnElement) -> ColumnElement:
        """The number of characters in ``col``."""
        return sa.func.length(col)

    def equal(self, a: ColumnElement, b: ColumnElement) -> ColumnElement:
        """``a`` and ``b`` hold the very same value (text: the same characters, case and spaces)."""
        return a == b

    def repeat_text(self, text: ColumnElement, count: ColumnElement) -> ColumnElement | None:
        """``text`` repeated ``count`` times ('' for count <= 0)."""
        return sa.func.repeat(text, count, type_=sa.String)

    def last_position(self, col: ColumnElement, char: str) -> ColumnElement | None:
        """1-based position of the last ``char`` in ``col``; 0 when absent."""
        # rtrim strips trailing characters that are in the set "col without char",
        # so it stops right after the last char: portable, no reverse() needed.
        return sa.func.length(sa.func.rtrim(col, sa.func.replace(col, sa.literal(char, sa.String), "")))

    def floor_to_multiple(self, col: ColumnElement, step: Decimal) -> ColumnElement | None:
        """``col`` floored to a multiple of ``step``, exactly; integer columns only here."""
        if not isinstance(col.type, sa.Integer) or step != step.to_integral_value():
            return None
        s = sa.literal(int(step), col.type)
        # % truncates toward zero in SQL; adding s and taking % again gives a floor for negatives
        return col - ((col % s) + s) % s

    def truncate_datetime(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        """A DATE/TIMESTAMP ``col`` cut to the start of its year, month or day, same type."""
        return None

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        """True when ``col`` is ``prefix`` followed by exactly ``length`` lowercase hex digits."""
        return None

    # Which stored values the SQL building blocks above compute exactly as the Python
    # path does.  Each returns a two-valued SQL boolean for non-NULL values, or None when
    # every value qualifies.  Values outside it are ones the Python path refuses too, so
    # the SQL path must leave them as they are (see Strategy.handled_sql).

    def plain_text(self, col: ColumnElement) -> ColumnElement | None:
        """``col`` holds text that the string functions see whole, as Python sees it."""
        return None

    def whole_number(self, col: ColumnElement) -> ColumnElement | None:
        """``col`` holds an integer, as the Python path reads it (for ``floor_to_multiple``)."""
        return None

    def at_period_start(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        """``col`` already is the first instant of its year/month/day, as the Python path reads it.

        None: comparing ``truncate_datetime`` with the value says so (typed engines).
        """
        return None

    def readable_datetime(self, col: ColumnElement) -> ColumnElement | None:
        """``col`` holds a date/timestamp the driver reads into Python (for ``truncate_datetime``)."""
        return None


def duration_ms(d: Duration) -> int:
    """Milliseconds in a duration that has no calendar part (timeouts)."""
    return (d.days * 86400 + d.seconds) * 1000
