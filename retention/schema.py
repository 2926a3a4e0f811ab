"""Reflect the live databases and bind the policy file to them.

:class:`Catalog` holds the reflected tables and the foreign-key graph of every
database named in ``[databases]``.  :func:`bind` checks every table, column,
clock path, strategy and ``on_parent_delete`` of the policy against it and
raises one :class:`~retention.errors.ConfigErrors` listing every problem, so
``retention check`` reports them all at once and nothing runs on a bad file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from retention.anonymize import ColumnInfo, Strategy, StrategyParamError, build
from retention.config import Config, split_table
from retention.dialects import DialectImpl, impl_for
from retention.dialects.drivers import create_engine
from retention.errors import ConfigError, ConfigErrors

PARENT_ACTIONS = ("delete", "detach", "block")


@dataclass(frozen=True)
class ForeignKey:
    """``child.columns -> parent.parent_columns``: one key, of one column or several."""

    child: str                      # "shop.orders"
    columns: tuple[str, ...]        # ("user_id",)
    parent: str                     # "shop.users"
    parent_columns: tuple[str, ...]  # ("id",)
    nullable: bool                  # every column may be NULL

    @property
    def column(self) -> str:
        """The key's column as policies and reports name it ("user_id", or "pay_id, pay_at")."""
        return ", ".join(self.columns)

    @property
    def parent_column(self) -> str:
        return ", ".join(self.parent_columns)

    @property
    def via(self) -> str:
        return f"{self.child}.{self.column} -> {self.parent}"

    def link(self, child: sa.FromClause, parent: sa.FromClause) -> sa.ColumnElement:
        """``child`` row references ``parent`` row through this key."""
        return sa.and_(*(child.c[c] == parent.c[p] for c, p in zip(self.columns, self.parent_columns)))

    def child_key(self, child: sa.FromClause) -> sa.ColumnElement:
        """The key's columns on ``child``: one column, or a row value for ``IN``."""
        cols = [child.c[c] for c in self.columns]
        return cols[0] if len(cols) == 1 else sa.tuple_(*cols)


@dataclass
class BoundTable:
    key: str            # "shop.users"
    db: str
    table: sa.Table

    @property
    def pk(self) -> sa.Column | None:
        """The first primary-key column (``pk_columns`` has them all), or None without a key."""
        cols = list(self.table.primary_key.columns)
        return cols[0] if cols else None

    @property
    def pk_columns(self) -> tuple[sa.Column, ...]:
        return tuple(self.table.primary_key.columns)

    def column(self, name: str) -> sa.Column | None:
        return self.table.c.get(name)


def policy_tables(model) -> set[str]:
    """Every table a policy names: rules, holds, floors, subjects, ``[tables.*]`` and subject paths."""
    names = {r.table for r in model.rules} | {h.table for h in model.holds} | {f.table for f in model.floors}
    names |= {s.table for s in model.subjects.values()} | set(model.tables)
    for ref, tc in model.tables.items():
        db = split_table(ref)[0]
        for step in tc.subject_path or []:
            if "->" in step:
                target = step.split("->", 1)[1].strip().rpartition(".")[0]
                names.add(target if target.count(".") else f"{db}.{target}")
    return names


