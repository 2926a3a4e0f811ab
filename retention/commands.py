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
from retention.errors import ConfigError, ConfigErrors, RetentionError
from retention.execute import cascade_selections, describe_error
from retention.lazy import lazy
from retention.log import MASK, configure_logging, mask_text, redact, url_secret
from retention.plan import RulePlan, build_plans, walk
from retention.report.model import Report
from retention.schema import Binding, Catalog, bind, is_temporal, make_engine, policy_tables, resolve_column_path
from retention.timectx import TimeContext, is_date_only, utcnow

log = structlog.get_logger("retention")

# the grants check is `check`'s alone: a run does not import it
privileges = lazy("retention.privileges")


@dataclass
class Session:
    """A loaded policy bound to its live databases at one instant."""

    config: Config
    engines: dict[str, Engine]
    binding: Binding
    ctx: TimeContext
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: databases left out because they could not be reached (name -> why); see open_session(partial=True)
    unavailable: dict[str, str] = field(default_factory=dict)
    full_config: Config | None = None

    def close(self) -> None:
        for engine in self.engines.values():
            engine.dispose()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_session(config_path: str | None = None, *, env: Mapping[str, str] | None = None,
                 now: datetime | None = None, need_keys: bool = True, partial: bool = False,
                 whole_databases: bool = False) -> Session:
    """Load, validate and bind a policy file; raise ConfigError on any problem.

    A database that cannot be reached (down, login refused, timeout) is a
    runtime failure, not an invalid file: :class:`DatabaseUnavailable`
    (exit 1).  With ``partial`` the session goes on without it instead: its
    rules, holds and floors are left out, and ``Session.unavailable`` says why
    (a run reports those rules as failed and runs the others).  ``whole_databases``
    reads every table of every database, not only those the policy reaches.
    """
    env = os.environ if env is None else env
    if not structlog.is_configured():
        configure_logging(None)      # library use: logs still go to stderr, never stdout
    config = full = load_config(config_path, env=env)
    engines: dict[str, Engine] = {}
    unavailable: dict[str, str] = {}

    def shown(db: str) -> tuple[str, str]:
        url = config.urls.get(db, "")
        secret = url_secret(url)
        return redact(url.replace(secret, MASK) if secret else mask_text(url), secret), secret

    def dispose() -> None:
        for engine in engines.values():
            engine.dispose()

    for name, url in config.urls.items():
        try:
            engines[name] = make_engine(url, config.settings)
        except MissingDriver as e:    # the environment, not the policy file: exit 1
            dispose()
            raise MissingDriver(f"{config.path}: [databases.{name}]: {e}") from None
        except Exception:  # the URL did not parse: the parser's message quotes pieces of it
            dispose()
            raise ConfigError(f"cannot open database ({shown(name)[0]}): the URL cannot be parsed (is a special "
                              f"character in the password percent-encoded?)",
                              file=config.path, where=f"[databases.{name}]", key="url") from None
    for name in list(engines):
        try:
            with engines[name].connect() as conn:
                conn.rollback()
        except SQLAlchemyError as e:
            where, secret = shown(name)
            unavailable[name] = f"cannot reach database '{name}' ({where}): {redact(describe_error(e), secret)}"
            engines.pop(name).dispose()
    if unavailable and not partial:
        dispose()
        raise DatabaseUnavailable("; ".join(unavailable.values()))
    if unavailable:
        config = _without(config, set(unavailable))
    try:
        catalog = Catalog(engines, None if whole_databases else policy_tables(config.model))
    except SQLAlchemyError as e:   # reachable, but reading its schema failed (a lock, a timeout)
        dispose()
        raise DatabaseUnavailable(f"cannot read the schema of {', '.join(engines)}: {mask_text(describe_error(e))}") \
            from None
    try:
        binding = bind(config, catalog, env, need_keys=need_keys)
    except ConfigError:
        dispose()
        if unavailable:    # what is left refers to what could not be reached: judge the file when it can be
            raise DatabaseUnavailable("; ".join(unavailable.values())) from None
        raise
    for warning in binding.warnings:
        log.warning("policy", message=warning)
    ctx = TimeContext.create(config.settings.tz, now or utcnow())
    session = Session(config, engines, binding, ctx)
    session.unavailable, session.full_config = unavailable, full
    return session


class RuleUnavailable(RetentionError):
    """A rule's database failed for a reason of the moment (lock, timeout, connection): exit 1."""


class DatabaseUnavailable(RetentionError):
    """A database cannot be reached or read now: a runtime failure (exit 1), not an invalid file."""


