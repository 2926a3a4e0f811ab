"""A rule from count to commit: guard, then batches, one transaction each."""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import SQLAlchemyError

from retention.config import Settings
from retention.errors import RetentionError
from retention.execute.batch import NOT_DONE, RangeTooLarge, _batch, _candidates, _locks_parents, _tally
from retention.execute.cascade import empty_cascades
from retention.execute.count import count_rule, count_touch
from retention.execute.errors import describe_error
from retention.execute.keys import KeyWalk, _beyond, _next_bound, _range, stepped
from retention.execute.options import BatchHooks, ExecOptions
from retention.execute.pace import AIM, Pace, ceiling
from retention.execute.pages import PageWalk, pages_of
from retention.execute.partitions import take_partitions
from retention.execute.show import show_statement
from retention.plan import RulePlan
from retention.report.model import Cascade, RuleOutcome
from retention.timectx import TimeContext
from retention.transactions import EnoughRecorded, Held, Recording, Transactions

log = structlog.get_logger("retention.execute")


def guard_state(out: RuleOutcome, plan: RulePlan, allow_large: bool, whole: int | None = None) -> None:
    """Trip the guard when the rule would touch more than ``max_rows`` or ``max_fraction``.

    A tripped rule touches nothing, in a dry run as in a run, so both report 0
    touched and ``guard.rows`` says how many it would have touched.  A shard
    passes ``whole``, what the whole rule would touch: the limits are checked
    against that, so every shard decides as one run would.
    """
    out.guard.rows = out.touch
    counted = out.touch if whole is None else whole
    out.guard.rule_rows = whole
    limit_rows = plan.max_rows
    over = limit_rows is not None and counted > limit_rows
    if out.guard.table_rows and counted > plan.max_fraction * out.guard.table_rows:
        over = True
    if over:
        out.guard.state = "allowed" if allow_large else "tripped"
        if not allow_large:
            out.status = "guard_tripped"
            out.remaining, out.touch = out.remaining + out.touch, 0
            out.cascades = [Cascade(c.table, c.action, c.via, 0) for c in out.cascades]


def execute_rule(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
                 opts: ExecOptions, hooks: BatchHooks | None = None) -> RuleOutcome:
    """Count the rule, check its guard, and (unless dry) enforce it batch by batch."""
    started = time.monotonic()
    rule = plan.rule
    hooks = hooks or BatchHooks()
    try:
        with tx.read() as conn:
            out = count_rule(conn, plan, ctx, opts)
            whole = None if plan.whole is None else count_touch(conn, plan.whole, opts)
        guard_state(out, plan, opts.allow_large, whole)
        hooks.counted(plan, out)
        if opts.show_sql:
            out.statements = statements(tx, plan, settings, ctx, opts, limit=out.guard.rows)
        if opts.dry_run and out.status in ("ok", "incomplete"):
            take_partitions(tx, plan, ctx, opts, out, hooks)
        if not opts.dry_run and out.status in ("ok", "incomplete"):
            # from here on the outcome says what was committed, batch by batch, even if a later batch fails
            out.touch, out.batches = 0, 0
            if plan.cascade:
                out.cascades = list(empty_cascades(plan).values())
            # the run does at most what was counted and guarded: rows that become workable
            # meanwhile (a hold released, a row unblocked by this very rule) wait for the next run
            # whole partitions first (partitions = "drop" | "detach"): their rows count in out.touch
            take_partitions(tx, plan, ctx, opts, out, hooks)
            if out.guard.rows > out.touch:
                _enforce(tx, plan, settings, ctx, opts, out, limit=out.guard.rows, hooks=hooks)
            # counted rows not touched, including those the batches could not do (out.not_done)
            out.remaining = out.due - out.protected_total - out.unchanged - out.touch
        if rule.check is not None:
            _judge(tx, plan, opts, out)
    except (SQLAlchemyError, RetentionError) as e:
        out = locals().get("out") or RuleOutcome(rule=rule.name, action=rule.action, table=rule.table,
                                                 basis=rule.basis)
        out.status, out.error = "failed", describe_error(e)
        # what the run meant to touch and did not (its committed batches are in touch)
        out.remaining = max(0, out.due - out.protected_total - out.unchanged - out.touch)
    out.cutoff = plan.cutoff if isinstance(plan.cutoff, datetime) else None
    out.duration_seconds = round(time.monotonic() - started, 3)
    log.info("rule", rule=rule.name, action=rule.action, table=rule.table, status=out.status,
             dry_run=opts.dry_run or opts.simulated, due=out.due, protected=out.protected_total, touch=out.touch,
             cascaded=out.cascaded_total, batches=out.batches, seconds=out.duration_seconds,
             error=out.error)
    return out