class Catalog:
    """Reflected tables and foreign keys of the policy's databases.

    Only what the policy can reach is reflected: the tables it names, every
    table below them (children a delete cascades to or is blocked by) and
    every table above those (clocks, hold paths, subjects).  The foreign-key
    graph that decides this is read with a few catalog queries per database
    (:meth:`DialectImpl.catalog_graph`), so unrelated tables cost nothing.
    ``needed=None`` reflects everything.

    A PostgreSQL partitioned table is one table here: its partitions are not
    tables of their own, and a foreign key declared on a partition is counted
    as one of the partitioned table (``check`` warns when a sibling lacks it).
    """

    def __init__(self, engines: Mapping[str, Engine], needed: set[str] | None = None) -> None:
        self.engines = dict(engines)
        self.tables: dict[str, BoundTable] = {}
        self.fks: list[ForeignKey] = []
        #: every table of each database, reflected or not (for messages)
        self.names: dict[str, list[str]] = {}
        #: partition key -> partitioned table key
        self.partition_of: dict[str, str] = {}
        #: partitioned tables (PostgreSQL), with or without partitions yet
        self.partitioned: set[str] = set()
        self.warnings: list[str] = []
        self._below: dict[str, frozenset[str]] = {}
        for db, engine in self.engines.items():
            self._load(db, engine, needed)

    def _load(self, db: str, engine: Engine, needed: set[str] | None) -> None:
        graph = impl_for(engine).catalog_graph(engine)

        def key(ref) -> str:
            # the default schema's tables are "db.table"; others are "db.schema.table"
            schema, name = ref
            return f"{db}.{name}" if schema is None else f"{db}.{schema}.{name}"

        self.names[db] = sorted(key(t) for t in graph.tables)
        root = {key(p): key(r) for p, r in graph.partitions.items()}
        self.partition_of.update(root)
        self.partitioned.update(key(r) for r in graph.partitioned)
        known = set(self.names[db])
        fks: dict[ForeignKey, None] = {}
        declared_on: dict[str, set[tuple]] = {}       # partition -> keys declared on it
        for raw in graph.fks:
            child, parent = key(raw.child), key(raw.parent)
            if child in root:
                declared_on.setdefault(child, set()).add((raw.columns, root.get(parent, parent), raw.parent_columns))
            child, parent = root.get(child, child), root.get(parent, parent)
            if child not in known or parent not in known or len(raw.columns) != len(raw.parent_columns):
                continue
            fk = ForeignKey(child, raw.columns, parent, raw.parent_columns, raw.nullable)
            # the same key declared on several partitions is one key of the partitioned table
            fks.setdefault(fk, None)
        scope = known if needed is None else _closure({n for n in needed if n in known}, list(fks))
        for fk in fks:
            if fk.child in scope and fk.parent in scope:
                self.fks.append(fk)
        self._partition_warnings(graph, key, root, declared_on, scope)
        by_schema: dict[str | None, list[str]] = {}
        for ref in graph.tables:
            if key(ref) in scope:
                by_schema.setdefault(ref[0], []).append(ref[1])
        md = sa.MetaData()
        for schema, names in by_schema.items():
            # our own graph has the foreign keys: SQLAlchemy need not chase them (it would
            # reflect every partition a key points at)
            md.reflect(bind=engine, schema=schema, only=names, resolve_fks=False)
        for table in md.tables.values():
            k = key((table.schema, table.name))
            self.tables[k] = BoundTable(k, db, table)

    def _partition_warnings(self, graph, key, root: dict[str, str], declared_on: dict, scope: set[str]) -> None:
        """A key some partitions declare and a sibling lacks: the database does not enforce it there."""
        leaves: dict[str, list] = {}
        for part in sorted(graph.leaf_partitions, key=lambda r: key(r)):
            if root[key(part)] in scope:
                leaves.setdefault(root[key(part)], []).append(part)
        for table, parts in leaves.items():
            has = {}
            for part in parts:
                # a key declared on an intermediate partitioned table reaches the partitions below it
                has[key(part)] = set().union(*(declared_on.get(key(p), set())
                                               for p in [part, *graph.partition_parents.get(part, [])]))
            for cols, parent, pcols in sorted(set().union(*has.values())):
                lacking = [p for p, keys in has.items() if (cols, parent, pcols) not in keys]
                if lacking:
                    self.warnings.append(
                        f"partition{'s' if len(lacking) > 1 else ''} {', '.join(lacking)} of {table} "
                        f"lack{'' if len(lacking) > 1 else 's'} the foreign key ({', '.join(cols)}) -> {parent} "
                        f"that {len(parts) - len(lacking)} of its {len(parts)} partitions declare: the database "
                        f"does not enforce it there, so rows there may point at nothing; the job follows the "
                        f"key on every partition alike")

    def impl(self, db: str) -> DialectImpl:
        return impl_for(self.engines[db])

    def get(self, key: str) -> BoundTable | None:
        return self.tables.get(key)

    def children_of(self, key: str) -> list[ForeignKey]:
        """Foreign keys that point at ``key``, in (child table, column) order: reports stay stable."""
        return sorted((fk for fk in self.fks if fk.parent == key), key=lambda fk: (fk.child, fk.columns))

    def below(self, key: str) -> frozenset[str]:
        """``key`` and every table with a foreign-key path up to it (worked out once per table)."""
        if key not in self._below:
            self._below[key] = frozenset(_reach({key}, _edges(self.fks)[0]))
        return self._below[key]

    def parents_of(self, key: str) -> list[ForeignKey]:
        return sorted((fk for fk in self.fks if fk.child == key), key=lambda fk: (fk.parent, fk.columns))


