"""What erasing one subject means: operations built from the schema, run by the executor.

For a subject ``customer:42`` the tables *linked* to the subject are those
whose rows reach the subject's row through foreign keys (directly or through
parents; :func:`retention.schema.subject_paths`), not counting paths that
cross a foreign key whose ``on_parent_delete`` is ``detach``: the operator
said such a link is not ownership (a merchant outlives its owner's account,
a request stays as proof without naming the person), so those rows are
detached by the cascade, not erased.

Each linked table becomes one :class:`~retention.plan.RulePlan` whose ``due``
is "this row belongs to the subject".  With ``action = "delete"`` it has the
protectors and cascade a delete rule on that table has (holds, floors,
blocking children).  With ``action = "anonymize"`` it rewrites the columns
the policy's own anonymize rules on that table name, with their strategies
(holds and whole-row floors keep the row; a floor with ``columns`` keeps
those columns), a table listed in the request's ``keep`` is left as it is,
and a linked table no anonymize rule covers is deleted as a delete request
would (its rows hold the person's data and no strategy says how to rewrite
them).  The plans run deepest table first and the subject's own row last, all
in ONE transaction, through the executor's own batch statement
(:func:`retention.execute.apply_batch`): nothing here decides what to touch
beyond the predicates the planner builds.

Rows a hold or floor protects are restricted instead (``restricted_at``,
where the table has the column), and the erasure is ``partial``, naming the
protectors and the date each floor ends.  So is one where the database kept
rows the statements should have changed (a trigger cancelled them): those
rows are reported as not done, never counted as erased.

Hold registers (the ``[[holds]]`` tables) are never erased or rewritten by a
request, also once the hold is released: a register row is the record of a
legal process.  A foreign key from a register to the subject's rows blocks
their delete (whatever its ``on_parent_delete``), the erasure is
``partial`` naming the register, and the register rows of the subject are
reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.config import RequestConfig, RuleConfig
from retention.durations import parse_duration
from retention.execute import NOT_DONE, ExecOptions, apply_batch, empty_cascades
from retention.plan import Planner, Protector, RulePlan
from retention.schema import Binding, ForeignKey, resolve_column_path, subject_paths
from retention.timectx import TimeContext

RESTRICT_COLUMN = "restricted_at"


@dataclass
class Protected:
    """Rows of a subject a hold, a floor, a blocking child or a hold register kept; ``until`` is when a floor ends."""

    kind: str
    name: str
    table: str
    rows: int
    until: datetime | None = None
    restricted: int = 0
    #: the rows it keeps (not reported): what the restrict marks
    predicate: sa.ColumnElement | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "table": self.table, "rows": self.rows,
                "until": self.until.isoformat() if self.until else None, "restricted": self.restricted}


@dataclass
class Erasure:
    """What erasing one subject did (or, counted, would do)."""

    subject: str
    db: str
    action: str
    tables: dict[str, int] = field(default_factory=dict)       # table -> rows erased (cascades included)
    protected: list[Protected] = field(default_factory=list)
    #: rows the statements should have changed and the database kept: {"table", "reason", "rows", "why"}
    not_done: list[dict] = field(default_factory=list)
    #: hold register rows naming the subject, kept as the record of a legal process: table -> rows
    registers: dict[str, int] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``partial`` while anything kept rows of the subject (protectors, or the database), else ``done``."""
        kept = any(p.rows for p in self.protected) or any(n["rows"] for n in self.not_done)
        return "partial" if kept else "done"

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


@dataclass(frozen=True)
class SubjectOp:
    """Erase one subject: the linked tables' plans, deepest first, the subject table last."""

    subject: str
    key: object
    db: str
    action: str
    plans: tuple[RulePlan, ...]
    #: per table: column floors that keep some of the columns an anonymize plan rewrites
    retained: dict[str, tuple[Protector, ...]] = field(default_factory=dict)
    #: (register table, subject column) of the holds on this subject
    registers: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict:
        return {"op": "erase-subject", "subject": self.subject, "database": self.db, "action": self.action,
                "tables": [p.rule.table for p in self.plans]}


