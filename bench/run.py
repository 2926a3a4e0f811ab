#!/usr/bin/env python
"""Benchmark `retention run` against one raw statement, `--workers 2` and pt-archiver, on durable servers.

    .venv/bin/python bench/run.py                      # SQLite, PostgreSQL, MariaDB; 2,000,000 rows
    .venv/bin/python bench/run.py --large              # 10,000,000 rows
    .venv/bin/python bench/run.py --rows 20000 --engines sqlite --no-save
    .venv/bin/python bench/run.py --write-results      # also write bench/RESULTS.md

Every contender of a scenario runs on a fresh copy of the same template, on the
same server, in the same run; the ratio is raw seconds / contender seconds.
Each contender's result is checked against the raw statement's: same rows
changed, same checksum of the tables afterwards, every held row left.

See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import contenders as C  # noqa: E402
from data import FAMILIES, SCENARIOS, Scenario, after_days, policy  # noqa: E402
from engines import ENGINES, Engine, EngineUnavailable  # noqa: E402
from report import median_measure, render  # noqa: E402

DEFAULT_ROWS, LARGE_ROWS = 2_000_000, 10_000_000


def batch_size_default() -> int:
    """retention's own default batch size: pt-archiver gets the same."""
    from retention.config import Settings
    return int(Settings.model_fields["batch_size"].default)


def as_dict(m: C.Measure) -> dict:
    d = asdict(m)
    d["longest_ms"], d["p99_ms"] = m.longest_ms, m.p99_ms
    d["batch_ms"] = [round(x, 1) for x in m.batch_ms]
    return d