def _closure(start: set[str], fks: list[ForeignKey]) -> set[str]:
    """The policy's tables, every table below them, and every table above any of those."""
    children, parents = _edges(fks)
    return _reach(_reach(start, children), parents)


def _edges(fks: list[ForeignKey]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The foreign keys as (parent -> its children, child -> its parents)."""
    children: dict[str, set[str]] = {}
    parents: dict[str, set[str]] = {}
    for fk in fks:
        children.setdefault(fk.parent, set()).add(fk.child)
        parents.setdefault(fk.child, set()).add(fk.parent)
    return children, parents


def _reach(seeds: set[str], edges: dict[str, set[str]]) -> set[str]:
    """``seeds`` and every table reached from them along ``edges``."""
    seen, stack = set(seeds), list(seeds)
    while stack:
        for nxt in edges.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def make_engine(url: str, settings=None) -> Engine:
    """An engine for an application database, prepared by its dialect (see DialectImpl.prepare_engine)."""
    engine = create_engine(url)
    impl_for(engine).prepare_engine(engine, settings)
    return engine


def column_info(table: sa.Table, name: str) -> ColumnInfo:
    col = table.c[name]
    unique = bool(col.primary_key)
    for cons in table.constraints:
        if isinstance(cons, sa.UniqueConstraint) and [c.name for c in cons.columns] == [name]:
            unique = True
    for idx in table.indexes:
        if idx.unique and [c.name for c in idx.columns] == [name]:
            unique = True
    return ColumnInfo(name=name, type=col.type, nullable=bool(col.nullable), unique=unique,
                      length=getattr(col.type, "length", None), primary_key=bool(col.primary_key))


def is_temporal(col: sa.Column) -> bool:
    try:
        return col.type.python_type in (datetime, date)
    except NotImplementedError:
        return False


# --- resolving names --------------------------------------------------------

def _hop_matches(fk: ForeignKey, hop: str) -> bool:
    parent_table = fk.parent.rsplit(".", 1)[1]
    candidates = {hop, f"{hop}s", f"{hop}es"}
    if hop.endswith("y"):
        candidates.add(hop[:-1] + "ies")
    return fk.column in (hop, f"{hop}_id") or parent_table in candidates


def resolve_hop(catalog: Catalog, table_key: str, hop: str) -> ForeignKey:
    """The foreign key of ``table_key`` that a path segment such as ``merchant`` names."""
    matches = [fk for fk in catalog.parents_of(table_key) if _hop_matches(fk, hop)]
    exact = [fk for fk in matches if fk.column in (hop, f"{hop}_id")]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        fks = ", ".join(fk.column for fk in catalog.parents_of(table_key)) or "none"
        raise LookupError(f"'{hop}' names no foreign key of {table_key} (foreign keys: {fks})")
    raise LookupError(f"'{hop}' is ambiguous in {table_key}: " + ", ".join(fk.column for fk in matches))


@dataclass(frozen=True)
class ColumnPath:
    """A column on the row itself (``hops == ()``) or on a parent reached by foreign keys."""

    table: str
    hops: tuple[ForeignKey, ...]
    column: str

    @property
    def target_table(self) -> str:
        return self.hops[-1].parent if self.hops else self.table


def resolve_column_path(catalog: Catalog, table_key: str, path: str) -> ColumnPath:
    parts = path.split(".")
    hops: list[ForeignKey] = []
    current = table_key
    for hop in parts[:-1]:
        fk = resolve_hop(catalog, current, hop)
        hops.append(fk)
        current = fk.parent
    bound = catalog.get(current)
    if bound is None or bound.column(parts[-1]) is None:
        raise LookupError(f"no column '{parts[-1]}' in {current}")
    return ColumnPath(table_key, tuple(hops), parts[-1])


MAX_SUBJECT_PATHS = 64


def subject_paths(catalog: Catalog, table_key: str, subject_table: str, subject_key: str,
                  override: list[str] | None = None) -> list[tuple[tuple[ForeignKey, ...], str]]:
    """Every way to find a row's subject key: (foreign-key hops, column on the last table).

    On the subject table itself the key is the row's own key.  Elsewhere every
    foreign-key path (any length, no table visited twice) that ends at the
    subject table counts: a hold protects a row if any of its subjects is
    held.  A schema so meshed that more than ``MAX_SUBJECT_PATHS`` paths exist
    is refused (LookupError): name the path with ``subject_path`` instead.
    """
    if override is not None:
        hops = tuple(_explicit_hops(catalog, table_key, override))
        if not hops or hops[-1].parent != subject_table:
            raise LookupError(f"subject_path of {table_key} must end at the subject table {subject_table}")
        return [(hops, subject_key)]
    if table_key == subject_table:
        return [((), subject_key)]
    found: list[tuple[tuple[ForeignKey, ...], str]] = []
    reaching = catalog.below(subject_table)
    if table_key not in reaching:
        return found

    def walk(current: str, hops: tuple[ForeignKey, ...], seen: frozenset[str]) -> None:
        if len(found) > MAX_SUBJECT_PATHS:
            raise LookupError(f"more than {MAX_SUBJECT_PATHS} foreign-key paths lead from {table_key} to "
                              f"{subject_table}; name the path with [tables.\"{table_key}\"] subject_path")
        for fk in catalog.parents_of(current):
            if fk.parent in seen or fk.parent not in reaching:
                continue    # a table no key path leads up from to the subject: nothing to find above it
            if fk.parent == subject_table:
                # whatever column the key points at, the path reaches the subject's row;
                # the planner reads the subject key from that row (see Planner.held)
                found.append((hops + (fk,), subject_key))
                continue
            walk(fk.parent, hops + (fk,), seen | {fk.parent})

    walk(table_key, (), frozenset({table_key}))
    # every path counts, detours included: a hold must see every subject of the row
    return found


#: how many foreign keys a subject's row may follow to the rows it owns (its address, its profile's photo)
MAX_OWNED_HOPS = 3


def owner_paths(catalog: Catalog, table_key: str, subject_table: str) -> list[tuple[ForeignKey, ...]]:
    """Every way a subject's own row reaches a row of ``table_key`` through the subject's foreign keys.

    A held user's address is held too: ``users.address_id -> addresses.id``
    makes the address the user's data although it does not reference the
    user.  Each path is a chain of foreign keys read from ``table_key``
    downwards: the first points at ``table_key``, each next one at the
    previous one's child, the last one's child is the subject table.  At most
    ``MAX_OWNED_HOPS`` keys long, no table twice.
    """
    if table_key == subject_table:
        return []
    found: list[tuple[ForeignKey, ...]] = []

    def walk(current: str, hops: tuple[ForeignKey, ...], seen: frozenset[str]) -> None:
        if len(hops) >= MAX_OWNED_HOPS:
            return
        for fk in catalog.children_of(current):
            if fk.child in seen:
                continue
            if fk.child == subject_table:
                found.append(hops + (fk,))
                if len(found) > MAX_SUBJECT_PATHS:
                    raise LookupError(f"more than {MAX_SUBJECT_PATHS} foreign-key paths lead from {subject_table} "
                                      f"to {table_key}; name the path with [tables.\"{table_key}\"] subject_path")
                continue
            walk(fk.child, hops + (fk,), seen | {fk.child})

    walk(table_key, (), frozenset({table_key}))
    return found


def _explicit_hops(catalog: Catalog, table_key: str, override: list[str]) -> list[ForeignKey]:
    """``subject_path = ["order_id", "user_id -> users.id"]``: hop by column, FK or explicit."""
    hops: list[ForeignKey] = []
    current = table_key
    db = split_table(table_key)[0]
    for step in override:
        if "->" in step:
            col, target = (s.strip() for s in step.split("->", 1))
            ttable, _, tcol = target.rpartition(".")
            parent = ttable if ttable.count(".") else f"{db}.{ttable}"
            fk = ForeignKey(current, (col,), parent, (tcol,), True)
        else:
            matches = [fk for fk in catalog.parents_of(current) if fk.column == step.strip()]
            if not matches:
                raise LookupError(f"'{step}' is not a foreign-key column of {current}; write '{step} -> table.column'")
            fk = matches[0]
        if split_table(fk.parent)[0] != db:
            # holds and requests join the path in one database's SQL: a step into another
            # database could never be followed, and holds would silently protect nothing
            raise LookupError(f"'{step}' leads into another database ('{split_table(fk.parent)[0]}'): a subject "
                              f"path must stay in {table_key}'s database '{db}'")
        bound, parent = catalog.get(current), catalog.get(fk.parent)
        if bound is None or bound.column(fk.column) is None:
            raise LookupError(f"no column '{fk.column}' in {current}")
        if parent is None or parent.column(fk.parent_column) is None:
            raise LookupError(f"no column '{fk.parent_column}' in {fk.parent}")
        hops.append(fk)
        current = fk.parent
    return hops


# --- binding ----------------------------------------------------------------

def _check_partitions(catalog: Catalog, ref: str, value: str, where: str, err) -> None:
    """``partitions = "detach" | "drop"`` only where the job can do it: a partitioned table on
    an engine that detaches partitions (PostgreSQL); elsewhere refused, never ignored."""
    impl = catalog.impl(split_table(ref)[0])
    if not impl.drops_partitions:
        err(f'partitions = "{value}" is built for PostgreSQL partitioned tables; {ref} is on {impl.name}, '
            f'where its rows are deleted row by row: remove the key (or set partitions = "delete")',
            where, "partitions")
    elif ref not in catalog.partitioned:
        err(f'partitions = "{value}" applies to a partitioned table; {ref} is not one: remove the key',
            where, "partitions")


@dataclass
class Binding:
    """The policy bound to the live schema: what the planner needs, all checked."""

    config: Config
    catalog: Catalog
    strategies: dict[str, dict[str, Strategy]] = field(default_factory=dict)   # rule -> column -> strategy
    warnings: list[str] = field(default_factory=list)

    def parent_action(self, fk: ForeignKey) -> str:
        tc = self.config.model.tables.get(fk.child)
        if tc is None:
            return "block"
        if isinstance(tc.on_parent_delete, str):
            return tc.on_parent_delete
        # a multi-column key is named by all its columns ("pay_id, pay_at") or by any one of them
        for name in (fk.column, *fk.columns):
            if name in tc.on_parent_delete:
                return tc.on_parent_delete[name]
        return "block"

    def subject_override(self, table_key: str) -> list[str] | None:
        tc = self.config.model.tables.get(table_key)
        return tc.subject_path if tc else None


def bind(config: Config, catalog: Catalog, env: Mapping[str, str], *, need_keys: bool = True) -> Binding:
    """Check the policy against the reflected schema; raise ConfigErrors listing every problem."""
    b = Binding(config, catalog)
    b.warnings.extend(catalog.warnings)
    errors: list[ConfigError] = []
    model = config.model

    def err(msg: str, where: str, key: str) -> None:
        errors.append(config.error(msg, where, key))

    def table(ref: str, where: str, key: str = "table") -> BoundTable | None:
        bound = catalog.get(ref)
        if bound is None and ref in catalog.partition_of:
            err(f"'{ref}' is a partition of {catalog.partition_of[ref]}: name the partitioned table; "
                "what is written for it covers every partition", where, key)
        elif bound is None:
            db = split_table(ref)[0]
            names = sorted(k.split(".", 1)[1] for k in catalog.names.get(db, []))
            err(f"table '{ref}' does not exist (tables in {db}: {', '.join(names) or 'none'})", where, key)
        return bound

    def column(bound: BoundTable, name: str, where: str, key: str) -> sa.Column | None:
        col = bound.column(name)
        if col is None:
            err(f"column '{name}' does not exist in {bound.key} "
                f"(columns: {', '.join(c.name for c in bound.table.columns)})", where, key)
        return col

    def where_columns(bound: BoundTable, where_map: Mapping, where: str, key: str) -> None:
        for name in where_map:
            column(bound, name, where, f"{key}.{name}")

    def clock(bound: BoundTable, path: str, where: str, key: str = "clock") -> None:
        try:
            cp = resolve_column_path(catalog, bound.key, path)
        except LookupError as e:
            err(str(e), where, key)
            return
        col = catalog.tables[cp.target_table].table.c[cp.column]
        if not is_temporal(col):
            err(f"'{path}' is a {col.type} column; a clock must be a date or timestamp", where, key)

    for name, subj in model.subjects.items():
        bound = table(subj.table, f"[subjects.{name}]")
        if bound is not None:
            column(bound, subj.key, f"[subjects.{name}]", "key")

    for ref, tc in model.tables.items():
        where = f'[tables."{ref}"]'
        bound = table(ref, where)
        if bound is None:
            continue
        if isinstance(tc.on_parent_delete, Mapping):
            fk_cols = {name for fk in catalog.parents_of(ref) for name in (fk.column, *fk.columns)}
            for col_name in tc.on_parent_delete:
                if col_name not in fk_cols:
                    err(f"'{col_name}' is not a foreign-key column of {ref} (foreign keys: "
                        f"{', '.join(sorted(fk_cols)) or 'none'})", where, f"on_parent_delete.{col_name}")
        for fk in catalog.parents_of(ref):
            if b.parent_action(fk) == "detach" and not fk.nullable:
                err(f"cannot detach: {fk.child}.{fk.column} is NOT NULL; use 'delete' or 'block'",
                    where, "on_parent_delete")
        if tc.partitions != "delete":
            _check_partitions(catalog, ref, tc.partitions, where, err)
        if tc.subject_path is not None:
            try:
                hops = _explicit_hops(catalog, ref, tc.subject_path)
                subject_tables = {s.table for s in model.subjects.values()}
                if not hops or hops[-1].parent not in subject_tables:
                    err(f"the path must end at a subject table ({', '.join(sorted(subject_tables)) or 'none'})",
                        where, "subject_path")
            except LookupError as e:
                err(str(e), where, "subject_path")

    for rule in model.rules:
        where = f"rule '{rule.name}'"
        bound = table(rule.table, where)
        if bound is None:
            continue
        if bound.pk is None:
            err(f"{rule.table} needs a primary key (of one column or several) for batching", where, "table")
        clock(bound, rule.clock, where)
        where_columns(bound, rule.where, where, "where")
        if rule.action == "restrict":
            column(bound, rule.restrict_column, where, "restrict_column")
        if rule.mark:
            column(bound, rule.mark, where, "mark")
        if rule.action == "delete":
            _check_cycles(b, bound.key, where, err)
        strategies: dict[str, Strategy] = {}
        for col_name, spec in rule.columns.items():
            if column(bound, col_name, where, f"columns.{col_name}") is None:
                continue
            try:
                strat = build(spec)
                if need_keys:
                    strat.bind(env)
            except StrategyParamError as e:
                err(e.message, where, f"columns.{col_name}" + (f".{e.key}" if e.key != "strategy" else ""))
                continue
            for problem in strat.conflicts(column_info(bound.table, col_name)):
                err(problem, where, f"columns.{col_name}")
            referencing = [fk for fk in catalog.children_of(bound.key) if col_name in fk.parent_columns]
            if referencing:
                err(f"column '{col_name}' is referenced by {', '.join(f'{fk.child}.{fk.column}' for fk in referencing)}; "
                    "rewriting it would break or silently rewrite those rows", where, f"columns.{col_name}")
            strategies[col_name] = strat
        if rule.check is not None:
            for qi in rule.check.quasi_identifiers:
                column(bound, qi, where, "check.quasi_identifiers")
        b.strategies[rule.name] = strategies

    for hold in model.holds:
        where = f"hold '{hold.name}'"
        bound = table(hold.table, where)
        subject = model.subjects.get(hold.subject)
        if subject is not None and split_table(subject.table)[0] != split_table(hold.table)[0]:
            # a register in another database cannot be joined in SQL: refusing beats protecting nothing
            err(f"the hold register must be in the subject's database '{split_table(subject.table)[0]}'",
                where, "table")
            continue
        if bound is not None:
            column(bound, hold.subject_column, where, "subject_column")
            where_columns(bound, hold.active_where, where, "active_where")

    for floor in model.floors:
        where = f"floor '{floor.name}'"
        bound = table(floor.table, where)
        if bound is None:
            continue
        clock(bound, floor.clock, where)
        where_columns(bound, floor.where, where, "where")
        for col_name in floor.columns or []:
            column(bound, col_name, where, "columns")

    if not errors:
        _check_rules_together(b, err)
        _check_hold_reach(b)
        _check_fk_indexes(b)
    if errors:
        raise ConfigErrors(errors)
    return b


def _check_rules_together(b: Binding, err) -> None:
    """What no single rule shows: rules that would undo each other, rows that could never fall due."""
    anonymize = [r for r in b.config.rules if r.action == "anonymize" and r.enabled]
    writers: dict[tuple[str, str], tuple[str, str]] = {}
    marks: dict[tuple[str, str], tuple[str, frozenset]] = {}
    for rule in anonymize:
        where = f"rule '{rule.name}'"
        for column, strategy in b.strategies.get(rule.name, {}).items():
            first = writers.setdefault((rule.table, column), (rule.name, strategy.describe()))
            # NULL is done for every strategy, so 'null' settles with anything
            if first[1] != strategy.describe() and "null" not in (first[1], strategy.name):
                err(f"rule '{first[0]}' also anonymizes this column, as {first[1]}: the two would "
                    "overwrite each other on every run; use one strategy", where, f"columns.{column}")
        if rule.mark:
            cols = frozenset(rule.columns)
            first = marks.setdefault((rule.table, rule.mark), (rule.name, cols))
            if first[1] != cols:
                err(f"rule '{first[0]}' sets the same mark for other columns: a row one rule marked "
                    "would count as done for the other; give each rule its own mark column", where, "mark")
    marked = {(r.table, r.mark): r.name for r in anonymize if r.mark}
    for rule in b.config.rules:
        anonymizer = marked.get((rule.table, rule.restrict_column)) if rule.action == "restrict" else None
        if rule.enabled and anonymizer:
            err(f"restrict_column '{rule.restrict_column}' is the mark of anonymize rule '{anonymizer}': a row "
                "this rule restricts would count as anonymized and never be; give each its own column",
                f"rule '{rule.name}'", "restrict_column")
    for rule in b.config.rules:
        try:
            cp = resolve_column_path(b.catalog, rule.table, rule.clock)
        except LookupError:
            continue
        for fk in cp.hops:
            if b.parent_action(fk) == "detach":
                b.warnings.append(
                    f"rule '{rule.name}': its clock goes through {fk.child}.{fk.column}, which a delete "
                    f"cascade may detach (on_parent_delete = \"detach\"): detached rows have no clock and "
                    f"never fall due under this rule")
    delete_tables = {r.table for r in b.config.rules if r.action == "delete" and r.enabled}
    for parent in sorted(delete_tables):
        children = b.catalog.children_of(parent)
        for child in sorted({fk.child for fk in children}):
            actions = {b.parent_action(fk) for fk in children if fk.child == child}
            if "delete" in actions and "block" in actions:
                b.warnings.append(
                    f"{child} references {parent} twice, one key deleting and one blocking: deleting one "
                    f"row of {parent} can unblock another, which the next run then deletes")


def _check_hold_reach(b: Binding) -> None:
    """Warn about rule tables no hold can reach: no foreign-key path leads to a held subject."""
    model = b.config.model
    held = sorted({h.subject for h in model.holds if h.subject in model.subjects})
    if not held:
        return
    rules_on: dict[str, list[str]] = {}
    for rule in b.config.rules:
        rules_on.setdefault(rule.table, []).append(rule.name)
    for table, rules in rules_on.items():
        if b.subject_override(table) is not None:
            continue
        reached = False
        for name in held:
            subject = model.subjects[name]
            if split_table(subject.table)[0] != split_table(table)[0]:
                continue
            try:
                reached = (table == subject.table
                           or bool(subject_paths(b.catalog, table, subject.table, subject.key))
                           or bool(owner_paths(b.catalog, table, subject.table)))
            except LookupError:
                reached = True     # too many paths: planning names the problem
            if reached:
                break
        if not reached:
            b.warnings.append(
                f"{table} (rule{'s' if len(rules) > 1 else ''} {', '.join(repr(r) for r in rules)}): no foreign key "
                f"leads from it to a held subject ({', '.join(held)}), so no hold can protect its rows; if they "
                f"belong to a subject, name the way with [tables.\"{table}\"] subject_path")


def _check_fk_indexes(b: Binding) -> None:
    """Warn about foreign keys a delete follows that no index begins with.

    A cascade or a blocking check looks children up by the key for every
    batch; without an index that is a scan of the whole child table each time.
    """
    seen: set[ForeignKey] = set()
    for rule in b.config.rules:
        if rule.action != "delete" or not rule.enabled:
            continue
        stack, visited = [rule.table], {rule.table}
        while stack:
            for fk in b.catalog.children_of(stack.pop()):
                action = b.parent_action(fk)
                child = b.catalog.get(fk.child)
                if fk not in seen and child is not None and not indexed(child.table, fk.columns):
                    seen.add(fk)
                    b.warnings.append(
                        f"{fk.child}.{fk.column}: no index begins with this foreign key, which rule "
                        f"'{rule.name}' follows ({action}): every batch scans {fk.child} for it; "
                        f"an index on ({fk.column}) avoids that")
                if action == "delete" and fk.child not in visited:
                    visited.add(fk.child)
                    stack.append(fk.child)


def indexed(table: sa.Table, columns: tuple[str, ...]) -> bool:
    """Some index, primary key or unique constraint begins with exactly these columns (any order)."""
    leads = [[c.name for c in table.primary_key.columns]]
    leads += [[c.name for c in idx.columns] for idx in table.indexes]
    leads += [[c.name for c in cons.columns] for cons in table.constraints if isinstance(cons, sa.UniqueConstraint)]
    return any(len(lead) >= len(columns) and set(lead[:len(columns)]) == set(columns) for lead in leads)


def _check_cycles(b: Binding, start: str, where: str, err) -> None:
    """A delete that cascades around a foreign-key cycle has no safe order: refuse it."""

    def walk(key: str, path: tuple[str, ...]) -> None:
        for fk in b.catalog.children_of(key):
            if b.parent_action(fk) != "delete":
                continue
            if fk.child in path:
                err(f"deleting cascades around a foreign-key cycle ({' -> '.join(path + (fk.child,))}); "
                    f"set on_parent_delete = \"detach\" or \"block\" for {fk.child}", where, "table")
                continue
            walk(fk.child, path + (fk.child,))

    walk(start, (start,))