def _without(config: Config, dbs: set[str]) -> Config:
    """The policy without what lives in ``dbs`` (databases a run could not reach)."""
    m = config.model

    def here(ref: str) -> bool:
        return ref.split(".", 1)[0] not in dbs

    model = m.model_copy(update={
        "databases": {k: v for k, v in m.databases.items() if k not in dbs},
        "subjects": {k: v for k, v in m.subjects.items() if here(v.table)},
        "rules": [r for r in m.rules if here(r.table)],
        "tables": {k: v for k, v in m.tables.items() if here(k)},
        "holds": [h for h in m.holds if here(h.table)],
        "floors": [f for f in m.floors if here(f.table)],
    })
    return Config(model, config.path, config.sha256, {k: v for k, v in config.urls.items() if k not in dbs})


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
        access = privileges.check(s.engines, build_plans(s.binding, s.ctx, None) + _request_plans(s),
                                  _queue_needs(s))
        if not access.ok:
            raise privileges.MissingPrivileges(access.missing)
        plans = _prepare(s, None)
        return CheckResult(s.config.path, len(plans), tables, s.binding.warnings + policy_warnings(s.config),
                           access.notes)


def _request_plans(s: Session) -> list[RulePlan]:
    """What erasure requests run, for the privileges check (:func:`retention.requests.erase.privilege_plans`)."""
    if not s.config.model.requests:
        return []
    from retention.requests.erase import privilege_plans
    return [p for request in s.config.model.requests for p in privilege_plans(s.binding, s.ctx, request)]


def _queue_needs(s: Session) -> list[privileges.Need]:
    """An app's own request queue: the job reads it and sets each request's status."""
    out = []
    for request in s.config.model.requests:
        if request.table == "state.requests":
            continue
        bound = s.binding.catalog.tables[request.table]
        t, why = bound.table, f"request '{request.name}' reads its queue and sets each request's status"
        columns = (request.status_column, *(("completed_at",) if "completed_at" in t.c else ()))
        out += [privileges.Need(bound.db, "SELECT", t.schema, t.name, (), why),
                privileges.Need(bound.db, "UPDATE", t.schema, t.name, columns, why)]
    return out


def _prepare(s: Session, only: list[str] | None, failed: dict[str, str] | None = None) -> list[RulePlan]:
    """Build the plans and prove them against the databases before any rule runs.

    Building compiles every predicate; the database then prepares each rule's
    SQL and the clocks' stored values are checked, so a bad file fails here,
    with exit 2, and nothing has been touched.

    A check that fails for a reason of the moment (a lock or statement
    timeout, a lost connection) says nothing about the file: with ``failed``
    given, the rule's name and the reason are put there (the run reports that
    rule as failed and goes on with the others); without, it raises
    :class:`RuleUnavailable` (exit 1).
    """
    from retention.requests.fulfil import check_requests
    check_requests(s.binding)
    plans = build_plans(s.binding, s.ctx, only)
    for p in plans:
        try:
            _compile_check(s, p)
        except RuleUnavailable as e:
            if failed is None:
                raise
            failed[p.rule.name] = str(e)
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
        if s.binding.catalog.impl(p.table.db).is_transient(e):
            raise RuleUnavailable(f"rule '{p.rule.name}': the database could not check its SQL now: {detail}") \
                from None
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
        simulate: bool = False, plan_file: str | None = None, max_drift: str | None = None,
        workers: int = 1, shard: str | None = None) -> Report:
    """Enforce the policy (or, with ``dry_run``, report what enforcing would do).

    A failing rule does not stop the others; the report says which failed and
    ``Report.exit_code`` is what the process should exit with.

    A plain dry run counts each rule against the data as it is: lock-free, but
    where two rules reach the same rows, the later one's numbers are what it
    would do alone (the report notes it).  ``simulate=True`` instead runs the
    whole policy in one transaction per database and rolls it back: exactly a
    run's numbers, at the price of holding a run's locks until the end.

    The run's life (lock, audit log, stops) is :class:`retention.runtime.Run`;
    this function picks its mode.  A run or simulation raises ``LockHeld``
    when another holds the lock.

    ``plan_file`` applies a reviewed plan (:mod:`retention.planfile`): its
    ``now`` and rules, at most the rows it counted per rule, ``max_drift``
    (rows, or "P%") more at most before a rule is refused.  ``workers`` runs
    each rule's batches on that many connections at once where the engine can.

    ``shard`` ("I/N") does shard I of N of the run (:mod:`retention.shards`):
    every rule on its slice of the keys; N such runs together do one run.
    """
    from retention.runtime import Run, mode_for
    from retention.shards import parse_shard
    sharded = parse_shard(shard) if shard is not None else None
    if sharded is not None and plan_file:
        raise ConfigError("a reviewed plan is applied by one run: --plan cannot be combined with --shard",
                          where="--shard")
    reviewed = None
    if plan_file:
        from retention.planfile import load
        reviewed = load(plan_file, max_drift)
        if now is not None and (now if now.tzinfo else now.replace(tzinfo=reviewed.now.tzinfo)) != reviewed.now:
            raise ConfigError(f"--now {now.isoformat()} is not the plan's now ({reviewed.doc['now']}): a reviewed "
                              f"plan is applied at the moment it was made for", file=plan_file, where="--now")
        if only and sorted(only) != sorted(reviewed.doc["only"]):
            raise ConfigError("--only differs from the rules the plan was made for", file=plan_file, where="--only")
        now, only = reviewed.now, reviewed.doc["only"] or None
    elif max_drift is not None:
        raise ConfigError("--max-drift only applies with --plan", where="--max-drift")
    mode = mode_for(dry_run=dry_run, simulate=simulate, reviewed=reviewed)
    return Run(config_path, mode, only=only, now=now, allow_large=allow_large, show_sql=show_sql, env=env,
               force_python=force_python, workers=workers, shard=sharded).execute()


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
    return {p.table.key} | {step.fk.child for step in walk(p.cascade)}