def _judge(tx: Transactions, plan: RulePlan, opts: ExecOptions, out: RuleOutcome) -> None:
    """The rule's k-anonymity check, on what the run wrote; a class below k fails the rule's check."""
    from retention.execute.kanonymity import k_anonymity, not_judged
    why = "dry_run" if opts.dry_run else "stopped" if out.status not in ("ok", "incomplete") \
        else "shard" if plan.whole is not None else None
    if why:
        out.check = not_judged(plan, why)
        return
    with tx.read() as conn:
        out.check = k_anonymity(conn, plan)
    if not out.check["passed"] and out.status == "ok":
        out.status = "check_failed"


#: a batch that meets one of these (a child committed under a row being deleted, a deadlock)
#: is rolled back and tried again, at most this many times in all
BATCH_ATTEMPTS = 5
#: seconds a batch waits before it is tried again, doubled after each attempt, give or take half
RETRY_PAUSE = 0.05


_NO_MORE = object()


def _enforce(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
             opts: ExecOptions, out: RuleOutcome, limit: int, hooks: BatchHooks) -> None:
    """Run the batches, adding each committed batch's counts to ``out``; touch at most ``limit`` rows.

    A batch the database could not finish as selected (a trigger cancelled a
    delete, a value could not be read) still commits what it did; the rest is
    counted under ``out.not_done`` and the batches move on past it.  ``hooks``
    hear of each batch before it commits and after, and may ask the run to stop.
    """
    # a batch's locked keys are bound one parameter per key column, unless as arrays
    per_key = _locks_parents(plan) and not plan.impl.binds_key_arrays
    pace = Pace(settings.max_batch_seconds,
                ceiling(settings, len(plan.pk_columns) if per_key else None, plan.impl.max_bind_params))
    lines = dict(zip(empty_cascades(plan), out.cascades))
    met: dict[str, int] = {}
    try:
        _Batches(tx, plan, ctx, opts, out, limit, pace, lines, met, hooks).run(workers(tx, plan, opts))
    finally:
        for reason, n in met.items():
            # the count already found the values it could not read or anonymize (the batches
            # may not reach them all); what the database refused only the batches can see
            known = next((d.rows for d in out.not_done if d.reason == reason), 0)
            if reason in ("unreadable", "refused"):
                n = max(0, n - known)
            out.add_not_done(reason, n, NOT_DONE[reason])


class _OverAllowance(RangeTooLarge):
    """A computed range held more rows than the run may still touch: roll its batch back."""


def _walk(tx: Transactions, plan: RulePlan, exact: bool, rows: int) -> KeyWalk | PageWalk | None:
    """Computed ranges where they are safe, else None (each batch's bound found by a query).

    Over an integer key, key ranges (:class:`KeyWalk`); over any other key,
    page ranges where the engine has them (:class:`PageWalk`, starting from
    the ``rows`` the run counted).  A statement that changes fewer rows than a
    batch selected is how the job sees a trigger or rule refusing a row
    (NOT_DONE); a table with triggers or rules keeps a bound query per batch so
    that the selected rows are counted.
    """
    keys = stepped(plan)
    if not keys and not plan.impl.page_ranges:
        return None
    if keys and not exact:
        return KeyWalk()
    with tx.read() as conn:
        if exact and plan.impl.rewrites_writes(conn, plan.table.table):
            return None
        if keys:
            return KeyWalk()
        pages = pages_of(conn, plan)
    return None if pages is None else PageWalk(pages, rows)


