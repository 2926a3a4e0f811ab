"""What the job's login must be allowed to do, derived from the plans, and what it lacks.

Each rule's needs are read off its built :class:`~retention.plan.RulePlan`,
the very statements a run executes, so they cannot drift from what runs:

* **read** (``SELECT``) every column its predicates touch: the rule's table,
  clock parents, hold registers and the paths to them, floor tables,
  blocking children, and every table its delete cascade reaches;
* **lock**: a delete that locks its batch (``SELECT ... FOR UPDATE``) needs,
  on PostgreSQL, ``UPDATE`` on at least one column of the rule's table;
* **update** the anonymized columns and the ``mark``, the ``restrict_column``,
  and each foreign-key column a cascade detaches (column-level grants count);
* **delete** from the rule's table and every table its cascade deletes from;
* **usage** on every schema involved;
* **ownership** of a partitioned table whose partitions a rule detaches or
  drops (``partitions = "detach" | "drop"``), and of each of its partitions:
  PostgreSQL allows DETACH and DROP to the owner only.

:func:`check` asks each database what its login lacks (``dialects/``: grants
on PostgreSQL, a writable file on SQLite) and returns every missing grant at
once, each with the statement that would grant it::

    GRANT DELETE ON public.payments TO retention_job;
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.sql import visitors

from retention.errors import RetentionError
from retention.execute import cascade_selections, plan_table
from retention.execute.batch import _locks_parents
from retention.execute.partitions import applies as takes_partitions
from retention.plan import RulePlan, walk

#: privileges in the order they are listed
KINDS = ("USAGE", "SELECT", "LOCK", "UPDATE", "DELETE", "OWNER")


@dataclass(frozen=True)
class Need:
    """One privilege one rule needs on one table (or schema, for ``USAGE``)."""

    db: str
    kind: str                        # USAGE | SELECT | LOCK | UPDATE | DELETE | OWNER
    schema: str | None               # None: the connection's default schema
    table: str | None                # None for USAGE
    columns: tuple[str, ...] = ()    # SELECT and UPDATE: the columns used; LOCK: candidates
    why: str = ""


@dataclass
class Missing:
    """A privilege the login lacks, the statement that grants it, and the rules that need it."""

    db: str
    kind: str
    target: str                      # "public.payments" or "schema legal"
    statement: str
    why: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.statement}  -- [databases.{self.db}] {'; '.join(self.why)}"


class MissingPrivileges(RetentionError):
    """The job's login cannot do what the policy needs: a runtime failure (exit 1), not a bad file."""

    exit_code = 1

    def __init__(self, missing: list[Missing]) -> None:
        self.missing = missing
        lines = [f"the job's login lacks {len(missing)} privilege(s) the policy needs; each line says how "
                 f"to grant one, and why it is needed:"]
        lines += [f"  {m}" for m in missing]
        super().__init__("\n".join(lines))


@dataclass
class PrivilegeReport:
    """What :func:`check` found: notes per database (e.g. SQLite has no grants) and every missing grant."""

    notes: list[str] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing


# --- what the plans need --------------------------------------------------------

def _base_table(obj) -> sa.Table | None:
    """The table behind a table, an alias of one, or an alias of an alias."""
    while obj is not None and not isinstance(obj, sa.Table):
        obj = getattr(obj, "element", None)
    return obj


def _columns_read(*exprs) -> dict[sa.Table, set[str]]:
    """Every table column the expressions reference, by base table (aliases resolved)."""
    found: dict[sa.Table, set[str]] = {}
    for expr in exprs:
        if expr is None:
            continue
        for el in visitors.iterate(expr):
            if isinstance(el, sa.Column) and el.table is not None:
                table = _base_table(el.table)
                if table is not None and el.name in table.c:
                    found.setdefault(table, set()).add(el.name)
            elif isinstance(el, sa.Table):
                found.setdefault(el, set())
    return found


def needs(plans: Iterable[RulePlan]) -> list[Need]:
    """Every privilege the plans' statements need, one :class:`Need` per (rule, table, kind)."""
    out: list[Need] = []
    for p in plans:
        db, t, rule = p.table.db, p.table.table, p.rule
        who = f"rule '{rule.name}'"
        reads = [p.work, p.due, p.clock, *p.pk_columns, *(pr.predicate for pr in p.protectors), *p.forecast.values()]
        for v in p.variants:
            reads += [v.predicate, *(t.c[c] for c in v.strategies)]
        for child, link in cascade_selections(p):
            reads += [child, link]
        for table, cols in sorted(_columns_read(*reads).items(), key=lambda tc: (tc[0].schema or "", tc[0].name)):
            out.append(Need(db, "SELECT", table.schema, table.name, tuple(sorted(cols)), f"{who} reads it"))
        if rule.action == "delete":
            out.append(Need(db, "DELETE", t.schema, t.name, why=f"{who} deletes from it"))
            if takes_partitions(p):
                out.append(Need(db, "OWNER", t.schema, t.name,
                                why=f'{who} detaches whole partitions (partitions = "{p.partitions}"), which '
                                    f'only the owner of the table and of each partition may do'))
            if _locks_parents(p) and p.impl.supports_for_update:
                out.append(Need(db, "LOCK", t.schema, t.name, (p.pk_columns[0].name,),
                                f"{who} locks its batch (SELECT ... FOR UPDATE)"))
            for step in walk(p.cascade):
                child = plan_table(p, step.fk.child)
                if step.action == "delete":
                    out.append(Need(db, "DELETE", child.schema, child.name,
                                    why=f"{who} deletes from it through {step.fk.via}"))
                    if p.impl.supports_for_update:
                        # every cascade level is locked before the re-check, so nothing new
                        # can be added under a row the batch is about to delete
                        key = next(iter(child.primary_key.columns)) if len(child.primary_key.columns) else next(iter(child.columns))
                        out.append(Need(db, "LOCK", child.schema, child.name, (key.name,),
                                        f"{who} locks the rows it cascades to (SELECT ... FOR UPDATE)"))
                else:
                    out.append(Need(db, "UPDATE", child.schema, child.name, tuple(step.fk.columns),
                                    f"{who} detaches it through {step.fk.via}"))
        elif rule.action == "restrict":
            out.append(Need(db, "UPDATE", t.schema, t.name, (rule.restrict_column,), f"{who} restricts rows"))
        else:
            cols = {c for v in p.variants for c in v.strategies} | ({rule.mark} if rule.mark else set())
            if cols:
                out.append(Need(db, "UPDATE", t.schema, t.name, tuple(sorted(cols)), f"{who} anonymizes rows"))
    schemas = sorted({(n.db, n.schema or "") for n in out})
    out += [Need(db, "USAGE", schema or None, None, why="the policy's tables live in it") for db, schema in schemas]
    return out


