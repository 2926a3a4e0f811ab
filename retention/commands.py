"""The verbs, as plain functions taking a config path; ``cli.py`` only wraps them.

Every verb that reads application data goes config -> schema -> plan ->
execute -> report, in that order, and nothing is written before the whole
policy file has been validated and bound to the live schema.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import visitors

from retention.config import Config, load_config
from retention.dialects.drivers import MissingDriver
from retention.errors import ConfigError, ConfigErrors
from retention.execute import ExecOptions, cascade_selections, describe_error, execute_rule
from retention.log import MASK, configure_logging, mask_text, redact, url_secret
from retention.plan import RulePlan, build_plans
from retention import privileges
from retention.report.model import Report
from retention.schema import Binding, Catalog, bind, is_temporal, make_engine, policy_tables, resolve_column_path
from retention.timectx import TimeContext, is_date_only, utcnow
from retention.transactions import Simulation, Transactions

log = structlog.get_logger("retention")


@dataclass
class Session:
    """A loaded policy bound to its live databases at one instant."""

    config: Config
    engines: dict[str, Engine]
    binding: Binding
    ctx: TimeContext
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(config_path: str | None = None, *, env: Mapping[str, str] | None = None,
                 now: datetime | None = None, need_keys: bool = True) -> Session:
    """Load, validate and bind a policy file; raise ConfigError on any problem."""
    env = os.environ if env is None else env
    if not structlog.is_configured():
        configure_logging(None)      # library use: logs still go to stderr, never stdout
    config = load_config(config_path, env=env)
    engines = {}
    try:
        for name, url in config.urls.items():
            engines[name] = make_engine(url, config.settings)
        catalog = Catalog(engines, policy_tables(config.model))
    except Exception as e:  # connection or reflection failure: name the database, mask the URL
        for engine in engines.values():
            engine.dispose()
        if isinstance(e, ConfigError):
            raise
        db = next((n for n in config.urls if n not in engines), None) or ", ".join(config.urls)
        if isinstance(e, MissingDriver):    # the environment, not the policy file: exit 1
            raise MissingDriver(f"{config.path}: [databases.{db}]: {e}") from None
        url = config.urls.get(db, "")
        secret = url_secret(url)
        shown = url.replace(secret, MASK) if secret else mask_text(url)
        if isinstance(e, SQLAlchemyError):
            detail = redact(describe_error(e), secret)
        else:   # the URL did not parse: the parser's message quotes pieces of it
            detail = "the URL cannot be parsed (is a special character in the password percent-encoded?)"
        raise ConfigError(f"cannot open database ({redact(shown, secret)}): {detail}",
                          file=config.path, where=f"[databases.{db}]", key="url") from None
    try:
        binding = bind(config, catalog, env, need_keys=need_keys)
    except ConfigError:
        for engine in engines.values():
            engine.dispose()
        raise
    for warning in binding.warnings:
        log.warning("policy", message=warning)
    ctx = TimeContext.create(config.settings.tz, now or utcnow())
    return Session(config, engines, binding, ctx)


@dataclass
class CheckResult:
    config_path: str
    rules: int
    tables: list[str]
    warnings: list[str]
    #: how each database controls access (e.g. "SQLite has no grants: ..."); what is missing raises
    privilege_notes: list[str] = field(default_factory=list)


def check(config_path: str | None = None, *, env: Mapping[str, str] | None = None) -> CheckResult:
    """Validate the file, bind it to the live schemas and check the login's privileges; touch no data.

    Raises ConfigError (exit 2) for a bad file, and
    :class:`~retention.privileges.MissingPrivileges` (exit 1) listing every
    grant the login lacks, each with the statement that grants it.
    """
    from retention.backups import policy_warnings
    with open_session(config_path, env=env) as s:
        tables = sorted({r.table for r in s.config.rules})
        # privileges first: the database's compile check below would fail on a missing grant
        # and call the policy invalid, when it is the login that lacks something
        access = privileges.check(s.engines, build_plans(s.binding, s.ctx, None))
        if not access.ok:
            raise privileges.MissingPrivileges(access.missing)
        plans = _prepare(s, None)
        return CheckResult(s.config.path, len(plans), tables, s.binding.warnings + policy_warnings(s.config),
                           access.notes)


def _prepare(s: Session, only: list[str] | None) -> list[RulePlan]:
    """Build the plans and prove them against the databases before any rule runs.

    Building compiles every predicate; the database then prepares each rule's
    SQL and the clocks' stored values are checked, so a bad file fails here,
    with exit 2, and nothing has been touched.
    """
    plans = build_plans(s.binding, s.ctx, only)
    for p in plans:
        _compile_check(s, p)
    _check_clock_values(s, plans)
    return plans


def _compile_check(s: Session, p: RulePlan) -> None:
    engine = s.engines[p.table.db]
    try:
        with engine.connect() as conn:
            # the database prepares the rule's full predicate but returns no row (LIMIT 0):
            # a where_sql typo or a clock path the engine rejects shows here, before anything runs
            conn.execute(sa.select(*p.pk_columns).where(p.work).suffix_with(sa.text("LIMIT 0"))).all()
            # and the cascade's statements, whose nesting grows with its depth
            for table, link in cascade_selections(p):
                conn.execute(sa.select(sa.literal(1)).select_from(table).where(link)
                             .suffix_with(sa.text("LIMIT 0"))).all()
            conn.rollback()
    except SQLAlchemyError as e:
        detail = describe_error(e)
        if "too complex" in detail or "stack overflow" in detail or "depth" in detail:
            detail += " (the cascade under this table is too deep for the database's parser: " \
                      "set on_parent_delete = \"block\" somewhere below it)"
        raise ConfigErrors([s.config.error(f"the rule's SQL does not run: {detail}",
                                           f"rule '{p.rule.name}'", "where_sql" if p.rule.where_sql else "table")])


def _check_clock_values(s: Session, plans: list[RulePlan]) -> None:
    """Refuse clocks whose stored values the engine would compare wrongly (SQLite text)."""
    uses: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for p in plans:
        cp = resolve_column_path(s.binding.catalog, p.rule.table, p.rule.clock)
        uses.setdefault((cp.target_table, cp.column), []).append((f"rule '{p.rule.name}'", "clock"))
    for floor in s.config.model.floors:
        cp = resolve_column_path(s.binding.catalog, floor.table, floor.clock)
        uses.setdefault((cp.target_table, cp.column), []).append((f"floor '{floor.name}'", "clock"))
    errors = []
    for (table_key, column), where in uses.items():
        bound = s.binding.catalog.tables[table_key]
        col = bound.table.c[column]
        pred = s.binding.catalog.impl(bound.db).malformed_clock(col, is_date_only(col.type))
        if pred is None or not is_temporal(col):
            continue
        with s.engines[bound.db].connect() as conn:
            bad = conn.execute(sa.select(sa.func.count()).select_from(bound.table).where(pred)).scalar()
            conn.rollback()
        if bad:
            form = "YYYY-MM-DD" if is_date_only(col.type) else "YYYY-MM-DD HH:MM:SS[.ffffff]"
            for w, key in where:
                errors.append(s.config.error(
                    f"{table_key}.{column} holds {bad} value(s) not written as '{form}' (a 'T' separator, "
                    f"a UTC offset, a number...); SQLite compares timestamps as text, so they would fall due "
                    f"at the wrong moment: rewrite them in that form first", w, key))
    if errors:
        raise ConfigErrors(errors)


def _select_rules(config: Config, only: list[str] | None) -> list[str] | None:
    if not only:
        return None
    names = {r.name for r in config.rules}
    for name in only:
        if name not in names:
            raise ConfigError(f"no rule named '{name}' (rules: {', '.join(sorted(names))})",
                              file=config.path, where="--only", key=None)
        if not config.rule(name).enabled:
            raise ConfigError(f"rule '{name}' is disabled (enabled = false); enable it to run it",
                              file=config.path, where="--only", key=None)
    return list(only)


def run(config_path: str | None = None, *, dry_run: bool = False, only: list[str] | None = None,
        now: datetime | None = None, allow_large: bool = False, show_sql: bool = False,
        env: Mapping[str, str] | None = None, force_python: bool = False,
        simulate: bool = False) -> Report:
    """Enforce the policy (or, with ``dry_run``, report what enforcing would do).

    A failing rule does not stop the others; the report says which failed and
    ``Report.exit_code`` is what the process should exit with.

    A plain dry run counts each rule against the data as it is: lock-free, but
    where two rules reach the same rows, the later one's numbers are what it
    would do alone (the report notes it).  ``simulate=True`` instead runs the
    whole policy in one transaction per database and rolls it back: exactly a
    run's numbers, at the price of holding a run's locks until the end.
    """
    if simulate:
        dry_run = True
    with open_session(config_path, env=env, now=now) as s:
        structlog.contextvars.bind_contextvars(run_id=s.run_id)
        try:
            selected = _select_rules(s.config, only)
            report = Report(run_id=s.run_id, dry_run=dry_run, now=s.ctx.now, config_path=s.config.path,
                            config_sha256=s.config.sha256, started_at=utcnow(), show_sql=show_sql,
                            simulated=simulate)
            # a simulation executes for real, inside a transaction that is rolled back
            opts = ExecOptions(dry_run=dry_run and not simulate, allow_large=allow_large, force_python=force_python,
                               show_sql=show_sql, batch_size=s.config.settings.batch_size)
            log.info("start", mode="dry-run" if dry_run else "run", config=s.config.path,
                     sha256=s.config.sha256[:12], now=s.ctx.now.isoformat())
            plans = _prepare(s, selected)
            txs = {db: (Simulation(e) if simulate else Transactions(e)) for db, e in s.engines.items()}
            try:
                for plan in plans:
                    outcome = execute_rule(txs[plan.table.db], plan, s.config.settings, s.ctx, opts)
                    if dry_run and not simulate:
                        outcome.overlaps = overlaps(plan, plans)
                    report.rules.append(outcome)
            finally:
                for tx in txs.values():
                    tx.close()
            report.finished_at = utcnow()
            log.info("finish", exit_code=report.exit_code, rules=len(report.rules))
            return report
        finally:
            structlog.contextvars.unbind_contextvars("run_id")


def overlaps(plan: RulePlan, plans: list[RulePlan]) -> list[str]:
    """Earlier rules that change a table this rule reads or acts on (their effects are not in its counts).

    What a rule reads is every table its SQL names: its clock's parents, hold
    registers and the paths to them, floors, blocking children, the cascade.
    """
    mine = _changes(plan) | _reads(plan)
    earlier = plans[:plans.index(plan)]
    return [p.rule.name for p in earlier if p.table.db == plan.table.db and _changes(p) & mine]


def _changes(p: RulePlan) -> set[str]:
    """Tables whose rows the rule deletes or rewrites: its own, and its cascade's."""
    tables = {p.table.key}
    stack = list(p.cascade)
    while stack:
        step = stack.pop()
        tables.add(step.fk.child)
        stack.extend(step.children)
    return tables


