"""The contenders: one raw statement, `retention run` (as cron starts it), pt-archiver; and what each costs.

Every contender runs on a fresh copy of the same template.  What is measured:

- wall seconds: the raw statement from BEGIN to after COMMIT, in the benchmark's
  process; `retention` and pt-archiver as whole processes, from spawn to exit
  (interpreter start and imports included: that is what a cron job costs);
- `retention`'s run itself: its report's ``started_at`` to ``finished_at``, and
  once per engine the start of a process that touches no database
  (:func:`process_start`), so the fixed cost of a process shows apart;
- peak RSS of the process (``wait4``'s ``ru_maxrss``);
- batch durations: `retention`'s from its audit log (``transaction_ms`` on each
  ``batch-committed`` entry: BEGIN to COMMIT); the raw statement is one batch;
- WAL bytes on PostgreSQL (``pg_current_wal_lsn()`` before and after).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from data import NOW, Scenario, cutoff

ROOT = Path(__file__).resolve().parent.parent


def retention_command() -> list[str]:
    """The installed `retention` entry point next to this interpreter (else ``python -m retention``)."""
    exe = Path(sys.executable).with_name("retention")
    return [str(exe.absolute())] if exe.exists() else [sys.executable, "-m", "retention"]


def retention_supports_workers() -> bool:
    """`retention run --workers N` exists in this build (read from its --help)."""
    out = subprocess.run([*retention_command(), "run", "--help"], capture_output=True, text=True)
    return "--workers" in out.stdout


def pt_archiver() -> str | None:
    return shutil.which("pt-archiver")


@dataclass
class Measure:
    """One contender's run of one scenario."""

    contender: str
    seconds: float | None = None
    rows: int | None = None              # rows changed on the rule's table (+ cascaded, for the cascade)
    batches: int | None = None
    batch_ms: list[float] = field(default_factory=list)
    maxrss_kb: int | None = None
    wal_bytes: int | None = None
    in_run_seconds: float | None = None  # retention: the run itself, without interpreter start and imports
    checksum: str | None = None
    held_left: int | None = None
    status: str = "ok"                   # ok | n/a | failed
    note: str = ""

    @property
    def longest_ms(self) -> float | None:
        return max(self.batch_ms) if self.batch_ms else None

    @property
    def p99_ms(self) -> float | None:
        if not self.batch_ms:
            return None
        ordered = sorted(self.batch_ms)
        return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def na(contender: str, why: str) -> Measure:
    return Measure(contender, status="n/a", note=why)


def _params(engine, scenario: Scenario) -> dict:
    return {"cutoff": engine.cutoff_param(cutoff(scenario.fraction))}


def _lsn(engine, url: str) -> int | None:
    eng = engine.engine(url)
    try:
        with eng.connect() as conn:
            return engine.wal_lsn(conn)
    finally:
        eng.dispose()


def counts(engine, url: str, queries: list[str], scenario: Scenario) -> tuple[list[int], float]:
    """Run count queries on a fresh connection; return their results and the seconds they took."""
    eng = engine.engine(url)
    try:
        t0 = time.perf_counter()
        with eng.connect() as conn:
            out = [int(conn.execute(sa.text(q), _params(engine, scenario)).scalar() or 0) for q in queries]
        return out, time.perf_counter() - t0
    finally:
        eng.dispose()


def raw(engine, url: str, scenario: Scenario) -> Measure:
    """The raw statement(s) in one transaction: the fastest way to do the job, and the longest lock."""
    before = _lsn(engine, url)
    eng = engine.engine(url)
    try:
        rows = []
        with eng.connect() as conn:
            t0 = time.perf_counter()
            with conn.begin():
                for s in scenario.raw(engine):
                    rows.append(conn.execute(sa.text(s), _params(engine, scenario)).rowcount)
            seconds = time.perf_counter() - t0
    finally:
        eng.dispose()
    after = _lsn(engine, url)
    return Measure("raw statement", seconds=seconds, rows=sum(rows), batches=1, batch_ms=[seconds * 1000],
                   wal_bytes=None if before is None else after - before, note=f"rows per statement {rows}")


#: Started by the benchmark, starts the contender and reports its exit, wall time and peak RSS.
#: Linux carries the parent's peak RSS into a child across fork and exec: forked from the
#: benchmark's own (large) process, every contender would report at least its size.
_LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - t0
with open(sys.argv[1], "w") as f:
    json.dump({"code": os.waitstatus_to_exitcode(status), "seconds": seconds, "maxrss_kb": usage.ru_maxrss}, f)
