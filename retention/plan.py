"""The plan: for each rule, at one instant, what it will touch and why.

A plan is data.  A dry-run counts it; a run executes it; both read the same
predicates, so what the report promises is what the run does.

For a rule on table ``T`` the plan holds:

* ``due``: the clock has run (``clock <= now - after``) and ``where`` /
  ``where_sql`` match;
* ``protectors``: one SQL predicate per hold, floor and blocking child table,
  in precedence order (holds, then floors, then children).  For a delete they
  look through the whole cascade: a user whose order a floor protects is
  protected by that floor, because deleting the user would take the order;
* ``work``: due, unprotected and not already done;
* ``cascade``: the foreign-key children the delete reaches, with their
  ``on_parent_delete`` action, in dependency order;
* for anonymize, one :class:`Variant` per combination of column floors, with
  the columns that may change under it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time

import sqlalchemy as sa

from retention.anonymize import Strategy
from retention.anonymize.base import column_kind
from retention.config import Condition, FloorConfig, HoldConfig, RuleConfig
from retention.dialects import DialectImpl
from retention.report.model import FORECAST_WINDOWS
from retention.schema import (Binding, BoundTable, ColumnPath, ForeignKey, owner_paths, resolve_column_path,
                              subject_paths)
from retention.timectx import Beyond, Cutoff, TimeContext, is_date_only, is_temporal_type
from retention.where_sql import WhereSqlError, compile_where_sql, param_duration

#: "protected by nothing": compared by identity to prune empty branches of the cascade
_NOTHING = sa.false()
_COMPARISONS = ("eq", "ne", "lt", "le", "gt", "ge")
#: a date column against an instant that is not a midnight: the comparison on the date, or its constant result
_OFF_MIDNIGHT = {"eq": False, "ne": True, "lt": "le", "le": "le", "gt": "gt", "ge": "gt"}
#: column kind -> (Python types a structured condition may compare it with, how to write one)
_VALUE_TYPES = {
    "datetime": ((date, datetime), "a TOML date or date-time without quotes, e.g. 2024-01-01T00:00:00"),
    "date": ((date, datetime), "a TOML date without quotes, e.g. 2024-01-01"),
    "string": ((str,), "a quoted string"),
    "enum": ((str,), "a quoted string"),
    "integer": ((int,), "an integer"),
    "float": ((int, float), "a number"),
    "decimal": ((int, float), "a number"),
    "boolean": ((bool,), "true or false"),
}


@dataclass(frozen=True)
class Protector:
    kind: str                 # hold | floor | children
    name: str
    predicate: sa.ColumnElement


@dataclass(frozen=True)
class CascadeStep:
    """Children reached through one foreign key, and what happens to them."""

    fk: ForeignKey
    action: str                                   # delete | detach
    children: tuple["CascadeStep", ...] = ()


def walk(steps: Iterable[CascadeStep]) -> Iterator[CascadeStep]:
    """Every step of a cascade, each parent before its children."""
    for step in steps:
        yield step
        yield from walk(step.children)


@dataclass(frozen=True)
class Variant:
    """Anonymize rows matching ``predicate`` in ``columns``; ``kept`` are left for a floor."""

    predicate: sa.ColumnElement
    strategies: Mapping[str, Strategy]
    kept: tuple[str, ...] = ()
    floors: tuple[str, ...] = ()
    mark: bool = True


@dataclass
class RulePlan:
    rule: RuleConfig
    table: BoundTable
    impl: DialectImpl
    due: sa.ColumnElement
    protectors: list[Protector]
    cascade: tuple[CascadeStep, ...] = ()
    variants: list[Variant] = field(default_factory=list)
    clock: sa.ColumnElement | None = None
    clock_type: sa.types.TypeEngine | None = None
    forecast: dict[str, sa.ColumnElement] = field(default_factory=dict)
    #: the clock has started and not yet run (``clock > cutoff``): where the forecast's rows are
    pending: sa.ColumnElement = sa.false()
    conditions: sa.ColumnElement = sa.true()
    max_rows: int | None = None
    max_fraction: float = 0.9
    #: all protectors in one predicate (for deletes, built edge by edge; see Planner.delete_protected)
    any_protector: sa.ColumnElement | None = None
    #: the instant the clock is compared with (``now - after``), or Beyond past an end of the calendar
    cutoff: Cutoff | None = None
    #: a sharded run's slice of a rule is a plan of its own (retention.shards); this is the whole rule's,
    #: whose count the guard checks, so a guard trips in every shard exactly when it would in one run
    whole: "RulePlan | None" = None
    #: ``[tables.*] partitions`` of the rule's table: "detach" or "drop" whole due partitions first
    partitions: str = "delete"

    @property
    def pk_columns(self) -> tuple[sa.Column, ...]:
        """The primary key's columns, in key order."""
        return tuple(self.table.table.c[c.name] for c in self.table.pk_columns)

    @property
    def pk(self) -> sa.ColumnElement:
        """The key to compare and order by: the column, or a row value ``(a, b)`` for a composite key."""
        cols = self.pk_columns
        return cols[0] if len(cols) == 1 else sa.tuple_(*cols)

    @property
    def composite(self) -> bool:
        return len(self.table.pk_columns) > 1

    @property
    def protected(self) -> sa.ColumnElement:
        if self.any_protector is not None:
            return self.any_protector
        if not self.protectors:
            return sa.false()
        return sa.or_(*(p.predicate for p in self.protectors))

    @property
    def clean(self) -> sa.ColumnElement:
        """Due and protected by nothing."""
        return sa.and_(self.due, sa.not_(self.protected)) if self.protectors else self.due

    def todo(self) -> sa.ColumnElement:
        """Rows that still need the action (the SQL part; anonymize may refine in Python)."""
        t = self.table.table
        if self.rule.action == "restrict":
            return t.c[self.rule.restrict_column].is_(None)
        if self.rule.action == "anonymize" and self.rule.mark:
            return t.c[self.rule.mark].is_(None)
        return sa.true()

    @property
    def work(self) -> sa.ColumnElement:
        return sa.and_(self.clean, self.todo())


