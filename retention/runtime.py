"""A run's life, as one object.

:class:`Run` opens the databases and the state store, takes the lock (in the
modes that need it), emits events as the run goes (run started, batch
committed, rule ended, run ended) and, on every way out, records the end in
the audit log, releases the lock and returns the :class:`Report`.

What a run does is its :class:`Mode`, chosen from a registry: ``dry-run``
(counts, touches nothing, no lock), ``simulation`` (executes in one
rolled-back transaction per database, holds the lock), ``run`` (commits
batch by batch, holds the lock).  The audit log and the log lines are
subscribers; anything else that wants to follow a run (metrics, a progress
display) subscribes the same way::

    run = Run("policies.toml", MODES["run"]())
    run.subscribe(lambda event: print(type(event).__name__))
    report = run.execute()

SIGTERM and SIGINT ask the run to stop: the batch under way finishes (or,
if it is still running after most of ``settings.stop_timeout``, its
statement is cancelled and it rolls back), the remaining rules are skipped,
and the report says so; the process then exits 143 or 130.
"""

from __future__ import annotations

import getpass
import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from retention import commands
from retention.audit import AuditLog, AuditTrail, audit_key
from retention.config import Config
from retention.dialects.base import duration_ms
from retention.errors import ConfigError, RetentionError
from retention.events import (BatchCommitted, BatchIntent, Event, PartitionCommitted, PartitionIntent, RuleCounted,
                              RuleEnded, RunAbandoned, RunEnded, RunStarted)
from retention.execute import BatchHooks, ExecOptions, describe_error, execute_rule
from retention.ledger import LedgerWriter
from retention.locks import LockScope, RunLock, hostname
from retention.log import ProgressDisplay
from retention.plan import RulePlan
from retention.requests.fulfil import fulfil as fulfil_requests
from retention.report.model import Report, RuleOutcome
from retention.shards import Shard, crossings
from retention.state import open_store
from retention.timectx import utcnow
from retention.transactions import Simulation, Transactions

if TYPE_CHECKING:
    from retention.planfile import ReviewedPlan

log = structlog.get_logger("retention")

#: how far ``--now`` may be ahead of the clock in a run that changes data (clocks of two hosts differ)
CLOCK_SKEW = timedelta(minutes=5)


# -- modes ---------------------------------------------------------------------------

class Mode:
    """How a run treats the data: whether it executes, commits, and needs the lock."""

    name: ClassVar[str] = ""
    executes: ClassVar[bool] = False      # runs the changing statements (committed or rolled back)
    commits: ClassVar[bool] = False       # and keeps what they did
    takes_lock: ClassVar[bool] = False

    def transactions(self, engine) -> Transactions:
        return Transactions(engine)

    def prepare(self, run: "Run", plans: list[RulePlan]) -> None:
        """The rules are built and checked, nothing counted yet."""

    def counted(self, plan: RulePlan, out: RuleOutcome) -> None:
        """A rule is counted and guarded, nothing touched yet (see BatchHooks.counted)."""


MODES: dict[str, type[Mode]] = {}


def register(cls: type[Mode]) -> type[Mode]:
    MODES[cls.name] = cls
    return cls


@register
class DryRun(Mode):
    """Count what a run would do, rule by rule, against the data as it is; touch nothing."""

    name = "dry-run"


@register
class Simulate(Mode):
    """Execute everything in one transaction per database and roll it back: a run's exact numbers."""

    name = "simulation"
    executes = True
    takes_lock = True

    def transactions(self, engine) -> Transactions:
        return Simulation(engine)


@register
class Enforce(Mode):
    """Enforce the policy, one committed transaction per batch."""

    name = "run"
    executes = commits = takes_lock = True


@register
class ApplyPlan(Enforce):
    """Enforce a reviewed plan exactly: its ``now``, its rules, at most the rows it counted."""

    name = "apply"

    def __init__(self, reviewed: ReviewedPlan) -> None:
        self.reviewed = reviewed

    def prepare(self, run: "Run", plans: list[RulePlan]) -> None:
        self.reviewed.check_rules(plans, {db: e.dialect for db, e in run.session.engines.items()})

    def counted(self, plan: RulePlan, out: RuleOutcome) -> None:
        self.reviewed.limit(plan, out)