"""


def _spawn(argv: list[str], cwd: Path, log: Path) -> tuple[int, float, int]:
    """Run ``argv`` (an absolute path first); return (exit code, wall seconds, peak RSS in KiB, children included)."""
    out = log.with_suffix(".rusage.json")
    with open(log, "wb") as err:
        subprocess.run([sys.executable, "-S", "-c", _LAUNCHER, str(out), *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                       stdout=err, stderr=subprocess.STDOUT, check=True)
    got = json.loads(out.read_text())
    return got["code"], got["seconds"], got["maxrss_kb"]


#: a `retention run` process that touches no database: the run's imports, this engine's modules and
#: driver (an engine made, never connected), then exit -- what every run pays before its first statement
_START = ("import sys, retention.cli, retention.commands, retention.runtime; from retention.schema import make_engine; "
          "make_engine(sys.argv[1]).dispose()")


def process_start(url: str, workdir: Path, label: str, repeat: int = 3) -> float:
    """The process start cost of `retention` on this engine (median wall seconds of ``repeat`` no-op processes)."""
    run_dir = workdir / label
    run_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for _ in range(repeat):
        code, seconds, _rss = _spawn([sys.executable, "-c", _START, url], run_dir, run_dir / "stderr.log")
        if code != 0:
            raise RuntimeError(f"the no-op retention process failed (exit {code}): "
                               f"{(run_dir / 'stderr.log').read_text(errors='replace')[-1500:]}")
        samples.append(seconds)
    return round(sorted(samples)[len(samples) // 2], 3)


def batch_durations(state_db: Path) -> list[float]:
    """Each committed batch's transaction time (ms), from the run's audit log in its state store."""
    from retention.audit import AuditLog
    from retention.state import StateStore
    eng = sa.create_engine(f"sqlite:///{state_db}")
    try:
        return [float(e.body["transaction_ms"]) for e in AuditLog(StateStore(eng)).entries()
                if e.kind == "batch-committed" and e.body.get("transaction_ms") is not None]
    finally:
        eng.dispose()


def retention_run(engine, url: str, scenario: Scenario, policy_text: str, workdir: Path, name: str,
                  extra: list[str] = ()) -> Measure:
    """`retention run` in a fresh process, as cron starts it, with a fresh state store."""
    run_dir = workdir / re.sub(r"[^a-z0-9]+", "-", f"{engine.name} {scenario.name} {name}".lower())
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "policies.toml").write_text(policy_text)
    before = _lsn(engine, url)
    code, seconds, rss = _spawn([*retention_command(), "run", "-c", "policies.toml", "--now", NOW.isoformat(),
                                 "--format", "json", "--out", "report.json", "--log-format", "json", *extra],
                                run_dir, run_dir / "stderr.log")
    after = _lsn(engine, url)
    m = Measure(name, seconds=seconds, maxrss_kb=rss, wal_bytes=None if before is None else after - before)
    try:
        report = json.loads((run_dir / "report.json").read_text())
    except (OSError, ValueError):
        report = None
    if code != 0 or report is None:
        tail = (run_dir / "stderr.log").read_text(errors="replace")[-1500:]
        m.status, m.note = "failed", f"exit {code}: {tail}"
        return m
    rule = report["rules"][0]
    m.rows = rule["touch"] + sum(c["rows"] for c in rule.get("cascades") or [])
    m.batches = rule["batches"]
    if report.get("started_at") and report.get("finished_at"):
        m.in_run_seconds = (datetime.fromisoformat(report["finished_at"])
                            - datetime.fromisoformat(report["started_at"])).total_seconds()
    m.batch_ms = batch_durations(run_dir / "retention-state.db")
    if rule["status"] != "ok":
        m.status, m.note = "failed", f"rule {rule['status']}: {rule.get('error')}"
    return m


def retention_plan(policy_text: str, workdir: Path, label: str, command: str = "plan") -> tuple[float, float | None]:
    """`retention plan` (or a run with nothing due): (process seconds, in-run seconds)."""
    run_dir = workdir / label
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "policies.toml").write_text(policy_text)
    code, seconds, _rss = _spawn([*retention_command(), command, "-c", "policies.toml", "--now", NOW.isoformat(),
                                  "--format", "json", "--out", "report.json", "--log-format", "json"],
                                 run_dir, run_dir / "stderr.log")
    if code != 0:
        raise RuntimeError(f"retention {command} failed (exit {code}): "
                           f"{(run_dir / 'stderr.log').read_text(errors='replace')[-1500:]}")
    report = json.loads((run_dir / "report.json").read_text())
    in_run = None
    if report.get("started_at") and report.get("finished_at"):
        in_run = (datetime.fromisoformat(report["finished_at"]) - datetime.fromisoformat(report["started_at"])
                  ).total_seconds()
    return seconds, in_run


def policy_accepted(policy_text: str, workdir: Path, label: str) -> str | None:
    """None if `retention plan` accepts the policy, else why not (a key not built yet is refused, exit 2)."""
    run_dir = workdir / label
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "policies.toml").write_text(policy_text)
    proc = subprocess.run([*retention_command(), "plan", "-c", "policies.toml", "--now", NOW.isoformat(),
                           "--log-format", "json"], cwd=run_dir, capture_output=True, text=True)
    if proc.returncode == 2:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return (lines[-1] if lines else "refused")[:200]
    return None


def pt_archive(engine, url: str, scenario: Scenario, batch_size: int, workdir: Path) -> Measure:
    """Percona's pt-archiver at its best settings for a purge, with retention's batch size."""
    exe = pt_archiver()
    if exe is None:
        return na("pt-archiver", "pt-archiver is not installed (Debian: apt-get install percona-toolkit)")
    t = scenario.table
    where = scenario.raw(engine)[0].split(" WHERE ", 1)[1].replace(
        ":cutoff", f"'{cutoff(scenario.fraction):%Y-%m-%d %H:%M:%S}'")
    log = workdir / f"pt-archiver-{re.sub(r'[^a-z0-9]+', '-', scenario.name.lower())}.log"
    code, seconds, rss = _spawn([exe, "--source", engine.pt_archiver_dsn(t), "--where", where, "--purge",
                                 "--primary-key-only", "--bulk-delete", "--commit-each", "--limit", str(batch_size),
                                 "--no-check-charset", "--no-version-check", "--statistics"], workdir, log)
    text = log.read_text(errors="replace")
    if code != 0:
        return Measure("pt-archiver", status="failed", note=f"exit {code}: {text[-1500:]}")
    deleted = re.search(r"^DELETE\s+(\d+)", text, re.M)
    return Measure("pt-archiver", seconds=seconds, maxrss_kb=rss, rows=int(deleted.group(1)) if deleted else None,
                   note="--purge --primary-key-only --bulk-delete --commit-each "
                        f"--limit {batch_size} (batch times not reported by pt-archiver)")
