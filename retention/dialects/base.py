"""The dialect base class and its registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from retention.durations import Duration

_REGISTRY: dict[str, type["DialectImpl"]] = {}


def register(cls: type["DialectImpl"]) -> type["DialectImpl"]:
    _REGISTRY[cls.name] = cls
    return cls


def impl_for(bind: Engine | Connection) -> "DialectImpl":
    """The implementation for an engine or connection, by ``dialect.name``."""
    name = bind.dialect.name
    try:
        return _REGISTRY[name]()
    except KeyError:
        supported = ", ".join(sorted(_REGISTRY))
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


class DialectImpl:
    """What the job needs to know about one database engine."""

    name: ClassVar[str] = "default"
    #: SELECT ... FOR UPDATE locks the rows read (SQLite locks the whole file on write instead)
    supports_for_update: ClassVar[bool] = False
    #: most bound parameters one statement may carry (None: no practical limit)
    max_bind_params: ClassVar[int | None] = None

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

    def row_values_in(self, columns: list, keys: list[tuple]) -> ColumnElement:
        """``(a, b) IN ((1, 2), (3, 4), ...)``: the row of ``columns`` is one of ``keys``."""
        return sa.tuple_(*columns).in_(keys)

    # -- transaction hints (SQLite needs them; engines with MVCC and row locks do not) --

    def hint_write(self, conn: Connection) -> None:
        """The next transaction on ``conn`` will write: take the write lock up front where that matters."""

    def hint_unlocked_reads(self, conn: Connection) -> None:
        """The reads on ``conn`` need no common snapshot: don't hold a lock across them."""

    def clear_hints(self, conn: Connection) -> None:
        """Forget unused hints before the connection goes back to the pool."""

    def in_transaction(self, conn: Connection) -> bool:
        """Whether the database still has ``conn``'s transaction open (it may end one on its own).

        The default suits drivers that open a transaction before any statement
        (psycopg): there a SAVEPOINT can never run outside one.
        """
        return True

    def malformed_clock(self, col, date_only: bool):
        """A predicate matching clock values the engine would compare wrongly, or None.

        Engines with real timestamp types have none; SQLite compares text.
        """
        return None

    def prepare_engine(self, engine: Engine, settings=None) -> None:
        """Session settings for every connection the job opens (an engine is the job's own).

        ``settings`` is the policy's ``[settings]``: where the engine has them,
        the session time zone (so a naive ``:now`` means what the job means)
        and the lock and statement timeouts, which then bound every statement
        the job runs, reads included.
        """

    # -- building blocks for anonymization (retention.anonymize) -----------
    # Each returns a Core expression, or None when this engine can't express it
    # and the strategy must run in Python. NULL in gives NULL out.

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


def duration_ms(d: Duration) -> int:
    """Milliseconds in a duration that has no calendar part (timeouts)."""
    return (d.days * 86400 + d.seconds) * 1000