def mode_for(*, dry_run: bool = False, simulate: bool = False, reviewed: ReviewedPlan | None = None) -> Mode:
    """The mode the flags of ``commands.run`` name."""
    if reviewed is not None:
        if dry_run or simulate:
            raise ConfigError("--plan applies a reviewed plan: it cannot be combined with --dry-run or --simulate",
                              where="--plan")
        return MODES["apply"](reviewed)
    if simulate:
        return MODES["simulation"]()
    return MODES["dry-run" if dry_run else "run"]()


# -- the run -------------------------------------------------------------------------------

class Run(BatchHooks):
    """One run of a policy file, from opening the databases to the report."""

    def __init__(self, config_path: str | None, mode: Mode, *, only: list[str] | None = None,
                 now: datetime | None = None, allow_large: bool = False, show_sql: bool = False,
                 env: Mapping[str, str] | None = None, force_python: bool = False, workers: int = 1,
                 shard: Shard | None = None) -> None:
        self.config_path = config_path
        self.shard = shard
        self.mode = mode
        self.only = only
        self.now = now
        self.allow_large = allow_large
        self.show_sql = show_sql
        self.env = os.environ if env is None else env
        self.force_python = force_python
        self.workers = workers
        self.subscribers: list[Callable[[Event], None]] = []
        # batch workers report from their own threads: subscribers hear one event at a time, in order
        self._emitting = threading.RLock()
        self.stop_signal: str | None = None
        self.session: commands.Session | None = None
        self.report: Report | None = None
        self.user = _user()
        self.host = hostname()
        self._timers: list[threading.Timer] = []
        self._watched: list = []
        self._checked_out: set = set()

    @property
    def run_id(self) -> str:
        return self.session.run_id if self.session else ""

    @property
    def config(self) -> Config:
        return self.session.config

    def subscribe(self, subscriber: Callable[[Event], None]) -> None:
        """Call ``subscriber(event)`` for every event of this run, in order."""
        self.subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        with self._emitting:
            for subscriber in self.subscribers:
                subscriber(event)

    # -- BatchHooks: what the batch loop tells the run -----------------------------------------

    def stop_requested(self) -> bool:
        return self.stop_signal is not None

    def counted(self, plan, out) -> None:
        self.mode.counted(plan, out)
        self.emit(RuleCounted(self, plan, out))

    def before_commit(self, plan, batch, lo, hi, touched, cascaded) -> None:
        self.emit(BatchIntent(self, plan, batch, lo, hi, touched, dict(cascaded)))

    def committed(self, plan, batch, lo, hi, touched, cascaded, seconds=None) -> None:
        self.emit(BatchCommitted(self, plan, batch, lo, hi, touched, dict(cascaded), seconds=seconds))

    def partition_intent(self, plan, partition) -> None:
        self.emit(PartitionIntent(self, plan, partition))

    def partition_committed(self, plan, partition) -> None:
        self.emit(PartitionCommitted(self, plan, partition))

    # -- the life --------------------------------------------------------------------------------

    def execute(self) -> Report:
        """Run the policy; return the report (also when stopped by a signal or a failure)."""
        if self.mode.commits and self.now is not None:
            ahead = _aware(self.now) - utcnow()
            if ahead > CLOCK_SKEW:
                raise ConfigError(f"{self.now.isoformat()} is {_ago(ahead)} ahead of the clock: a run that changes "
                                  f"data cannot enforce ahead of time (past floors included); use `retention plan` "
                                  f"to look ahead", where="--now")
        with self._stops(), commands.open_session(self.config_path, env=self.env, now=self.now,
                                                  partial=True) as session:
            self.session = session
            structlog.contextvars.bind_contextvars(run_id=session.run_id)
            try:
                selected = commands._select_rules(session.full_config or session.config, self.only)
                store = open_store(session.config.settings.state_url, session.config.path, session.config.settings)
                try:
                    self.subscribe(AuditTrail(AuditLog(store), audit_key(self.env), session.config))
                    self.ledger = LedgerWriter(store, session.config, session.ctx.now)
                    self.subscribe(self.ledger)
                    self.subscribe(ProgressDisplay())
                    self.store = store
                    self._watch_connections([*session.engines.values(), store.engine])
                    lock = RunLock(store, session.engines, session.run_id,
                                   scope=LockScope.of(self.shard)) if self.mode.takes_lock else None
                    if lock:
                        lock.acquire()
                    try:
                        return self._live(selected, lock)
                    finally:
                        if lock:
                            lock.release()
                finally:
                    store.close()
            finally:
                structlog.contextvars.unbind_contextvars("run_id")

    def _live(self, selected: list[str] | None, lock: RunLock | None) -> Report:
        s = self.session
        report = self.report = Report(
            run_id=s.run_id, dry_run=not self.mode.commits, now=s.ctx.now, config_path=s.config.path,
            config_sha256=s.config.sha256, started_at=utcnow(), show_sql=self.show_sql,
            simulated=isinstance(self.mode, Simulate), shard=str(self.shard) if self.shard else None)
        log.info("start", mode=self.mode.name, config=s.config.path, sha256=s.config.sha256[:12],
                 now=s.ctx.now.isoformat())
        # the audit entry comes first: a run that cannot write it touches nothing
        if isinstance(self.mode, ApplyPlan):
            self.mode.reviewed.check_policy(s.config)
        self.emit(RunStarted(self))
        for run_id, reason in (lock.abandoned if lock else []):
            self.emit(RunAbandoned(self, run_id, reason))
        outcome = "failed"
        try:
            self._unreachable(selected, report)
            failed: dict[str, str] = {}
            plans = commands._prepare(s, selected, failed)
            self.mode.prepare(self, plans)
            # a shard runs every rule on its slice of the keys (retention.shards)
            for first, second, tables in (crossings(plans) if self.shard else []):
                log.warning("shards_cross", rule=first, other=second, tables=tables,
                            message="shards do not wait for each other between these rules: where they meet, a "
                                    "sharded run may do less (or act in another order) than one run; the next "
                                    "run completes it")
            self._enforce([self.shard.slice(p) for p in plans] if self.shard else plans, report, failed)
            fulfil_requests(self, self.store, report)
            report.ledger = [e.to_dict() for e in self.ledger.written]
            if not self.mode.commits and not self.shard:     # a shard's counts are no plan for a whole run
                from retention.planfile import document
                report.plan = document(report, plans, {db: e.dialect for db, e in s.engines.items()}, selected)
            elif isinstance(self.mode, ApplyPlan):
                report.plan = {"path": self.mode.reviewed.path, "sha256": self.mode.reviewed.sha256}
            outcome = _outcome(report)
            return report
        except ConfigError:
            outcome = "refused: the policy or the command line is invalid"
            raise
        except (SQLAlchemyError, RetentionError) as e:
            if self.stop_signal:
                report.interrupted = self.stop_signal
            else:
                report.errors.append(describe_error(e) if isinstance(e, SQLAlchemyError) else str(e))
            outcome = _outcome(report)
            return report
        except BaseException:
            outcome = "crashed"
            raise
        finally:
            report.finished_at = utcnow()
            if self.stop_signal:
                report.interrupted = self.stop_signal
                if outcome in ("ok", "failed", "guard_tripped"):
                    outcome = "interrupted"
            try:
                self.emit(RunEnded(self, report, outcome))
            except RetentionError as e:
                report.errors.append(str(e))
            log.info("finish", exit_code=report.exit_code, rules=len(report.rules), outcome=outcome)

    def _unreachable(self, selected: list[str] | None, report: Report) -> None:
        """The rules of databases the run could not reach: failed, each naming why."""
        s = self.session
        report.errors.extend(s.unavailable.values())
        for rule in (s.full_config.rules if s.unavailable else []):
            db = rule.table.split(".", 1)[0]
            if db in s.unavailable and rule.enabled and (not selected or rule.name in selected):
                out = RuleOutcome(rule=rule.name, action=rule.action, table=rule.table, basis=rule.basis,
                                  status="failed", error=s.unavailable[db])
                report.rules.append(out)
                self.emit(RuleEnded(self, out))

    def _enforce(self, plans: list[RulePlan], report: Report, failed: dict[str, str]) -> None:
        s = self.session
        opts = ExecOptions(dry_run=not self.mode.executes, allow_large=self.allow_large,
                           force_python=self.force_python, show_sql=self.show_sql, workers=self.workers,
                           batch_size=s.config.settings.batch_size, simulated=isinstance(self.mode, Simulate))
        txs = {db: self.mode.transactions(e) for db, e in s.engines.items()}
        try:
            for plan in plans:
                if self.stop_signal:
                    report.skipped.append(plan.rule.name)
                    continue
                if plan.rule.name in failed:
                    out = RuleOutcome(rule=plan.rule.name, action=plan.rule.action, table=plan.rule.table,
                                      basis=plan.rule.basis, status="failed", error=failed[plan.rule.name])
                    report.rules.append(out)
                    self.emit(RuleEnded(self, out))
                    continue
                out = execute_rule(txs[plan.table.db], plan, s.config.settings, s.ctx, opts, hooks=self)
                if not self.mode.executes:
                    out.overlaps = commands.overlaps(plan, plans)
                if self.stop_signal and (out.status == "failed" or out.remaining):
                    out.status = "interrupted"
                report.rules.append(out)
                self.emit(RuleEnded(self, out))
        finally:
            for tx in txs.values():
                tx.close()

    # -- stops -------------------------------------------------------------------------------------

    @contextmanager
    def _stops(self) -> Iterator[None]:
        """Turn SIGTERM and SIGINT into a stop request for the whole of the run.

        The signals are blocked in every thread and received by a watcher
        thread (``sigwait``): a Python signal handler would only run once the
        main thread's database call returns, which may be a long wait for a
        lock.  Only from the main thread: elsewhere the caller owns signals.
        """
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        signals = {signal.SIGTERM, signal.SIGINT}
        # before any thread starts (lease renewal, timers): they inherit the blocked mask
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        done = threading.Event()

        def watch() -> None:
            while True:
                signum = signal.sigwait(signals)
                if done.is_set():
                    return
                self._on_signal(signum)

        watcher = threading.Thread(target=watch, name="retention-stops", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            done.set()
            signal.pthread_kill(watcher.ident, signal.SIGTERM)     # wakes the watcher, which then ends
            watcher.join(timeout=5)
            for timer in self._timers:
                timer.cancel()
            for engine in self._watched:
                sa.event.remove(engine, "checkout", self._on_checkout)
                sa.event.remove(engine, "checkin", self._on_checkin)
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _watch_connections(self, engines) -> None:
        """Know the connections in use, to cancel their statements if a stop takes too long."""
        for engine in engines:
            sa.event.listen(engine, "checkout", self._on_checkout)
            sa.event.listen(engine, "checkin", self._on_checkin)
            self._watched.append(engine)

    def _on_signal(self, signum) -> None:
        if self.stop_signal:
            return
        self.stop_signal = signal.Signals(signum).name
        log.warning("stopping", signal=self.stop_signal,
                    message="finishing or rolling back the batch under way; the remaining rules are skipped")
        timeout = duration_ms(self.session.config.settings.stop_timeout) / 1000 if self.session else 10.0
        # at four fifths of stop_timeout the statement under way is cancelled (its batch rolls back),
        # leaving time for the audit entry and the report; at stop_timeout the process ends regardless
        for seconds, action in ((timeout * 0.8, self._cancel_statements), (timeout, self._give_up)):
            timer = threading.Timer(seconds, action)
            timer.daemon = True
            timer.start()
            self._timers.append(timer)

    def _give_up(self) -> None:
        """Still not ended at stop_timeout (a wait no cancel reaches): exit; the databases roll back."""
        code = 130 if self.stop_signal == "SIGINT" else 143
        os.write(2, (f"error: {self.stop_signal}: not stopped within settings.stop_timeout; exiting now. The "
                     f"batch under way is rolled back by the database; the audit log shows its intent "
                     f"without an outcome.\n").encode())
        os._exit(code)

    def _on_checkout(self, dbapi_conn, _record, _proxy) -> None:
        self._checked_out.add(dbapi_conn)

    def _on_checkin(self, dbapi_conn, _record) -> None:
        self._checked_out.discard(dbapi_conn)

    def _cancel_statements(self) -> None:
        """The batch under way did not finish in time: cancel its statement, so it rolls back."""
        log.warning("stopping", message="stop_timeout is near: cancelling the statement under way")
        for conn in list(self._checked_out):
            driver = getattr(conn, "driver_connection", conn)
            try:
                if hasattr(driver, "cancel"):        # psycopg
                    driver.cancel()
                elif hasattr(driver, "interrupt"):   # sqlite3
                    driver.interrupt()
            except Exception:      # noqa: BLE001 - the connection may have just ended
                pass


def _outcome(report: Report) -> str:
    if report.interrupted:
        return "interrupted"
    if report.errors or any(r.status in ("failed", "check_failed") for r in report.rules):
        return "failed"
    if any(r.status == "guard_tripped" for r in report.rules):
        return "guard_tripped"
    return "ok"


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=utcnow().tzinfo)


def _ago(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.0f} days"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):      # a container user without a passwd entry
        return f"uid {os.getuid()}"