# --- asking the databases ---------------------------------------------------------

def check(engines: Mapping[str, Engine], plans: list[RulePlan], extra: Iterable[Need] = ()) -> PrivilegeReport:
    """What each database's login lacks for ``plans`` (and ``extra`` needs that no plan
    shows, such as updating a request queue's status): every missing grant, all at once."""
    from retention.dialects import impl_for

    report = PrivilegeReport()
    by_db: dict[str, list[Need]] = {}
    for need in [*needs(plans), *extra]:
        by_db.setdefault(need.db, []).append(need)
    tables = {p.table.db: p.table.table for p in plans}
    for db, engine in engines.items():
        impl = impl_for(engine)
        grouped = _group(by_db.get(db, []))
        atoms = [(kind, schema, table, col) for (kind, schema, table), (cols, _) in grouped.items()
                 for col in (cols or (None,))]
        with engine.connect() as conn:
            notes, problems = impl.storage_access(conn, tables.get(db))
            held = impl.privileges_held(conn, atoms)
            role, default_schema = impl.login(conn)
            owners = impl.owners(conn, [(schema, table) for kind, schema, table in grouped if kind == "OWNER"])
            conn.rollback()
        report.notes += [f"[databases.{db}]: {n}" for n in notes]
        report.missing += [Missing(db, "FILE", target, fix, ["the job reads and writes the database"])
                           for target, fix in problems]
        if held is None:
            if not notes:
                report.notes.append(f"[databases.{db}]: privileges are not checked on {impl.name}")
            continue
        have = dict(zip(atoms, held))
        quote = engine.dialect.identifier_preparer.quote
        for (kind, schema, table), (cols, why) in grouped.items():
            lacking = [c for c in (cols or (None,)) if not have[(kind, schema, table, c)]]
            if kind == "LOCK":       # one column is enough to lock with
                lacking = lacking[:1] if len(lacking) == len(cols or (None,)) else []
            if not lacking:
                continue
            schema_name = quote(schema or default_schema or "")
            if kind == "USAGE":
                target = f"schema {schema_name}"
                statement = f"GRANT USAGE ON SCHEMA {schema_name} TO {quote(role)};"
            elif kind == "OWNER":
                # membership in the owning role is ownership, of the table and of every partition it owns
                target = f"{schema_name}.{quote(table)}"
                statement = f"GRANT {quote(owners.get((schema, table), 'its owner'))} TO {quote(role)};"
            else:
                target = f"{schema_name}.{quote(table)}"
                statement = _grant(kind, target, lacking, quote(role), quote)
            report.missing.append(Missing(db, kind, target, statement, why))
    report.missing.sort(key=lambda m: (m.db, KINDS.index(m.kind) if m.kind in KINDS else -1, m.target))
    return report


def _group(needs_: list[Need]) -> dict[tuple, tuple[tuple[str, ...], list[str]]]:
    """(kind, schema, table) -> (columns needed, reasons), across rules.

    LOCK merges into nothing: it is satisfied by any UPDATE column, so a table
    whose UPDATE need is listed anyway gets no separate LOCK line.
    """
    out: dict[tuple, tuple[set, list[str]]] = {}
    for n in needs_:
        cols, why = out.setdefault((n.kind, n.schema, n.table), (set(), []))
        cols.update(n.columns)
        if n.why not in why:
            why.append(n.why)
    updates = {(s, t) for k, s, t in out if k == "UPDATE"}
    return {key: (tuple(sorted(cols)), why) for key, (cols, why) in out.items()
            if not (key[0] == "LOCK" and key[1:] in updates)}


def _grant(kind: str, target: str, columns: list[str | None], role: str, quote) -> str:
    """The least grant that covers the need: column-level for UPDATE (and for LOCK, any one column)."""
    if kind in ("UPDATE", "LOCK"):
        return f"GRANT UPDATE ({', '.join(quote(c) for c in columns)}) ON {target} TO {role};"
    return f"GRANT {kind} ON {target} TO {role};"