def _reads(p: RulePlan) -> set[str]:
    """Tables the rule's predicates read (as policy keys, ``db.table``)."""
    exprs = [p.work, *(x.predicate for x in p.protectors), *(v.predicate for v in p.variants)]
    exprs += [link for _table, link in cascade_selections(p)]
    return {f"{p.table.db}.{t.key}" for e in exprs for t in visitors.iterate(e) if isinstance(t, sa.Table)}


def plan(config_path: str | None = None, **kwargs) -> Report:
    """The dry-run report: ``run(dry_run=True)``."""
    return run(config_path, dry_run=True, **kwargs)


def schedule(config_path: str | None = None, *, only: list[str] | None = None, now: datetime | None = None,
             env: Mapping[str, str] | None = None):
    """The retention schedule (:class:`retention.schedule.Schedule`), from the policy file alone.

    No database is opened and no URL is resolved.  ``only`` names rules to
    list (a disabled one too: the schedule says it is not enforced).
    """
    from retention import schedule as document
    config = load_config(config_path, env=env, resolve_urls=False)
    names = {r.name for r in config.rules}
    for name in only or ():
        if name not in names:
            raise ConfigError(f"no rule named '{name}' (rules: {', '.join(sorted(names))})",
                              file=config.path, where="--only", key=None)
    return document.build(config, now=now or utcnow(), only=only)


def coverage(config_path: str | None = None, *, env: Mapping[str, str] | None = None):
    """Personal-looking columns in every table of the policy's databases, and what covers each.

    Reads names only (:mod:`retention.coverage`); touches no row.
    """
    from retention.coverage import build
    with open_session(config_path, env=env, need_keys=False, whole_databases=True) as s:
        return build(s.binding)


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


def state_upgrade(config_path: str | None = None, *, env: Mapping[str, str] | None = None) -> tuple[str, int, int]:
    """Bring the state store named by ``settings.state_url`` to this release's schema.

    Returns (where, from version, to version).  Runs do this on first use too;
    this verb lets a deployment do it ahead, with rights a run does not need.
    """
    from retention.state import open_store
    config = load_config(config_path, env=env)
    store = open_store(config.settings.state_url, config.path, config.settings, migrate=False)
    try:
        before, after = store.upgrade()
        return store.where, before, after
    finally:
        store.close()


def _audit_log(config_path: str | None, env: Mapping[str, str] | None):
    from retention.audit import AuditLog
    from retention.state import open_store
    config = load_config(config_path, env=env)
    return AuditLog(open_store(config.settings.state_url, config.path, config.settings))


def audit_verify(config_path: str | None = None, *, head: str | None = None,
                 env: Mapping[str, str] | None = None):
    """Check the audit log's hash chain; return a :class:`retention.audit.Verdict`."""
    audit = _audit_log(config_path, env)
    try:
        return audit.verify(head=head)
    finally:
        audit.store.close()


def audit_entries(config_path: str | None = None, *, run_id: str | None = None, since: datetime | None = None,
                  env: Mapping[str, str] | None = None) -> list:
    """The audit log's entries (of one run, or from ``since`` on), in chain order."""
    audit = _audit_log(config_path, env)
    try:
        return list(audit.entries(run_id=run_id, since=since))
    finally:
        audit.store.close()
