"""PostgreSQL through psycopg 3."""

from __future__ import annotations

import zlib
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import ARRAY, BIT
from sqlalchemy.engine import Engine
from sqlalchemy.sql.elements import ColumnElement

from retention.dialects.base import (KEY_SEPARATOR, CatalogGraph, DialectImpl, LockHolder, Partition, RawForeignKey,
                                     duration_ms, register)

# Tables (ordinary and partitioned) outside the system schemas, with the
# partitioned table each partition belongs to.
_TABLES = sa.text(r"""
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relispartition,
           (SELECT i.inhparent FROM pg_inherits i WHERE i.inhrelid = c.oid) AS parent
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
""")

# Foreign keys as declared: conparentid <> 0 marks a copy PostgreSQL made of a
# key declared on a partitioned table (on each partition, or towards each
# partition of a partitioned parent); the declared key stands for them all.
_FOREIGN_KEYS = sa.text("""
    SELECT con.conrelid, con.confrelid,
           ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord),
           ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(num, ord)
                 JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.ord),
           NOT EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = con.conrelid AND a.attnum = ANY (con.conkey) AND a.attnotnull)
    FROM pg_constraint con
    WHERE con.contype = 'f' AND con.conparentid = 0
""")


# The partitions of one partitioned table that hold rows, at every level, with their
# immediate parent's partitioning (strategy, key columns: NULL for an expression), their
# bound and the constraint the database derives from it (the ancestors' bounds included).
_PARTITIONS = sa.text("""
    WITH RECURSIVE tree AS (
        SELECT i.inhrelid AS oid, i.inhparent AS parent FROM pg_inherits i WHERE i.inhparent = :root
        UNION ALL
        SELECT i.inhrelid, i.inhparent FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid
    )
    SELECT NULLIF(n.nspname, current_schema()), c.relname, NULLIF(pn.nspname, current_schema()), p.relname,
           pt.partstrat,
           ARRAY(SELECT a.attname::text FROM unnest(pt.partattrs::int2[]) WITH ORDINALITY AS k(num, ord)
                 LEFT JOIN pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = k.num ORDER BY k.ord),
           pg_get_expr(c.relpartbound, c.oid), pg_get_partition_constraintdef(c.oid)
    FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_class p ON p.oid = tree.parent JOIN pg_namespace pn ON pn.oid = p.relnamespace
    JOIN pg_partitioned_table pt ON pt.partrelid = tree.parent
    WHERE c.relkind = 'r'
    ORDER BY n.nspname, c.relname
""")

_STRATEGIES = {"r": "range", "l": "list", "h": "hash"}

#: advisory lock keys (two int4): the state store's writers, and a run on an application database
STORE_LOCK = (0x52544E53, 1)       # 'RTNS'
RUN_LOCK = (0x52544E52, 1)         # 'RTNR'


def run_lock_key(scope: str) -> tuple[int, int]:
    """The advisory lock key of a run lock scope: ``run`` is :data:`RUN_LOCK`, others a stable hash."""
    if scope == "run":
        return RUN_LOCK
    return RUN_LOCK[0], zlib.crc32(scope.encode()) & 0x7FFFFFFF


class _TID(sa.types.UserDefinedType):
    """PostgreSQL's ``tid``: where a row is stored, ``(page,row)``."""

    cache_ok = True

    def get_col_spec(self, **kw) -> str:
        return "tid"