def _next_range(conn, plan: RulePlan, pred: sa.ColumnElement, lo, walk: KeyWalk | PageWalk | None, rows: int,
                allowance: int, exact: bool, seconds: float = 0.0) -> tuple:
    """The next batch's range as ``(lo, hi, selected, computed)``, read in the batch's transaction.

    ``hi`` is None when no row is left.  Unless the range is ``computed`` (no
    query reads it before the write), a query found its rows, stopping at the
    allowance where every candidate is touched, and ``selected`` is how many
    there are (when each of them is to be touched, else None).  Page ranges
    are always computed; ``seconds`` is what a batch's statements should take.
    """
    if isinstance(walk, PageWalk):
        lo, hi = walk.next_range(conn, plan, lo, rows, seconds)
        return lo, hi, (0 if hi is None else None), hi is not None
    size = max(1, min(rows, allowance)) if exact else rows
    if walk is None:
        hi, selected = _next_bound(conn, plan, pred, lo, size, counted=True)
        return lo, hi, (int(selected) if exact else None), False
    if walk.seek or lo is None:
        hi, selected = walk.probe(conn, plan, pred, lo, size)
        return lo, hi, (selected if exact else None), False
    return lo, walk.step(lo, rows), None, True


class _Batches:
    """The batches of one rule, run by one worker or several over disjoint ranges.

    What the workers share sits behind one lock: where the next range starts,
    the rows claimed against the allowance, the tallies.  A worker takes the
    next range under the lock (a computed one at once; a query's, inside its
    own transaction), writes it concurrently with the others, then, still
    inside its transaction, claims its rows.  A claim that would pass the
    allowance (rows became workable since the count, or the other workers'
    batches took the rest), or a computed range that held more rows than a
    batch may take, rolls the batch back; the worker then finishes its range
    with batches whose query stops in time.  So the run never touches more
    than it counted, whatever the number of workers, and each batch commits
    whole or not at all.
    """

    def __init__(self, tx: Transactions, plan: RulePlan, ctx: TimeContext, opts: ExecOptions,
                 out: RuleOutcome, limit: int, pace: Pace, lines: dict, met: dict, hooks: BatchHooks) -> None:
        self.tx, self.plan, self.ctx, self.opts, self.out = tx, plan, ctx, opts, out
        self.limit, self.pace, self.lines, self.met, self.hooks = limit, pace, lines, met, hooks
        self.candidates, self.exact = _candidates(plan, opts)
        self.walk = _walk(tx, plan, self.exact, limit - out.touch)
        self.lock = threading.Lock()
        self.lo = None              # where the next range starts
        # rows of batches committed or committing, refused rows included; whole partitions
        # taken before the batches (partitions = "drop") already used part of the allowance
        self.claimed = out.touch
        self.numbered = 0
        self.done = False
        self.failed: BaseException | None = None

    def run(self, workers: int) -> None:
        if workers <= 1:
            self.work()
            return
        threads = [threading.Thread(target=self._worker, name=f"batches-{i}", daemon=True)
                   for i in range(1, workers)]
        for t in threads:
            t.start()
        self._worker()
        for t in threads:
            t.join()
        if self.failed is not None:
            raise self.failed

    def _worker(self) -> None:
        try:
            self.work()
        except BaseException as e:      # the first failure stops the others and is the rule's
            with self.lock:
                if self.failed is None:
                    self.failed = e

    def work(self) -> None:
        """Take ranges and run their batches until none is left, the allowance is used up, or a stop."""
        rest = None                     # what is left of this worker's range, done by bounded batches (_rest)
        while (rest is not None or not self.done) and self.failed is None and not self.hooks.stop_requested():
            with self.lock:
                allowance = self.limit - self.claimed
            if allowance <= 0:
                return
            more, rest = self._one(allowance, rest)
            if not more:
                return

    def _one(self, allowance: int, rest: tuple | None) -> tuple[bool, tuple | None]:
        """One batch (retried where the engine says it may succeed): (whether to go on, the range left)."""
        plan, pace = self.plan, self.pace
        t0 = time.monotonic()
        attempt, halvings = 0, 0
        while True:
            attempt += 1
            cascaded = {key: 0 for key in self.lines}
            short: dict[str, int] = {}
            claim, start, hi, number = 0, None, None, None
            held = Held()
            try:
                with self.tx.batch(held) as conn:
                    if rest is not None:
                        size = max(1, min(pace.rows, allowance)) >> halvings if self.exact else pace.rows
                        if not size:
                            return False, None
                        start, hi, selected, last = _within(conn, plan, self.candidates, rest, size, self.exact)
                        computed = False
                    else:
                        start, hi, selected, computed = self._take(conn, allowance)
                    if hi is None:
                        return rest is not None, None
                    w0 = time.monotonic()
                    touched = _batch(conn, plan, self.ctx, self.opts, self._where(start, hi, rest), cascaded,
                                     allowance, short=short, selected=selected,
                                     cap=pace.ceiling if computed else None)
                    working = time.monotonic() - w0
                    claim = touched + short.get("cancelled", 0) + short.get("changed", 0)
                    with self.lock:
                        if claim > self.limit - self.claimed or (computed and claim > pace.ceiling):
                            allowance, claim = self.limit - self.claimed, 0
                            raise _OverAllowance()
                        self.claimed += claim
                        self.numbered += 1
                        number = self.numbered
                    self.hooks.before_commit(plan, number, *self._bounds(start, hi, rest), touched, cascaded)
                break
            except RangeTooLarge:       # over the allowance, or a computed range over the ceiling
                if allowance <= 0:
                    return False, None
                if rest is not None:
                    halvings += 1       # rows keep arriving in the range: ask for fewer
                rest = self._rest(start, hi) if rest is None else rest
            except BaseException as e:
                if claim:
                    with self.lock:
                        self.claimed -= claim
                        if number == self.numbered:      # no later batch took a number: reuse it
                            self.numbered -= 1
                if not isinstance(e, SQLAlchemyError) or attempt >= BATCH_ATTEMPTS or not plan.impl.retryable(e):
                    raise
                log.warning("batch_retry", rule=plan.rule.name, attempt=attempt, error=describe_error(e))
                # the transactions that collided (workers, shards, the application) would meet again if
                # all retried at once: each waits a random moment, twice as long after each attempt
                # (0.05, 0.1, 0.2, 0.4 s, give or take half: about 0.75 s in all, then the rule fails)
                time.sleep(RETRY_PAUSE * 2 ** (attempt - 1) * (0.5 + random.random()))
                if rest is None and hi is not None:
                    rest = self._rest(start, hi)
        # committed: only now does the batch count
        with self.lock:
            self.out.touch += touched
            self.out.batches += 1
            for key, n in cascaded.items():
                self.lines[key].rows += n
            for reason, n in short.items():
                _tally(self.met, reason, n)
            if computed:
                self.walk.learn(start, hi, touched + sum(short.values()), working)
            elapsed = time.monotonic() - t0
            pace.learn(touched, elapsed, working)
        lo_, hi_ = self._bounds(start, hi, rest)
        self.hooks.committed(plan, number, lo_, hi_, touched, cascaded, held.seconds)
        log.debug("batch", rule=plan.rule.name, lo=lo_, hi=hi_, rows=touched, next_rows=pace.rows,
                  seconds=round(elapsed, 3))
        return True, (None if rest is None or last else (hi, rest[1], rest[2]))

    def _pages(self, rest: tuple | None) -> bool:
        """Whether the batch's range is a computed page range (not a rest, whose bounds are keys)."""
        return rest is None and isinstance(self.walk, PageWalk)

    def _where(self, start, hi, rest: tuple | None) -> sa.ColumnElement:
        """The rows of the batch's range: pages ``[start, hi)``, or keys ``(start, hi]`` (inside a rest's pages)."""
        if self._pages(rest):
            return self.plan.impl.page_range(self.plan.table.table, start, hi)
        keys = _range(self.plan, start, hi)
        return keys if rest is None or rest[2] is None else sa.and_(rest[2], keys)

    def _bounds(self, start, hi, rest: tuple | None) -> tuple:
        """The batch's bounds as the hooks (the audit log) see them: keys, or pages (not personal data)."""
        unit = self.plan.impl.page_unit
        return (f"{unit} {start}", f"{unit} {hi}") if self._pages(rest) else (start, hi)

    def _rest(self, start, hi) -> tuple:
        """A computed range found too large, as ``(lo, hi, scope)``: keys after ``lo`` up to ``hi``
        (None: no bound), within the rows ``scope`` selects (a page range; None: the keys alone)."""
        if isinstance(self.walk, PageWalk):
            return None, None, self.plan.impl.page_range(self.plan.table.table, start, hi)
        return start, hi, None

    def _take(self, conn, allowance: int) -> tuple:
        """The next range ``(lo, hi, selected, computed)``, taken under the lock."""
        pace = self.pace
        with self.lock:
            if self.done:
                return self.lo, None, 0, False
            # a computed range aims under a large ceiling: its rows are only known once written, and
            # one over the ceiling is done again (with few rows, cheaply; with many, rarely)
            margin = pace.ceiling // 5 if pace.ceiling >= 50 else 0
            aim = pace.rows if self.walk is None or pace.rows < pace.ceiling - margin else pace.ceiling - margin
            taken = _next_range(conn, self.plan, self.candidates, self.lo, self.walk, aim, allowance, self.exact,
                                seconds=pace.seconds * AIM)
            if taken[1] is None:
                self.done = True
            else:
                self.lo = taken[1]
            return taken