def _reads(p: RulePlan) -> set[str]:
    """Tables the rule's predicates read (as policy keys, ``db.table``)."""
    exprs = [p.work, *(x.predicate for x in p.protectors), *(v.predicate for v in p.variants)]
    exprs += [link for _table, link in cascade_selections(p)]
    return {f"{p.table.db}.{t.key}" for e in exprs for t in visitors.iterate(e) if isinstance(t, sa.Table)}


def plan(config_path: str | None = None, **kwargs) -> Report:
    """The dry-run report: ``run(dry_run=True)``."""
    return run(config_path, dry_run=True, **kwargs)


def backups_rotate(config_path: str | None = None, *, dry_run: bool = False, now: datetime | None = None,
                   only: list[str] | None = None, env: Mapping[str, str] | None = None):
    """Rotate the ``[[backups]]`` sets (or only those named): list kept and removed, then remove.

    Needs no database.  Returns a :class:`retention.backups.RotationReport`;
    its ``exit_code`` is 1 when a store failed, 3 when a set was refused
    (``max_gap``, or the last backup), else 0.
    """
    from retention.backups import rotate
    if not structlog.is_configured():
        configure_logging(None)
    config = load_config(config_path, env=os.environ if env is None else env)
    moment = now or utcnow()
    if moment.tzinfo is None:        # a naive --now is read in the policy's zone, like naive clocks
        moment = moment.replace(tzinfo=config.settings.tz)
    return rotate(config, now=moment, dry_run=dry_run, names=only)


