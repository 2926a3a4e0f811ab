"""What erasing one subject means: operations built from the schema, run by the executor.

For a subject ``customer:42`` the tables *linked* to the subject are those
whose rows reach the subject's row through foreign keys (directly or through
parents; :func:`retention.schema.subject_paths`), not counting paths that
cross a foreign key whose ``on_parent_delete`` is ``detach``: the operator
said such a link is not ownership (a merchant outlives its owner's account,
a request stays as proof without naming the person), so those rows are
detached by the cascade, not erased.

Each linked table becomes one :class:`~retention.plan.RulePlan` whose ``due``
is "this row belongs to the subject", with the same protectors and cascade a
delete rule on that table has (holds, floors, blocking children).  The plans
run deepest table first and the subject's own row last, all in ONE
transaction, through the executor's own batch statement
(:func:`retention.execute.apply_batch`): nothing here decides what to touch
beyond the predicates the planner builds.  Rows a hold or floor protects are
restricted instead (``restricted_at``, where the table has the column), and
the erasure is ``partial``, naming the protectors and the date each floor
ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.config import RequestConfig, RuleConfig
from retention.durations import parse_duration
from retention.execute import ExecOptions, apply_batch, empty_cascades
from retention.plan import Planner, Protector, RulePlan
from retention.schema import Binding, resolve_column_path, subject_paths
from retention.timectx import TimeContext

RESTRICT_COLUMN = "restricted_at"


@dataclass
class Protected:
    """Rows of a subject a hold, a floor or a blocking child kept; ``until`` is when a floor ends."""

    kind: str
    name: str
    table: str
    rows: int
    until: datetime | None = None
    restricted: int = 0

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

    @property
    def status(self) -> str:
        """``partial`` while anything protected rows of the subject, else ``done``."""
        return "partial" if any(p.rows for p in self.protected) else "done"

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

    def to_dict(self) -> dict:
        return {"op": "erase-subject", "subject": self.subject, "database": self.db, "action": self.action,
                "tables": [p.rule.table for p in self.plans]}


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


def build_subject_op(binding: Binding, ctx: TimeContext, request: RequestConfig, key) -> SubjectOp:
    """The operation that erases subject ``request.subject`` with key ``key``."""
    planner = Planner(binding, ctx)
    subject = binding.config.model.subjects[request.subject]
    queue_table = request.table if request.table != "state.requests" else None
    plans = []
    for table_key, paths in linked_tables(binding, request.subject, exclude={queue_table} if queue_table else set()):
        bound = binding.catalog.tables[table_key]
        if bound.pk is None:
            continue     # composite keys: reached (and blocked) through their parents' cascades
        t = bound.table
        due = _belongs(planner, table_key, t, paths, subject, key)
        rule = RuleConfig.model_construct(
            name=f"request-{request.name}", table=table_key, clock="", after=parse_duration("0d"),
            action="delete", basis="", where={}, where_sql=None, columns={}, mark=None,
            restrict_column=RESTRICT_COLUMN, max_rows=None, max_fraction=1.0, check=None, enabled=True)
        protectors = planner.delete_protectors(table_key, t)
        any_protector = planner.delete_protected(table_key, t) if protectors else None
        plans.append(RulePlan(rule=rule, table=bound, impl=binding.catalog.impl(bound.db), due=due,
                              protectors=protectors, cascade=planner.cascade(table_key),
                              any_protector=any_protector if protectors else None, max_fraction=1.0))
    return SubjectOp(request.subject, key, subject.table.split(".", 1)[0], request.action, tuple(plans))


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


def erase(conn: Connection, binding: Binding, ctx: TimeContext, op: SubjectOp) -> Erasure:
    """Run ``op`` on ``conn`` (the caller owns the transaction); return what it did."""
    result = Erasure(op.subject, op.db, op.action)
    planner = Planner(binding, ctx)
    opts = ExecOptions(dry_run=False)
    for plan in op.plans:
        protected = _protected(conn, planner, plan)
        cascaded = {key: 0 for key in empty_cascades(plan)}
        touched = apply_batch(conn, plan, ctx, opts, sa.true(), cascaded)
        if touched:
            result.tables[plan.rule.table] = result.tables.get(plan.rule.table, 0) + touched
        for (child, _action), n in cascaded.items():
            if n:
                result.tables[child] = result.tables.get(child, 0) + n
        for p in protected:
            # kept for the hold, the floor, or the kept rows below it: beyond use from now on
            p.restricted = _restrict(conn, plan, ctx, p)
        result.protected.extend(protected)
    return result


def _protected(conn: Connection, planner: Planner, plan: RulePlan) -> list[Protected]:
    """The subject's rows of this table that a protector keeps, each under its first protector."""
    out, earlier = [], []
    t = plan.table.table
    for p in plan.protectors:
        pred = sa.and_(plan.due, p.predicate, *(sa.not_(e) for e in earlier))
        rows = int(conn.execute(sa.select(sa.func.count()).select_from(t).where(pred)).scalar() or 0)
        earlier.append(p.predicate)
        if rows:
            out.append(Protected(p.kind, p.name, plan.rule.table, rows, _floor_end(conn, planner, plan, p, pred)))
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
    t = plan.table.table
    if RESTRICT_COLUMN not in t.c:
        return 0
    rule = plan.rule.model_copy(update={"action": "restrict"})
    pred = next(x.predicate for x in plan.protectors if x.name == p.name and x.kind == p.kind)
    restrict = RulePlan(rule=rule, table=plan.table, impl=plan.impl, due=sa.and_(plan.due, pred), protectors=[])
    return apply_batch(conn, restrict, ctx, ExecOptions(dry_run=False), sa.true(), {})