@dataclass
class _RequestBinding(Binding):
    """The binding as a request sees it: a hold register is never deleted or detached by the cascade."""

    registers: frozenset[str] = frozenset()

    def parent_action(self, fk: ForeignKey) -> str:
        if fk.child in self.registers:
            return "block"
        return super().parent_action(fk)


def _request_binding(binding: Binding) -> _RequestBinding:
    fields = {f.name: getattr(binding, f.name) for f in dataclasses.fields(Binding)}
    fields["strategies"] = dict(binding.strategies)
    return _RequestBinding(**fields, registers=frozenset(h.table for h in binding.config.model.holds))


def linked_tables(binding: Binding, subject_name: str, *, exclude: set[str] = frozenset()) -> list[tuple[str, list]]:
    """(table, paths) of every table linked to the subject, deepest first, the subject table last."""
    subject = binding.config.model.subjects[subject_name]
    db = subject.table.split(".", 1)[0]
    out = []
    for key in binding.catalog.tables:
        if key.split(".", 1)[0] != db or key in exclude:
            continue
        try:
            paths = subject_paths(binding.catalog, key, subject.table, subject.key, binding.subject_override(key))
        except LookupError:
            continue
        paths = [(hops, col) for hops, col in paths
                 if all(binding.parent_action(fk) != "detach" for fk in hops)]
        if paths:
            out.append((key, paths))
    out.sort(key=lambda kp: (-max(len(h) for h, _ in kp[1]), kp[0]))
    return out


def anonymize_strategies(binding: Binding, table_key: str) -> dict[str, tuple]:
    """Column -> (spec, strategy) for ``table_key``: those of the policy's enabled anonymize rules on it.

    The binding already refused rules that give one column two strategies,
    except ``null`` beside another: there ``null`` wins (it leaves nothing).
    """
    out: dict[str, tuple] = {}
    for rule in binding.config.rules:
        if rule.action != "anonymize" or not rule.enabled or rule.table != table_key:
            continue
        built = binding.strategies.get(rule.name, {})
        for column, spec in rule.columns.items():
            if column in built and (column not in out or built[column].name == "null"):
                out[column] = (spec, built[column])
    return out


def _rule(request: RequestConfig, table_key: str, action: str, columns: dict | None = None) -> RuleConfig:
    """The rule-shaped settings a request's plan for one table carries (never validated or shown as a rule)."""
    return RuleConfig.model_construct(
        name=f"request-{request.name}", table=table_key, clock="", after=parse_duration("0d"),
        action=action, basis="", where={}, where_sql=None, columns=columns or {}, mark=None,
        restrict_column=RESTRICT_COLUMN, max_rows=None, max_fraction=1.0, check=None, enabled=True)


def request_tables(binding: _RequestBinding, request: RequestConfig) -> list[tuple[str, list]]:
    """(table, paths) of the tables erasing one of ``request``'s subjects writes, deepest first.

    Every table linked to the subject, but the hold registers, the tables
    ``keep`` names, the application's own request queue, and tables without
    a primary key (of one column or several): those are reached, and blocked,
    only through their parents' cascades.
    """
    exclude = set(binding.registers) | set(getattr(request, "keep", None) or ())
    if request.table != "state.requests":
        exclude.add(request.table)
    return [(key, paths) for key, paths in linked_tables(binding, request.subject, exclude=exclude)
            if binding.catalog.tables[key].pk is not None]


def build_subject_op(binding: Binding, ctx: TimeContext, request: RequestConfig, key) -> SubjectOp:
    """The operation that erases subject ``request.subject`` with key ``key``."""
    binding = _request_binding(binding)
    planner = Planner(binding, ctx)
    subject = binding.config.model.subjects[request.subject]
    plans, retained = [], {}
    for table_key, paths in request_tables(binding, request):
        bound = binding.catalog.tables[table_key]
        t = bound.table
        due = _belongs(planner, table_key, t, paths, subject, key)
        specs = anonymize_strategies(binding, table_key) if request.action == "anonymize" else {}
        if specs:
            plan, kept = _anonymize_plan(binding, planner, request, bound, due, specs)
            plans.append(plan)
            if kept:
                retained[table_key] = kept
            continue
        protectors = planner.delete_protectors(table_key, t)
        any_protector = planner.delete_protected(table_key, t) if protectors else None
        plans.append(RulePlan(rule=_rule(request, table_key, "delete"), table=bound,
                              impl=binding.catalog.impl(bound.db), due=due, protectors=protectors,
                              cascade=planner.cascade(table_key),
                              any_protector=any_protector if protectors else None, max_fraction=1.0))
    registers = tuple((h.table, h.subject_column) for h in binding.config.model.holds
                      if h.subject == request.subject and h.table in binding.catalog.tables)
    return SubjectOp(request.subject, key, subject.table.split(".", 1)[0], request.action, tuple(plans),
                     retained, registers)