class Bench:
    """One engine's share of the benchmark."""

    def __init__(self, engine: Engine, rows: int, repeat: int, workdir: Path, log, workers: bool,
                 batch_size: int) -> None:
        self.e, self.rows, self.repeat, self.workdir, self.log = engine, rows, repeat, workdir, log
        self.workers, self.batch_size = workers, batch_size

    def contenders(self, s: Scenario, url: str) -> list[tuple[str, object]]:
        """(name, how to run it on a fresh copy's URL, or a reason it is n/a) for one scenario."""
        out: list[tuple[str, object]] = [("raw statement", lambda u: C.raw(self.e, u, s))]
        text = lambda u, **kw: policy(u, s, **kw)  # noqa: E731
        out.append(("retention (defaults)",
                    lambda u: C.retention_run(self.e, u, s, text(u), self.workdir, "retention (defaults)")))
        if self.workers:
            out.append(("retention --workers 2", lambda u: C.retention_run(
                self.e, u, s, text(u), self.workdir, "retention --workers 2", ["--workers", "2"])))
        else:
            out.append(("retention --workers 2", "this build of retention has no `run --workers`"))
        if s.action == "partitioned":
            refused = C.policy_accepted(text(url, partitions="drop"), self.workdir, "partitions-probe")
            name = 'retention, partitions = "drop"'
            out.append((name, f"refused: {refused}") if refused else
                       (name, lambda u: C.retention_run(self.e, u, s, text(u, partitions="drop"), self.workdir, name)))
        if self.e.name == "mariadb" and s.action == "delete":
            out.append(("pt-archiver", lambda u: C.pt_archive(self.e, u, s, self.batch_size, self.workdir)))
        return out

    def scenario(self, s: Scenario) -> dict:
        family = FAMILIES[s.family]
        self.log(f"{self.e.name}: {s.name}")
        url = self.e.fresh_copy(family)      # the first contender's copy: counted before it runs
        expected, _ = C.counts(self.e, url, s.expected(), s)
        held_before = C.counts(self.e, url, [s.protected()], s)[0][0] if s.protected() else None
        results: dict[str, list[dict]] = {}
        fresh = True
        for name, how in self.contenders(s, url):
            if isinstance(how, str):
                results[name] = [as_dict(C.na(name, how))]
                continue
            for _ in range(self.repeat):
                if not fresh:
                    url = self.e.fresh_copy(family)
                fresh = False
                t0 = time.perf_counter()
                m = how(url)
                m.contender = name
                if m.status == "ok":
                    self.after(m, url, s)
                self.log(f"  {name}: {m.status} {m.seconds or 0:.2f}s "
                         f"(with checks {time.perf_counter() - t0:.1f}s)" + (f" {m.note[-600:]}" if m.status != "ok"
                                                                            else ""))
                results.setdefault(name, []).append(as_dict(m))
        chosen = [median_measure(v) for v in results.values()]
        raw = chosen[0]
        checks = {"raw statement rows == expected": (raw["rows"], sum(expected))}
        for m in chosen:
            if m["status"] != "ok":
                continue
            if m is not raw:
                if m["rows"] is not None:
                    checks[f"{m['contender']}: rows == raw"] = (m["rows"], raw["rows"])
                checks[f"{m['contender']}: checksum == raw"] = (m["checksum"], raw["checksum"])
            if held_before is not None:
                checks[f"{m['contender']}: held rows left"] = (m["held_left"], held_before)
        return {"engine": self.e.name, "scenario": s.name, "layout": s.layout, "action": s.action,
                "fraction": s.fraction, "target": s.target, "rows_affected": raw["rows"] or 0,
                "contenders": chosen,
                "checks": {k: {"got": a, "want": b, "ok": a == b} for k, (a, b) in checks.items()},
                "failed": [m["contender"] for m in chosen if m["status"] == "failed"]}

    def after(self, m: C.Measure, url: str, s: Scenario) -> None:
        eng = self.e.engine(url)
        try:
            with eng.connect() as conn:
                m.checksum = "|".join(self.e.checksum(conn, t, list(cols)) for t, cols in s.checked)
        finally:
            eng.dispose()
        if s.protected():
            m.held_left = C.counts(self.e, url, [s.protected()], s)[0][0]

    def plan_and_noop(self) -> dict:
        """`plan` and a run with nothing due, against the COUNT(*) queries that give the same numbers."""
        s = SCENARIOS[0]
        url = self.e.fresh_copy(FAMILIES[s.family])
        self.log(f"{self.e.name}: plan and no-op run vs COUNT(*)")
        queries = [f"SELECT count(*) FROM {s.table} WHERE {s.table}.created_at <= :cutoff", s.expected()[0]]
        C.counts(self.e, url, queries, s)          # the same warm-up the plan gets below
        _, counts_s = C.counts(self.e, url, queries, s)
        plan_process, plan_in_run = C.retention_plan(policy(url, s), self.workdir, f"{self.e.name}-plan")
        noop, noop_ratio = {}, {}
        never = s.rule(name="nothing-due").replace(f'after = "{after_days(s.fraction)}d"', 'after = "36500d"')
        anon = next(x for x in SCENARIOS if x.action == "anonymize" and x.family == "a")
        never_anon = anon.rule(name="nothing-due").replace(f'after = "{after_days(anon.fraction)}d"',
                                                           'after = "36500d"')
        for label, rule in (("delete", never), ("anonymize", never_anon)):
            process, in_run = C.retention_plan(policy(url, s, rule=rule), self.workdir,
                                               f"{self.e.name}-noop-{label}", command="run")
            noop[label] = (in_run, process)
            noop_ratio[label] = round(in_run / counts_s, 2) if in_run and counts_s else None
        return {"counts_seconds": counts_s, "plan_in_run": plan_in_run, "plan_process": plan_process,
                "plan_over_counts": round(plan_in_run / counts_s, 2) if plan_in_run and counts_s else None,
                "noop": noop, "noop_over_counts": noop_ratio, "commit_url": url}

    def memory(self, full_kb: int | None, small_rows: int) -> dict:
        """Peak RSS of the default run of `delete A 50%` on a smaller table, beside the full size's."""
        s = SCENARIOS[0]
        url = self.e.fresh_copy(FAMILIES["small"])
        self.log(f"{self.e.name}: memory, {s.name} at {small_rows:,} rows")
        m = C.retention_run(self.e, url, s, policy(url, s), self.workdir, "retention (defaults), smaller N")
        return {"small_rows": small_rows, "small_kb": m.maxrss_kb if m.status == "ok" else None,
                "full_rows": self.rows, "full_kb": full_kb}


def machine() -> dict:
    ram = None
    try:
        ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024 ** 3, 1)
    except (ValueError, OSError):
        pass
    return {"cpus": os.cpu_count(), "ram_gb": ram, "python": platform.python_version(),
            "platform": platform.platform()}