class Planner:
    """Builds SQL predicates for one binding at one instant."""

    def __init__(self, binding: Binding, ctx: TimeContext) -> None:
        self.b = binding
        self.catalog = binding.catalog
        self.ctx = ctx
        self.model = binding.config.model
        self._impls: dict[int, DialectImpl] = {}

    # -- values and columns ---------------------------------------------------

    def path_value(self, base: sa.FromClause, table_key: str, hops: tuple[ForeignKey, ...],
                   column: str) -> sa.ColumnElement:
        """The value of ``column`` on the row reached from ``base`` through ``hops``."""
        if not hops:
            return base.c[column]
        aliases = [self.catalog.tables[fk.parent].table.alias() for fk in hops]
        cond = hops[0].link(base, aliases[0])
        for i in range(1, len(hops)):
            cond = sa.and_(cond, hops[i].link(aliases[i - 1], aliases[i]))
        # correlate explicitly: this subquery may sit inside an EXISTS, two levels below ``base``
        return sa.select(aliases[-1].c[column]).where(cond).correlate(base).scalar_subquery()

    def clock(self, base: sa.FromClause, cp: ColumnPath) -> tuple[sa.ColumnElement, sa.types.TypeEngine]:
        col_type = self.catalog.tables[cp.target_table].table.c[cp.column].type
        return self.path_value(base, cp.table, cp.hops, cp.column), col_type

    def bound_moment(self, col_type, moment) -> sa.BindParameter:
        return sa.bindparam(None, self.ctx.moment_for(col_type, moment), type_=col_type)

    def reached(self, expr: sa.ColumnElement, col_type, cutoff: Cutoff) -> sa.ColumnElement:
        """``expr <= cutoff``: the clock has run. A cutoff beyond the calendar stays exact."""
        if cutoff is Beyond.PAST:
            return sa.false()
        if cutoff is Beyond.FUTURE:
            return expr.is_not(None)
        return expr <= self.bound_moment(col_type, cutoff)

    def not_reached(self, expr: sa.ColumnElement, col_type, cutoff: Cutoff) -> sa.ColumnElement:
        """``expr > cutoff``: the clock has started and not yet run."""
        if cutoff is Beyond.PAST:
            return expr.is_not(None)
        if cutoff is Beyond.FUTURE:
            return sa.false()
        return expr > self.bound_moment(col_type, cutoff)

    def conditions(self, base: sa.FromClause, where: Mapping[str, Condition], owner: str | None = None,
                   key: str = "where") -> sa.ColumnElement:
        """A structured ``where`` as SQL that is never NULL (so it can be negated safely).

        A comparison with a NULL column is false; ``ne`` and ``not_in`` match NULL.
        Dates and timestamps compare as instants, whatever form the engine stores
        them in; a value of the wrong type for its column is a ConfigError naming
        ``owner`` (e.g. "rule 'x'") and ``<key>.<column>``.
        """
        parts = []
        for name, cond in where.items():
            col = base.c[name]
            given = [getattr(cond, op) for op in _COMPARISONS] + list(cond.in_ or ()) + list(cond.not_in or ())
            self._check_values(col, [v for v in given if v is not None], owner, f"{key}.{name}")
            present = col.is_not(None)
            for op in _COMPARISONS:
                value = getattr(cond, op)
                if value is None:
                    continue
                test = self._value(base, col, op, value)
                parts.append(sa.or_(col.is_(None), test) if op == "ne" else sa.and_(present, test))
            if cond.is_null is not None:
                parts.append(col.is_(None) if cond.is_null else present)
            if cond.in_ is not None:
                parts.append(sa.and_(present, self._member(base, col, cond.in_)))
            if cond.not_in is not None:
                parts.append(sa.or_(col.is_(None), sa.not_(self._member(base, col, cond.not_in))))
        return sa.and_(*parts) if parts else sa.true()

    def _member(self, base: sa.FromClause, col: sa.ColumnElement, values: list) -> sa.ColumnElement:
        """``col IN values``, two-valued for a non-NULL column; instants compared as instants."""
        if values and is_temporal_type(col.type):
            return sa.or_(sa.false(), *(self._value(base, col, "eq", v) for v in values))
        return col.in_([sa.bindparam(None, v, type_=col.type) for v in values])

    def _value(self, base: sa.FromClause, col: sa.ColumnElement, op: str, v) -> sa.ColumnElement:
        """``col <op> v``: dates as their midnight in the policy's zone, timestamps as instants."""
        if not (isinstance(v, date) and is_temporal_type(col.type)):
            return getattr(col, f"__{op}__")(sa.bindparam(None, v, type_=col.type))
        tz = self.ctx.tz
        moment = v if isinstance(v, datetime) else datetime.combine(v, time(), tzinfo=tz)
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=tz)).astimezone(tz)
        if is_date_only(col.type):
            if moment.time() != time():
                # a date is its midnight: against a later instant of that day, 'lt' is 'le' the day, ...
                rewritten = _OFF_MIDNIGHT[op]
                if isinstance(rewritten, bool):
                    return sa.true() if rewritten else sa.false()
                op = rewritten
            return getattr(col, f"__{op}__")(sa.bindparam(None, moment.date(), type_=col.type))
        # engines that store timestamps as text compare a normalised form of the column
        side = self._impl_of(base).comparable_moment(col)
        return getattr(side, f"__{op}__")(self.bound_moment(col.type, moment))

    def _impl_of(self, base: sa.FromClause) -> DialectImpl:
        table = getattr(base, "element", base)
        if not self._impls:
            self._impls = {id(bt.table): self.catalog.impl(bt.db) for bt in self.catalog.tables.values()}
        return self._impls[id(table)]

    def _check_values(self, col: sa.ColumnElement, values: list, owner: str | None, key: str) -> None:
        kind = column_kind(col.type)
        accepted = _VALUE_TYPES.get(kind)
        if accepted is None:        # a type the job knows nothing about: the database judges
            return
        for v in values:
            if (isinstance(v, bool) and kind != "boolean") or not isinstance(v, accepted[0]):
                raise self.b.config.error(f"{v!r} cannot be compared with the {kind} column "
                                          f"'{col.name}'; write {accepted[1]}", owner, key)

    def where_sql(self, rule: RuleConfig) -> sa.ColumnElement:
        """The escape hatch: the parser's SQL for ``rule.where_sql``, with ``:now`` and
        ``:now_minus_<duration>`` bound (see :mod:`retention.where_sql`)."""
        where = f"rule '{rule.name}'"
        backend = self.catalog.impl(self.catalog.tables[rule.table].db).name
        try:
            checked = compile_where_sql(rule.where_sql, backend)
        except WhereSqlError as e:
            raise self.b.config.error(f"where_sql {e}", where, "where_sql") from None
        binds = []
        for name in checked.params:
            period = param_duration(name)
            moment = self.ctx.now if period is None else self.ctx.cutoff(period)
            if isinstance(moment, Beyond):
                raise self.b.config.error(f"where_sql :{name} falls outside the calendar (years 1 to 9999) "
                                          f"as of {self.ctx.now.isoformat()}; use a shorter duration",
                                          where, "where_sql")
            # naive, in the policy's zone: the zone naive columns are read in (and PostgreSQL sessions run in)
            binds.append(sa.bindparam(name, moment.astimezone(self.ctx.tz).replace(tzinfo=None)))
        return sa.text(f"({checked.sql})").bindparams(*binds)

    # -- protection -----------------------------------------------------------

    def held(self, hold: HoldConfig, table_key: str, base: sa.FromClause) -> sa.ColumnElement | None:
        """Rows of ``table_key`` (as ``base``) whose subject ``hold`` holds, or None if none can be."""
        subject = self.model.subjects[hold.subject]
        if subject.table.split(".")[0] != table_key.split(".")[0] or hold.table.split(".")[0] != table_key.split(".")[0]:
            return None
        register = self.catalog.tables[hold.table].table
        preds = []
        override = self.b.subject_override(table_key)
        try:
            paths = subject_paths(self.catalog, table_key, subject.table, subject.key, override)
            # the rows the subject's own row points at are the subject's too (a named path replaces both)
            owned = owner_paths(self.catalog, table_key, subject.table) if override is None else []
        except LookupError as e:
            raise self.b.config.error(str(e), f"hold '{hold.name}'", "subject") from None
        for hops in owned:
            # one flat EXISTS: the chain of rows from the subject's row up to this row, and the register
            aliases = [self.catalog.tables[fk.child].table.alias() for fk in hops]
            h = register.alias()
            links = [hops[0].link(aliases[0], base)]
            links += [hops[i].link(aliases[i], aliases[i - 1]) for i in range(1, len(hops))]
            preds.append(sa.exists(sa.select(sa.literal(1)).select_from(*aliases, h).where(
                *links, h.c[hold.subject_column] == aliases[-1].c[subject.key],
                self.conditions(h, hold.active_where))).correlate(base))
        for hops, key in paths:
            if hops and hops[-1].parent_columns == (key,):
                # the last foreign key holds the subject key itself: no need to join the subject table
                hops, key = hops[:-1], hops[-1].columns[0]
            # else it points at another column (a uuid, an email): read the key from the subject's row.
            # The rows on the way are joined in the EXISTS itself (each hop follows a foreign key to a
            # unique key, so at most one row): a scalar subquery per hop ran once per row checked,
            # where a join lets the planner hash the whole path once
            aliases = [self.catalog.tables[fk.parent].table.alias() for fk in hops]
            links = [hops[i].link(aliases[i - 1] if i else base, aliases[i]) for i in range(len(hops))]
            h = register.alias()
            owner = aliases[-1] if aliases else base
            preds.append(sa.exists(sa.select(sa.literal(1)).select_from(*aliases, h).where(
                *links, h.c[hold.subject_column] == owner.c[key],
                self.conditions(h, hold.active_where, f"hold '{hold.name}'", "active_where"))).correlate(base))
        return sa.or_(*preds) if preds else None

    def _held_through(self, hold: HoldConfig, table_key: str, fk: ForeignKey) -> bool:
        """Whether every way from a row of ``table_key`` to its subject goes through ``fk`` to the
        parent row and on by one of the parent's own ways (an order line whose customer is its order's).

        Then ``hold`` protects such a row exactly when it protects that parent,
        whose term the delete already has: the row's own term, an EXISTS over
        every child row in each batch's statements, would add nothing.
        """
        subject = self.model.subjects[hold.subject]
        override = self.b.subject_override(table_key)
        try:
            paths = subject_paths(self.catalog, table_key, subject.table, subject.key, override)
            if override is None and owner_paths(self.catalog, table_key, subject.table):
                return False
            parents = subject_paths(self.catalog, fk.parent, subject.table, subject.key,
                                    self.b.subject_override(fk.parent))
        except LookupError:
            return False
        return bool(paths) and all(hops and hops[0] == fk and (hops[1:], key) in parents for hops, key in paths)

    def floor_active(self, floor: FloorConfig, base: sa.FromClause) -> sa.ColumnElement:
        """The floor still protects the row: ``clock + keep > now``. A NULL clock has not started it."""
        cp = resolve_column_path(self.catalog, floor.table, floor.clock)
        expr, col_type = self.clock(base, cp)
        # IS NOT NULL keeps the predicate two-valued: NOT(floor_active) must be true for a NULL clock
        return sa.and_(expr.is_not(None), self.not_reached(expr, col_type, self.ctx.cutoff(floor.keep)),
                       self.conditions(base, floor.where, f"floor '{floor.name}'"))

    def direct_protectors(self, table_key: str, base: sa.FromClause, *, whole_row: bool,
                          via: ForeignKey | None = None) -> list[Protector]:
        """Holds and floors on the row itself. ``whole_row=False`` skips column-only floors.

        ``via``: the row is reached from its parent through this key, whose own
        protectors already count; holds that can only find the row's subject
        through that parent are left out (see :meth:`_held_through`).
        """
        out = []
        for hold in self.model.holds:
            if via is not None and self._held_through(hold, table_key, via):
                continue
            pred = self.held(hold, table_key, base)
            if pred is not None:
                out.append(Protector("hold", hold.name, pred))
        for floor in self.model.floors:
            if floor.table == table_key and (whole_row or not floor.columns):
                out.append(Protector("floor", floor.name, self.floor_active(floor, base)))
        return out

    def _protection_terms(self, table_key: str, base: sa.FromClause) -> list[tuple[str, str, sa.ColumnElement]]:
        """(kind, name, predicate) for everything that keeps a row of ``base`` from being deleted.

        Looks through the whole delete cascade: a protector on a row the
        delete would reach, a blocking child below it, or a protected row a
        detach would change.  Each term is one flat EXISTS joining the path
        from ``base`` down to that row: nesting one EXISTS per level overflowed
        SQLite's parser a few levels down, and flat joins plan better.
        """
        terms = [(p.kind, p.name, p.predicate) for p in self.direct_protectors(table_key, base, whole_row=True)]
        self._descend(table_key, base, base, [], [], terms)
        return terms

    def _descend(self, table_key: str, current: sa.FromClause, base: sa.FromClause,
                 froms: list, links: list, terms: list) -> None:
        def under(child, link, pred=None) -> sa.ColumnElement:
            conds = [*links, link] + ([pred] if pred is not None else [])
            return sa.exists(sa.select(sa.literal(1)).select_from(*froms, child).where(*conds)).correlate(base)

        for fk in self.catalog.children_of(table_key):
            child = self.catalog.tables[fk.child].table.alias()
            link = fk.link(child, current)
            action = self.b.parent_action(fk)
            if action == "block":
                terms.append(("children", fk.child, under(child, link)))
                continue
            # a detach changes the child row, a delete removes it: either way its own protectors count
            for p in self.direct_protectors(fk.child, child, whole_row=True, via=fk):
                terms.append((p.kind, p.name, under(child, link, p.predicate)))
            if action == "delete":
                self._descend(fk.child, child, base, [*froms, child], [*links, link], terms)

    def delete_protectors(self, table_key: str, base: sa.FromClause) -> list[Protector]:
        """Everything that keeps a row from being deleted, one predicate per protector, in precedence order."""
        order = [("hold", h.name) for h in self.model.holds] + [("floor", f.name) for f in self.model.floors]
        found: dict[tuple[str, str], list[sa.ColumnElement]] = {}
        for kind, name, pred in self._protection_terms(table_key, base):
            if (kind, name) not in order:
                order.append((kind, name))
            found.setdefault((kind, name), []).append(pred)
        return [Protector(k, n, sa.or_(*found[(k, n)])) for k, n in order if (k, n) in found]

    def delete_protected(self, table_key: str, base: sa.FromClause) -> sa.ColumnElement:
        """Any protector at all: the same terms as :meth:`delete_protectors`, OR-ed once."""
        terms = self._protection_terms(table_key, base)
        return sa.or_(*(pred for _k, _n, pred in terms)) if terms else _NOTHING

    def cascade(self, table_key: str) -> tuple[CascadeStep, ...]:
        steps = []
        for fk in self.catalog.children_of(table_key):
            action = self.b.parent_action(fk)
            if action == "delete":
                steps.append(CascadeStep(fk, "delete", self.cascade(fk.child)))
            elif action == "detach":
                steps.append(CascadeStep(fk, "detach"))
        return tuple(steps)

    # -- rules ------------------------------------------------------------------

    def plan_rule(self, rule: RuleConfig) -> RulePlan:
        bound = self.catalog.tables[rule.table]
        t = bound.table
        settings = self.model.settings
        cp = resolve_column_path(self.catalog, rule.table, rule.clock)
        clock, clock_type = self.clock(t, cp)
        conditions = self.conditions(t, rule.where, f"rule '{rule.name}'")
        if rule.where_sql:
            conditions = sa.and_(conditions, self.where_sql(rule))
        cutoff = self.ctx.cutoff(rule.after)
        due = sa.and_(self.reached(clock, clock_type, cutoff), conditions)
        any_protector = None
        if rule.action == "delete":
            protectors = self.delete_protectors(rule.table, t)
            any_protector = self.delete_protected(rule.table, t) if protectors else None
            if any_protector is _NOTHING:
                any_protector = None
            cascade = self.cascade(rule.table)
        else:
            protectors = self.direct_protectors(rule.table, t, whole_row=False)
            cascade = ()
        forecast = {w: self.reached(clock, clock_type, self.ctx.cutoff(rule.after, ahead_days=int(w[:-1])))
                    for w in FORECAST_WINDOWS}
        plan = RulePlan(
            rule=rule, table=bound, impl=self.catalog.impl(bound.db), due=due, protectors=protectors,
            cascade=cascade, clock=clock, clock_type=clock_type, forecast=forecast, conditions=conditions,
            pending=self.not_reached(clock, clock_type, cutoff),
            max_rows=rule.max_rows if rule.max_rows is not None else settings.max_rows,
            max_fraction=rule.max_fraction if rule.max_fraction is not None else settings.max_fraction,
            any_protector=any_protector, cutoff=cutoff,
            partitions=tc.partitions if (tc := self.model.tables.get(rule.table)) else "delete",
        )
        if rule.action == "anonymize":
            variants = self._variants(rule, t, protectors)
            # rows whose every listed column a floor keeps are protected by that floor, whole
            for v in variants:
                if not v.strategies:
                    plan.protectors.append(Protector("floor", v.floors[0], v.predicate))
            plan.variants = [v for v in variants if v.strategies]
        return plan

    def _variants(self, rule: RuleConfig, t: sa.Table, protectors: list[Protector]) -> list[Variant]:
        """One variant per combination of active column floors (usually one or two)."""
        strategies = self.b.strategies[rule.name]
        column_floors = [f for f in self.model.floors if f.table == rule.table and f.columns]
        variants = []
        for active in itertools.product((False, True), repeat=len(column_floors)):
            preds, kept, names = [], set(), []
            for floor, on in zip(column_floors, active):
                pred = self.floor_active(floor, t)
                preds.append(pred if on else sa.not_(pred))
                if on:
                    kept.update(floor.columns)
                    names.append(floor.name)
            cols = {c: s for c, s in strategies.items() if c not in kept}
            held_back = kept & set(strategies)
            # a row is finished (and marked) unless a floor keeps one of this rule's columns
            variants.append(Variant(sa.and_(sa.true(), *preds), cols,
                                    tuple(sorted(held_back)), tuple(names), mark=not held_back))
        return variants


def build_plans(binding: Binding, ctx: TimeContext, only: list[str] | None = None) -> list[RulePlan]:
    planner = Planner(binding, ctx)
    rules = [r for r in binding.config.rules if r.enabled and (not only or r.name in only)]
    return [planner.plan_rule(r) for r in rules]