def _anonymize_plan(binding: _RequestBinding, planner: Planner, request: RequestConfig, bound, due,
                    specs: dict) -> tuple[RulePlan, tuple[Protector, ...]]:
    """Rewrite the subject's rows of one table as the policy's anonymize rules on it say.

    Holds and whole-row floors keep the row; a floor with ``columns`` keeps
    those columns (the others are rewritten, as a rule's variants do) and
    is returned as *retained*: its rows are restricted and counted as kept.
    """
    t = bound.table
    rule = _rule(request, bound.key, "anonymize", {c: spec for c, (spec, _s) in specs.items()})
    # the planner reads a rule's strategies from the binding (this request's own copy of it)
    binding.strategies[rule.name] = {c: strategy for c, (_spec, strategy) in specs.items()}
    protectors = planner.direct_protectors(bound.key, t, whole_row=False)
    plan = RulePlan(rule=rule, table=bound, impl=binding.catalog.impl(bound.db), due=due,
                    protectors=protectors, max_fraction=1.0)
    variants = planner._variants(rule, t, protectors)    # a rule's own variants: one per column-floor combination
    for v in variants:
        if not v.strategies:        # every column this would rewrite is kept by a floor: the whole row is
            plan.protectors.append(Protector("floor", v.floors[0], v.predicate))
    plan.variants = [v for v in variants if v.strategies]
    retained = tuple(Protector("floor", f.name, planner.floor_active(f, t)) for f in binding.config.model.floors
                     if f.table == bound.key and f.columns and set(f.columns) & set(specs))
    return plan, retained


def _belongs(planner: Planner, table_key: str, base: sa.FromClause, paths, subject, key) -> sa.ColumnElement:
    """The row's subject (by any linked path) has key ``key``."""
    preds = []
    for hops, col in paths:
        if hops and hops[-1].parent_column == col:
            expr = planner.path_value(base, table_key, hops[:-1], hops[-1].column)
        else:
            expr = planner.path_value(base, table_key, hops, col)
        preds.append(expr == sa.bindparam(None, _typed(planner.catalog, subject, key)))
    return sa.or_(*preds)


def _typed(catalog, subject, key):
    """The key as the subject table's key column wants it (``42`` for an integer key filed as '42')."""
    col = catalog.tables[subject.table].table.c[subject.key]
    try:
        python_type = col.type.python_type
    except NotImplementedError:
        return key
    if python_type is int and isinstance(key, str):
        return int(key)
    return key


def typed_key(binding: Binding, subject_name: str, key):
    """``key`` converted to the type of the subject table's key column."""
    return _typed(binding.catalog, binding.config.model.subjects[subject_name], key)


def restrict_plan(plan: RulePlan, rows: sa.ColumnElement = sa.true()) -> RulePlan | None:
    """The restrict that marks ``rows`` of the subject in ``plan``'s table beyond use (spec: ``restrict``).

    None where the table has no ``restricted_at`` column.  The one builder for
    what an erasure restricts and for what the privileges check asks for it.
    """
    if RESTRICT_COLUMN not in plan.table.table.c:
        return None
    rule = plan.rule.model_copy(update={"action": "restrict", "restrict_column": RESTRICT_COLUMN, "columns": {}})
    return RulePlan(rule=rule, table=plan.table, impl=plan.impl, due=sa.and_(plan.due, rows), protectors=[])