def git(*argv: str) -> str | None:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.rstrip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None, help=f"rows in each big table (default {DEFAULT_ROWS:,})")
    ap.add_argument("--large", action="store_true", help=f"{LARGE_ROWS:,} rows")
    ap.add_argument("--engines", default="sqlite,postgresql,mariadb",
                    help="comma-separated subset of sqlite,postgresql,mariadb")
    ap.add_argument("--scenarios", default="",
                    help="run only the scenarios whose name contains one of these comma-separated words "
                         "(e.g. 'delete A,cascade'); plan and memory always run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per contender (fresh copy each); keep the median")
    ap.add_argument("--pg-url", help="an existing PostgreSQL server (CREATEDB rights) instead of a throwaway one")
    ap.add_argument("--mariadb-url", help="an existing MariaDB server instead of a throwaway one")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/<timestamp>.json")
    ap.add_argument("--write-results", nargs="?", const=str(HERE / "RESULTS.md"), metavar="FILE",
                    help="also write the report as markdown to FILE (default bench/RESULTS.md)")
    args = ap.parse_args(argv)
    names = [x.strip() for x in args.engines.split(",") if x.strip()]
    if set(names) - set(ENGINES):
        ap.error(f"unknown engine(s): {', '.join(sorted(set(names) - set(ENGINES)))}")
    rows = args.rows or (LARGE_ROWS if args.large else DEFAULT_ROWS)
    if rows < 1000 or args.repeat < 1:
        ap.error("--rows must be at least 1000 and --repeat positive")
    wanted = [w.strip().lower() for w in args.scenarios.split(",") if w.strip()]
    scenarios = [s for s in SCENARIOS if not wanted or any(w in s.name.lower() for w in wanted)]
    # flat memory from 2M to 10M: with --large the smaller size is the default one
    small_rows = DEFAULT_ROWS if rows >= LARGE_ROWS else max(1000, rows // 4)
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {msg}", file=sys.stderr, flush=True)

    workers = C.retention_supports_workers()
    batch_size = batch_size_default()
    doc = {"timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "git_commit": git("rev-parse", "HEAD"),
           "git_modified": [ln[3:] for ln in (git("status", "--porcelain", "--untracked-files=no") or "").splitlines()],
           "args": {"rows": rows, "engines": names, "scenarios": [s.name for s in scenarios], "repeat": args.repeat,
                    "batch_size": batch_size},
           "machine": machine(), "engines": [], "versions": {}, "settings": {},
           "commit_ms": {}, "start_seconds": {}, "skipped": {}, "results": [], "plan": {}, "memory": {}, "build_seconds": {},
           "retention_has_workers": workers, "pt_archiver": C.pt_archiver()}
    if not workers:
        log("retention has no `run --workers`: that contender is n/a")
    if "mariadb" in names and not C.pt_archiver():
        log("pt-archiver is NOT installed (apt-get install percona-toolkit): its contender is n/a")
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as tmp:
        workdir = Path(tmp)
        for name in names:
            cls = ENGINES[name]
            url = {"postgresql": args.pg_url, "mariadb": args.mariadb_url}.get(name)
            e = cls(workdir, url) if name != "sqlite" else cls(workdir)
            try:
                log(f"{name}: starting")
                e.start()
            except EngineUnavailable as x:
                doc["skipped"][name] = str(x)
                log(f"{name}: NOT RUN: {x}")
                continue
            try:
                doc["engines"].append(name)
                doc["versions"][name], doc["settings"][name] = e.version(), e.settings
                mine = [s for s in scenarios if s.action != "partitioned" or e.supports_partitions]
                families = {s.family for s in mine} | {"a"}
                builds = {}
                for f in sorted(families) + ["small"]:
                    n = small_rows if f == "small" else rows
                    log(f"{name}: building template '{f}' ({n:,} rows)")
                    t0 = time.perf_counter()
                    e.build_template(FAMILIES[f], n)
                    builds[f] = round(time.perf_counter() - t0, 1)
                doc["build_seconds"][name] = builds
                bench = Bench(e, rows, args.repeat, workdir, log, workers, batch_size)
                plan = bench.plan_and_noop()
                doc["start_seconds"][name] = C.process_start(plan["commit_url"], workdir, f"{name}-start")
                doc["commit_ms"][name] = e.commit_probe(plan.pop("commit_url"))
                doc["plan"][name] = plan
                for s in mine:
                    doc["results"].append(bench.scenario(s))
                full = next((m["maxrss_kb"] for r in doc["results"] if r["engine"] == name
                             and r["scenario"] == SCENARIOS[0].name for m in r["contenders"]
                             if m["contender"] == "retention (defaults)" and m["status"] == "ok"), None)
                doc["memory"][name] = bench.memory(full, small_rows)
            finally:
                e.stop()
    doc["total_seconds"] = round(time.perf_counter() - started, 1)
    text = render(doc)
    print(text)
    if not args.no_save:
        out = HERE / "results" / f"{doc['timestamp'].replace(':', '')}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        log(f"wrote {out.relative_to(ROOT)}")
    if args.write_results:
        Path(args.write_results).write_text("# Benchmark results\n\nWritten by `bench/run.py --write-results`; "
                                         "see bench/README.md for what each figure means.\n\n" + text)
        log(f"wrote {args.write_results}")
    bad = any(not c["ok"] for r in doc["results"] for c in r["checks"].values()) or any(
        r["failed"] for r in doc["results"])
    if bad:
        return 1
    return 2 if doc["skipped"] else 0


if __name__ == "__main__":
    sys.exit(main())
