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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from retention.anonymize import Strategy
from retention.config import Condition, FloorConfig, HoldConfig, RuleConfig
from retention.dialects import DialectImpl
from retention.durations import parse_duration
from retention.report.model import FORECAST_WINDOWS
from retention.schema import (Binding, BoundTable, ColumnPath, ForeignKey, owner_paths, resolve_column_path,
                              subject_paths)
from retention.timectx import TimeContext

_NOW_MINUS = re.compile(r":(now_minus_[A-Za-z0-9_]+)")
#: "protected by nothing": compared by identity to prune empty branches of the cascade
_NOTHING = sa.false()


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
    conditions: sa.ColumnElement = sa.true()
    max_rows: int | None = None
    max_fraction: float = 0.9
    #: all protectors in one predicate (for deletes, built edge by edge; see Planner.delete_protected)
    any_protector: sa.ColumnElement | None = None

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

    def conditions(self, base: sa.FromClause, where: Mapping[str, Condition]) -> sa.ColumnElement:
        """A structured ``where`` as SQL that is never NULL (so it can be negated safely).

        A comparison with a NULL column is false; ``ne`` and ``not_in`` match NULL.
        """
        parts = []
        for name, cond in where.items():
            col = base.c[name]
            val = lambda v: self._value(col, v)  # noqa: E731
            present = col.is_not(None)
            if cond.eq is not None:
                parts.append(sa.and_(present, col == val(cond.eq)))
            if cond.ne is not None:
                parts.append(sa.or_(col.is_(None), col != val(cond.ne)))
            for op, value in (("lt", cond.lt), ("le", cond.le), ("gt", cond.gt), ("ge", cond.ge)):
                if value is not None:
                    parts.append(sa.and_(present, getattr(col, f"__{op}__")(val(value))))
            if cond.is_null is not None:
                parts.append(col.is_(None) if cond.is_null else present)
            if cond.in_ is not None:
                parts.append(sa.and_(present, col.in_([val(v) for v in cond.in_])))
            if cond.not_in is not None:
                parts.append(sa.or_(col.is_(None), col.not_in([val(v) for v in cond.not_in])))
        return sa.and_(*parts) if parts else sa.true()

    def _value(self, col: sa.ColumnElement, v):
        if isinstance(v, datetime):
            return self.bound_moment(col.type, v if v.tzinfo else v.replace(tzinfo=self.ctx.tz))
        return sa.bindparam(None, v, type_=col.type)

    def where_sql(self, rule: RuleConfig) -> sa.ColumnElement:
        """The escape hatch: a SQL boolean with ``:now`` and ``:now_minus_<duration>`` bound."""
        text = rule.where_sql
        params = {"now": self.ctx.now.astimezone(self.ctx.tz).replace(tzinfo=None)}
        for name in set(_NOW_MINUS.findall(text)):
            period = parse_duration(name[len("now_minus_"):])
            params[name] = self.ctx.cutoff(period).astimezone(self.ctx.tz).replace(tzinfo=None)
        clause = sa.text(f"({text})")
        binds = [sa.bindparam(k, v) for k, v in params.items() if re.search(rf":{k}\b", text)]
        return clause.bindparams(*binds)

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
                key_expr = self.path_value(base, table_key, hops[:-1], hops[-1].columns[0])
            else:
                # it points at another column (a uuid, an email): read the key from the subject's row
                key_expr = self.path_value(base, table_key, hops, key)
            h = register.alias()
            preds.append(sa.exists().where(h.c[hold.subject_column] == key_expr,
                                           self.conditions(h, hold.active_where)).correlate(base))
        return sa.or_(*preds) if preds else None

    def floor_active(self, floor: FloorConfig, base: sa.FromClause) -> sa.ColumnElement:
        """The floor still protects the row: ``clock + keep > now``. A NULL clock has not started it."""
        cp = resolve_column_path(self.catalog, floor.table, floor.clock)
        expr, col_type = self.clock(base, cp)
        # IS NOT NULL keeps the predicate two-valued: NOT(floor_active) must be true for a NULL clock
        return sa.and_(expr.is_not(None), expr > self.bound_moment(col_type, self.ctx.cutoff(floor.keep)),
                       self.conditions(base, floor.where))

    def direct_protectors(self, table_key: str, base: sa.FromClause, *, whole_row: bool) -> list[Protector]:
        """Holds and floors on the row itself. ``whole_row=False`` skips column-only floors."""
        out = []
        for hold in self.model.holds:
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
            for p in self.direct_protectors(fk.child, child, whole_row=True):
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
        conditions = self.conditions(t, rule.where)
        if rule.where_sql:
            conditions = sa.and_(conditions, self.where_sql(rule))
        due = sa.and_(clock <= self.bound_moment(clock_type, self.ctx.cutoff(rule.after)), conditions)
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
        forecast = {w: clock <= self.bound_moment(clock_type, self.ctx.cutoff(rule.after, ahead_days=int(w[:-1])))
                    for w in FORECAST_WINDOWS}
        plan = RulePlan(
            rule=rule, table=bound, impl=self.catalog.impl(bound.db), due=due, protectors=protectors,
            cascade=cascade, clock=clock, clock_type=clock_type, forecast=forecast, conditions=conditions,
            max_rows=rule.max_rows if rule.max_rows is not None else settings.max_rows,
            max_fraction=rule.max_fraction if rule.max_fraction is not None else settings.max_fraction,
            any_protector=any_protector,
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