def privilege_plans(binding: Binding, ctx: TimeContext, request: RequestConfig) -> list[RulePlan]:
    """Every statement shape a request runs, for the privileges check: per linked table its delete or
    anonymize, and the restrict that keeps what a hold or floor protects (the key bound is only a
    placeholder: which columns and tables the statements use does not depend on it)."""
    out = []
    for p in build_subject_op(binding, ctx, request, None).plans:
        out.append(p)
        restrict = restrict_plan(p)
        if restrict is not None:
            out.append(restrict)
    return out


def erase(conn: Connection, binding: Binding, ctx: TimeContext, op: SubjectOp) -> Erasure:
    """Run ``op`` on ``conn`` (the caller owns the transaction); return what it did."""
    result = Erasure(op.subject, op.db, op.action)
    planner = Planner(binding, ctx)
    opts = ExecOptions(dry_run=False)
    registers = {h.table for h in binding.config.model.holds}
    for plan in op.plans:
        protected = _protected(conn, planner, plan, op.retained.get(plan.rule.table, ()), registers)
        cascaded = {key: 0 for key in empty_cascades(plan)}
        short: dict[str, int] = {}
        touched = apply_batch(conn, plan, ctx, opts, sa.true(), cascaded, short=short)
        if touched:
            result.tables[plan.rule.table] = result.tables.get(plan.rule.table, 0) + touched
        for (child, _action), n in cascaded.items():
            if n:
                result.tables[child] = result.tables.get(child, 0) + n
        for reason, n in sorted(short.items()):
            if n:
                result.not_done.append({"table": plan.rule.table, "reason": reason, "rows": n,
                                        "why": NOT_DONE[reason]})
        for p in protected:
            # kept for the hold, the floor, or the kept rows below it: beyond use from now on
            p.restricted = _restrict(conn, plan, ctx, p)
        result.protected.extend(protected)
    for table, column in op.registers:
        t = binding.catalog.tables[table].table
        n = conn.execute(sa.select(sa.func.count()).select_from(t).where(t.c[column] == op.key)).scalar()
        if n:
            result.registers[table] = result.registers.get(table, 0) + int(n)
    return result


def _protected(conn: Connection, planner: Planner, plan: RulePlan, retained=(), registers=frozenset()) \
        -> list[Protected]:
    """The subject's rows of this table that a protector keeps, each under its first protector."""
    out, earlier = [], []
    t = plan.table.table
    for p in (*plan.protectors, *retained):
        pred = sa.and_(plan.due, p.predicate, *(sa.not_(e) for e in earlier))
        rows = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(pred)).scalar() or 0)
        earlier.append(p.predicate)
        if rows:
            # a blocking child that is a hold register: named as what it is
            kind = "register" if p.kind == "children" and p.name in registers else p.kind
            out.append(Protected(kind, p.name, plan.rule.table, rows, _floor_end(conn, planner, plan, p, pred),
                                 predicate=p.predicate))
    return out


def _floor_end(conn: Connection, planner: Planner, plan: RulePlan, p: Protector, pred) -> datetime | None:
    """When a floor stops protecting these rows: the latest clock + keep."""
    if p.kind != "floor":
        return None
    floor = next(f for f in planner.model.floors if f.name == p.name)
    if floor.table != plan.rule.table:
        return None      # a floor further down the cascade: that table's own entry names the date
    cp = resolve_column_path(planner.catalog, floor.table, floor.clock)
    expr, _type = planner.clock(plan.table.table, cp)
    latest = conn.execute(sa.select(sa.func.max(expr)).select_from(plan.table.table).where(pred)).scalar()
    if latest is None:
        return None
    if isinstance(latest, str):
        latest = datetime.fromisoformat(latest)
    if not isinstance(latest, datetime):
        latest = datetime(latest.year, latest.month, latest.day)
    if latest.tzinfo is None:
        latest = latest.replace(tzinfo=planner.ctx.tz)
    return floor.keep.after(latest)


def _restrict(conn: Connection, plan: RulePlan, ctx: TimeContext, p: Protected) -> int:
    """Mark the protected rows beyond use (spec: ``restrict``), where the table has the column."""
    restrict = restrict_plan(plan, p.predicate)
    if restrict is None:
        return 0
    return apply_batch(conn, restrict, ctx, ExecOptions(dry_run=False), sa.true(), {})