def _within(conn, plan: RulePlan, pred: sa.ColumnElement, rest: tuple, size: int, exact: bool) -> tuple:
    """The next ``size`` rows of ``pred`` inside ``rest`` (see ``_Batches._rest``):
    ``(lo, their last key, count, whether they are the last of the rest)``."""
    lo, hi, scope = rest
    inside = sa.and_(pred, *([] if hi is None else [_beyond(plan, "<=", hi)]), *([] if scope is None else [scope]))
    found, selected = _next_bound(conn, plan, inside, lo, size, counted=True)
    last = found is None or (hi is not None and found == hi) or (scope is not None and int(selected) < size)
    return lo, found, (int(selected) if exact and found is not None else None), last


def workers(tx: Transactions, plan: RulePlan, opts: ExecOptions) -> int:
    """How many workers run the rule's batches: ``opts.workers`` where the engine writes concurrently.

    SQLite has one writer at a time (each batch holds the database's write
    lock), and a simulation or ``--sql`` runs on one connection: there, one.
    """
    if opts.workers <= 1 or type(tx) is not Transactions:
        return 1
    if not plan.impl.concurrent_writers:
        log.warning("workers", rule=plan.rule.name, workers=1, asked=opts.workers,
                    why=f"{plan.impl.name} writes one transaction at a time: more workers would only wait")
        return 1
    return opts.workers


def statements(tx: Transactions, plan: RulePlan, settings: Settings, ctx: TimeContext,
               opts: ExecOptions, limit: int) -> list[str]:
    """The statements the rule's first batch sends, with their values (``--sql``).

    The batch really runs, through the same code as a run's, inside a
    transaction that is then rolled back; what the database received is what
    is shown.  Values a strategy computed in Python are not shown (they derive
    from the row's personal data); keys, cutoffs and the policy's own values are.
    ``limit`` is what the run would touch (its guard's count), as in a run.
    """
    if not limit:
        return ["-- no row needs this rule now: a run sends no batch"]
    recording = Recording(tx)
    scratch = RuleOutcome(rule=plan.rule.name, action=plan.rule.action, table=plan.rule.table,
                          cascades=list(empty_cascades(plan).values()) if plan.cascade else [])
    try:
        _enforce(recording, plan, settings, ctx, opts, scratch, limit=limit, hooks=BatchHooks())
    except EnoughRecorded:
        pass
    return [show_statement(*sent) for sent in recording.sent]