@register
class PostgreSQLImpl(DialectImpl):
    name: ClassVar[str] = "postgresql"
    supports_for_update = True
    max_bind_params = 30000   # psycopg sends at most 65535 parameters
    binds_key_arrays = True

    def prepare_engine(self, engine: Engine, settings=None) -> None:
        # The job runs many short statements whose predicates look expensive to
        # the planner (correlated EXISTS through the cascade); JIT-compiling each
        # one costs ~0.5 s, more than the statement itself. Off for our sessions only.
        # The session time zone is the policy's, so a naive :now compared with a
        # timestamptz column means the same instant the job means; the timeouts
        # bound every statement, the counting reads as well as the batches.
        # Backslashes in '...' are plain characters, as the where_sql parser reads them, even
        # where a server or database was configured the pre-9.1 way.
        options = {"jit": "off", "standard_conforming_strings": "on"}
        if settings is not None:
            options["TimeZone"] = settings.timezone
            options["lock_timeout"] = str(int(duration_ms(settings.lock_timeout)))
            options["statement_timeout"] = str(int(duration_ms(settings.statement_timeout)))

        @event.listens_for(engine, "connect")
        def _session(dbapi_conn, _record):  # pragma: no cover - trivial
            with dbapi_conn.cursor() as cur:
                for name, value in options.items():
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            dbapi_conn.commit()

    def rewrites_writes(self, conn, table: sa.Table) -> bool:
        # user triggers (not the ones foreign keys install) and rules other than a view's
        name = conn.dialect.identifier_preparer.format_table(table)
        return bool(conn.execute(sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal) "
            "OR EXISTS (SELECT 1 FROM pg_rewrite WHERE ev_class = CAST(:t AS regclass) AND rulename <> '_RETURN')"),
            {"t": name}).scalar())

    page_ranges = True

    def heap_pages(self, conn, table: sa.Table) -> int | None:
        # TID Range Scans came with PostgreSQL 14: before, a ctid range is a filter on a whole scan.
        # A partitioned table (or one with inheritance children) has a ctid per partition and no
        # pages of its own; relkind 'r' without subclasses is a table that holds its rows itself
        if (conn.dialect.server_version_info or (0,)) < (14,):
            return None
        name = conn.dialect.identifier_preparer.format_table(table)
        return conn.execute(sa.text(
            "SELECT CASE WHEN c.relkind = 'r' AND NOT c.relhassubclass "
            "THEN pg_relation_size(c.oid) / current_setting('block_size')::int END "
            "FROM pg_class c WHERE c.oid = CAST(:t AS regclass)"), {"t": name}).scalar()

    def page_range(self, table: sa.Table, lo: int, hi: int) -> ColumnElement:
        # '(p,0)' comes before every row of page p (row numbers start at 1); the planner turns the
        # two bounds into a TID Range Scan, which reads those pages and no others
        ctid = sa.sql.expression.ColumnClause("ctid", type_=_TID(), _selectable=table)
        return sa.and_(ctid >= sa.literal(f"({int(lo)},0)", _TID()),
                       ctid < sa.literal(f"({int(hi)},0)", _TID()))

    # -- the run lock: a session-level advisory lock, its holder named by application_name --

    session_locks = True
    shows_lock_holder = True

    def try_session_lock(self, conn, scope: str, tag: str) -> bool:
        conn.execute(sa.text("SELECT set_config('application_name', :v, false)"), {"v": tag[:63]})
        k1, k2 = run_lock_key(scope)
        return bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k1, :k2)"), {"k1": k1, "k2": k2}).scalar())

    def release_session_lock(self, conn, scope: str) -> None:
        k1, k2 = run_lock_key(scope)
        conn.execute(sa.text("SELECT pg_advisory_unlock(:k1, :k2)"), {"k1": k1, "k2": k2})

    def session_lock_holder(self, conn, scope: str) -> LockHolder | None:
        k1, k2 = run_lock_key(scope)
        row = conn.execute(sa.text(
            "SELECT a.application_name, a.backend_start, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :k1 AND l.objid = :k2 "
            "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"),
            {"k1": k1, "k2": k2}).first()
        if row is None:
            return None
        return LockHolder(session=str(row[2]), tag=row[0] or None, since=row[1].isoformat() if row[1] else None)

    def representable(self, col: ColumnElement, col_type) -> ColumnElement | None:
        # -infinity, infinity and BC values fall outside these bounds; a timestamptz keeps a day's
        # margin, since it is read in the session time zone.  The bounds are bound as values of the
        # column's type: a cast from text is not folded by the planner, and ran on every row counted
        if isinstance(col_type, sa.DateTime):
            low, high = (datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 12, 30, tzinfo=UTC)) if col_type.timezone \
                else (datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999))
        elif isinstance(col_type, sa.Date):
            low, high = date(1, 1, 1), date(9999, 12, 31)
        else:
            return None
        return sa.and_(col >= sa.literal(low, col_type), col <= sa.literal(high, col_type))

    def stable_hash(self, texts: list) -> ColumnElement | None:
        joined = texts[0] if len(texts) == 1 else sa.func.concat_ws(sa.literal(KEY_SEPARATOR), *texts)
        hex8 = sa.func.substr(sa.func.md5(joined), 1, 8)
        return sa.cast(sa.cast(sa.literal("x", sa.String) + hex8, BIT(32)), sa.BigInteger)

    def serialize_writers(self, conn) -> None:
        # a transaction-scoped advisory lock: released by COMMIT, ROLLBACK or a dead session
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k1, :k2)"), {"k1": STORE_LOCK[0], "k2": STORE_LOCK[1]})

    def other_schemas(self, engine: Engine) -> list[str]:
        inspector = sa.inspect(engine)
        default = inspector.default_schema_name
        return [name for name in inspector.get_schema_names()
                if name != default and name != "information_schema" and not name.startswith("pg_")]

    def privileges_held(self, conn, atoms):
        # the has_*_privilege functions answer for the session's role, counting grants to
        # PUBLIC and to roles it inherits; column-level grants count for has_column_privilege.
        # Tables go by OID: looking one up by name already fails without USAGE on its schema
        default = conn.execute(sa.text("SELECT current_schema()")).scalar()
        names = sorted({(schema or default, table) for _k, schema, table, _c in atoms if table is not None})
        oids = {}
        if names:
            rows = conn.execute(sa.text(
                "SELECT n.nspname, c.relname, c.oid FROM pg_catalog.pg_class c "
                "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
                "WHERE (n.nspname, c.relname) IN :names").bindparams(sa.bindparam("names", expanding=True)),
                {"names": names})
            oids = {(nsp, rel): int(oid) for nsp, rel, oid in rows}
        checks = []
        for kind, schema, table, column in atoms:
            schema = schema or default
            if kind == "USAGE":
                checks.append(sa.func.has_schema_privilege(sa.literal(schema, sa.Text), "USAGE"))
                continue
            oid = sa.cast(sa.literal(oids[(schema, table)]), postgresql.OID)
            if kind == "DELETE":
                checks.append(sa.func.has_table_privilege(oid, "DELETE"))
            elif kind == "OWNER":
                # DETACH needs the partitioned table's owner, DROP each partition's: the login
                # (or a role it belongs to) must own the table and every partition below it
                checks.append(sa.literal_column(
                    f"(SELECT coalesce(bool_and(pg_has_role(c.relowner, 'USAGE')), false) "
                    f"FROM pg_partition_tree({oids[(schema, table)]:d}::oid) t JOIN pg_class c ON c.oid = t.relid)"))
            elif kind == "LOCK":
                # FOR UPDATE needs UPDATE on at least one column of the table
                checks.append(sa.func.has_any_column_privilege(oid, "UPDATE"))
            elif column is None:
                checks.append(sa.func.has_any_column_privilege(oid, kind))
            else:
                checks.append(sa.func.has_column_privilege(oid, sa.literal(column, sa.Text), kind))
        held: list[bool] = []
        for start in range(0, len(checks), 500):     # PostgreSQL allows 1664 result columns
            held += [bool(v) for v in conn.execute(sa.select(*checks[start:start + 500])).one()]
        return held

    def login(self, conn):
        role, schema = conn.execute(sa.text("SELECT current_user, current_schema()")).one()
        return role, schema

    def catalog_graph(self, engine: Engine) -> CatalogGraph:
        """The whole database's tables, partitions and declared foreign keys in two catalog queries."""
        graph = CatalogGraph()
        with engine.connect() as conn:
            default = conn.exec_driver_sql("SELECT current_schema()").scalar()
            rows = conn.execute(_TABLES).all()
            fks = conn.execute(_FOREIGN_KEYS).all()
            conn.rollback()
        ref = {oid: (None if schema == default else schema, name) for oid, schema, name, *_ in rows}
        parent = {oid: up for oid, _s, _n, _k, is_part, up in rows if is_part and up in ref}
        for oid, _schema, _name, kind, _is_part, _up in rows:
            if oid not in parent:
                graph.tables.append(ref[oid])
                if kind == "p":
                    graph.partitioned.add(ref[oid])
                continue
            chain, up = [], parent[oid]
            while True:
                chain.append(ref[up])
                if up not in parent:
                    break
                up = parent[up]
            graph.partitions[ref[oid]] = chain[-1]
            graph.partition_parents[ref[oid]] = chain[:-1]
            if kind == "r":
                graph.leaf_partitions.add(ref[oid])
        for child, parent_oid, cols, pcols, nullable in fks:
            if child in ref and parent_oid in ref:
                graph.fks.append(RawForeignKey(ref[child], tuple(cols), ref[parent_oid], tuple(pcols), bool(nullable)))
        return graph

    # -- partitions -------------------------------------------------------------

    drops_partitions = True

    def _oid(self, conn, schema: str | None, name: str) -> int | None:
        return conn.execute(sa.text(
            "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = coalesce(:schema, current_schema()) AND c.relname = :name"),
            {"schema": schema, "name": name}).scalar()

    def partitions(self, conn, table: sa.Table) -> list[Partition]:
        root = self._oid(conn, table.schema, table.name)
        if root is None:
            return []
        rows = conn.execute(_PARTITIONS.bindparams(sa.bindparam("root", type_=postgresql.OID)), {"root": root})
        return [Partition(schema, name, pschema, parent, _STRATEGIES.get(strat, strat), tuple(key), bound, constraint)
                for schema, name, pschema, parent, strat, key, bound, constraint in rows]

    def _name(self, conn, schema: str | None, name: str) -> str:
        quote = conn.dialect.identifier_preparer.quote
        return quote(name) if schema is None else f"{quote(schema)}.{quote(name)}"

    def partition_ddl(self, conn, part: Partition) -> tuple[str, str, str]:
        parent, name = self._name(conn, part.parent_schema, part.parent), self._name(conn, part.schema, part.name)
        # EXCLUSIVE on the partition alone while its rows are counted again: no row can be written
        # to it or locked for a foreign-key check, and the application's plain reads go on; the
        # partitioned table is locked (ACCESS EXCLUSIVE) only by DETACH itself, for the instant
        # before COMMIT. Not DETACH ... CONCURRENTLY: that cannot run inside a transaction, and
        # this one must be able to roll back.
        return (f"LOCK TABLE {name} IN EXCLUSIVE MODE",
                f"ALTER TABLE {parent} DETACH PARTITION {name}",
                f"DROP TABLE {name}")

    def owners(self, conn, tables):
        out = {}
        for schema, name in tables:
            owner = conn.execute(sa.text(
                "SELECT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = coalesce(:schema, current_schema()) AND c.relname = :name"),
                {"schema": schema, "name": name}).scalar()
            if owner is not None:
                out[(schema, name)] = owner
        return out

    def values_in(self, column: ColumnElement, keys: list) -> ColumnElement:
        # one array parameter however many keys: nothing to compile or bind per key, and
        # the index is searched with the array's values as an IN list would be
        if isinstance(column.type, sa.types.NullType):      # a type reflection did not know: no array cast
            return super().values_in(column, keys)
        return column == sa.any_(sa.bindparam(None, list(keys), type_=ARRAY(column.type)))

    def row_values_in(self, columns: list, keys: list[tuple]) -> ColumnElement:
        # one array per column, unnested side by side: as many parameters as columns, and no
        # row-value list for the parser to recurse through (it overflows past a few thousand)
        arrays = [sa.bindparam(None, [k[i] for k in keys], type_=ARRAY(c.type)) for i, c in enumerate(columns)]
        rows = sa.func.unnest(*arrays).table_valued(*(f"k{i}" for i in range(len(columns)))).render_derived()
        return sa.tuple_(*columns).in_(sa.select(*rows.c))

    def floor_to_multiple(self, col: ColumnElement, step: Decimal) -> ColumnElement | None:
        # numeric % is exact here, so NUMERIC columns floor exactly too (not floats:
        # their Python path needs care with binary rounding that SQL can't mirror)
        t = col.type
        if isinstance(t, sa.Numeric) and not isinstance(t, sa.Float) and t.asdecimal:
            s = sa.literal(step, sa.Numeric())
            return sa.cast(col - ((col % s) + s) % s, t)
        return super().floor_to_multiple(col, step)

    def truncate_datetime(self, col: ColumnElement, unit: str) -> ColumnElement | None:
        # date_trunc works in the session time zone, as the Python path does with
        # the zone-aware values psycopg returns; the cast keeps DATE a DATE
        if isinstance(col.type, (sa.Date, sa.DateTime)):
            return sa.cast(sa.func.date_trunc(sa.literal(unit, sa.Text), col), col.type)
        return None

    def hex_token_match(self, col: ColumnElement, prefix: str, length: int) -> ColumnElement | None:
        return col.op("~", is_comparison=True)(sa.literal(f"^{prefix}[0-9a-f]{{{length}}}$", sa.Text))

    def readable_datetime(self, col: ColumnElement) -> ColumnElement | None:
        # Python's dates stop at years 1 and 9999; PostgreSQL's go to 4713 BC and 294276 AD,
        # plus +-infinity, which psycopg cannot load. The bounds are read in the session
        # time zone, as psycopg reads a timestamptz.
        if not isinstance(col.type, (sa.Date, sa.DateTime)):
            return None
        low = sa.cast(sa.literal("0001-01-01 00:00:00", sa.Text), col.type)
        high = sa.cast(sa.literal("9999-12-31 23:59:59.999999", sa.Text), col.type)
        return sa.and_(col >= low, col <= high)