DEMO_URL = "sqlite:///retention-demo.db"
DEMO_HASH_KEY = "retention-demo-key-not-secret"


def demo(config_path: str | None = None, *, url: str = DEMO_URL, now: datetime | None = None,
         seed: int = 7, env: Mapping[str, str] | None = None, **plan_options) -> tuple[dict[str, int], Report]:
    """Build the demo shop at ``url`` and return its row counts and the dry-run report.

    A year of nightly dumps is also written to ``retention-demo-backups/`` in the
    current directory (beside the default demo database), the root policy's
    ``[[backups]]`` set.

    The policy's ``shop`` database is pointed at ``url`` for this call only.  A
    throwaway hash key is used when ``RETENTION_HASH_KEY`` is not set, so the
    demo runs on a fresh machine; never rely on it for real data.  The report
    is a simulation (see :func:`run`): the demo database is the job's own, so
    holding its locks costs nothing, and the numbers are exactly what
    ``retention run`` will then do.
    """
    plan_options.setdefault("simulate", True)
    from retention.demo import create_demo
    env = dict(os.environ if env is None else env)
    env["SHOP_DATABASE_URL"] = url
    if not env.get("RETENTION_HASH_KEY"):
        log.warning("demo_hash_key", message="RETENTION_HASH_KEY is not set; the demo uses a throwaway key")
        env["RETENTION_HASH_KEY"] = DEMO_HASH_KEY
    moment = now or utcnow()
    try:
        counts = create_demo(url, now=moment, seed=seed)
    except SQLAlchemyError as e:
        raise ConfigError(f"cannot build the demo at {mask_text(url)}: {mask_text(describe_error(e))}",
                          where="--url") from None
    from retention.backups.demo import DEMO_BACKUPS, create_demo_backups
    dumps = create_demo_backups(DEMO_BACKUPS, now=moment)
    log.info("demo_backups", directory=DEMO_BACKUPS, dumps=len(dumps),
             message="try: retention backups rotate --dry-run")
    return counts, plan(config_path, now=moment, env=env, **plan_options)
