"""The benchmark's output: the markdown tables (printed, and bench/RESULTS.md) and the targets, judged.

A ratio here is a speed ratio: raw statement seconds / contender seconds on the
same data in the same run, so 1.0 is "as fast as the single statement" and the
issue's targets (">= 0.90") read directly.
"""

from __future__ import annotations

import statistics

#: issue 9's targets: (engine, column) -> minimum speed ratio; "longest" is a maximum in ms
TARGETS = {
    ("postgresql", "delete"): 0.90, ("postgresql", "anonymize"): 1.0, ("postgresql", "cascade"): 0.70,
    ("postgresql", "longest"): 250,
    ("mariadb", "delete"): 0.80, ("mariadb", "anonymize"): 0.80, ("mariadb", "cascade"): 0.60,
    ("mariadb", "longest"): 250, ("mariadb", "pt-archiver"): 2.0,
    ("sqlite", "delete"): 0.80, ("sqlite", "anonymize"): 0.80, ("sqlite", "cascade"): 0.60,
    ("sqlite", "longest"): 500,
}
RSS_LIMIT_MB = 150
PLAN_LIMIT = 2.0        # plan <= 2x the equivalent COUNT(*) queries
NOOP_LIMIT = 1.5        # "near the cost of those counts": read here as at most 1.5x
FLAT_LIMIT = 1.25       # "flat": peak RSS at N at most 1.25x the peak at the smaller size
RETENTION = ("retention (defaults)", "retention --workers 2", 'retention, partitions = "drop"')


def ratio(raw_s: float | None, s: float | None) -> float | None:
    return round(raw_s / s, 2) if raw_s and s else None


def fmt(x, spec: str = "", dash: str = "–") -> str:
    if x is None:
        return dash
    return format(x, spec)


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def scenario_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        raw = next((m for m in r["contenders"] if m["contender"] == "raw statement"), None)
        raw_s = raw["seconds"] if raw else None
        for m in r["contenders"]:
            if m["status"] == "n/a":
                rows.append([r["engine"], r["scenario"], m["contender"], "n/a", "", "", "", "", "", "", "", "",
                             m["note"][:200].replace("|", "/")])
                continue
            if m["status"] == "failed":
                rows.append([r["engine"], r["scenario"], m["contender"], "FAILED", "", "", "", "", "", "", "", "",
                             _why(m["note"])])
                continue
            rps = round(r["rows_affected"] / m["seconds"]) if m["seconds"] and r["rows_affected"] else None
            wal = (round(m["wal_bytes"] / r["rows_affected"]) if m["wal_bytes"] is not None and r["rows_affected"]
                   else None)
            rows.append([r["engine"], r["scenario"], m["contender"], fmt(m["seconds"], ".2f"),
                         fmt(m.get("in_run_seconds"), ".2f"), fmt(rps, ","),
                         fmt(ratio(raw_s, m["seconds"]), ".2f"), fmt(ratio(raw_s, m.get("in_run_seconds")), ".2f"),
                         fmt(m["batches"], ","), fmt(m["longest_ms"], ".0f"), fmt(m["p99_ms"], ".0f"),
                         fmt(m["maxrss_kb"] and round(m["maxrss_kb"] / 1024), ""), fmt(wal, ",")])
    return rows


def _why(note: str) -> str:
    """The error a failed contender's log ends with, short enough for a table cell."""
    import re
    found = re.findall(r'"error": "([^"]+)"', note or "")
    text = found[-1] if found else (note or "").strip().splitlines()[-1:] and (note or "").strip().splitlines()[-1]
    return str(text).replace("|", "/")[:120]


def best_retention(r: dict) -> tuple[float | None, str]:
    """The best speed ratio among the retention contenders of one scenario, and which one."""
    raw = next((m for m in r["contenders"] if m["contender"] == "raw statement"), None)
    best, who = None, ""
    for m in r["contenders"]:
        if m["contender"] in RETENTION and m["status"] == "ok" and raw:
            x = ratio(raw["seconds"], m["seconds"])
            if x is not None and (best is None or x > best):
                best, who = x, m["contender"]
    return best, who


def judge(doc: dict) -> list[list[str]]:
    """The targets table: each target beside what was measured, met / not met / not measured."""
    rows = []
    results = doc["results"]
    for engine in doc["engines"]:
        mine = [r for r in results if r["engine"] == engine]
        if not mine:
            continue
        for col in ("delete", "anonymize", "cascade"):
            want = TARGETS[(engine, col)]
            worst, failed = None, []
            for r in (x for x in mine if x["target"] == col):
                got, who = best_retention(r)
                if got is not None and (worst is None or got < worst[0]):
                    worst = (got, f"{r['scenario']}, {who}")
                if got is None and any(m["contender"] in RETENTION and m["status"] == "failed"
                                       for m in r["contenders"]):
                    failed.append(r["scenario"])
            note = "with parallel workers" if (engine, col) == ("postgresql", "anonymize") else ""
            what = f"{col} speed vs raw{' (' + note + ')' if note else ''}"
            if failed:
                # a scenario retention could not do at all fails its target, whatever the others measured
                rows.append([engine, what, f">= {want}", fmt(worst and worst[0]),
                             f"retention failed: {', '.join(failed)}", "not met"])
                continue
            rows.append(_verdict(engine, what, f">= {want}", worst and worst[0], worst and worst[1],
                                 worst is not None and worst[0] >= want))
        if engine == "mariadb":
            worst = None
            for r in (x for x in mine if x["target"] == "delete"):
                pt = next((m for m in r["contenders"] if m["contender"] == "pt-archiver" and m["status"] == "ok"), None)
                for m in r["contenders"]:
                    if pt and m["contender"] in RETENTION and m["status"] == "ok":
                        x = ratio(pt["seconds"], m["seconds"])
                        if x is not None and (worst is None or x < worst[0]):
                            worst = (x, r["scenario"])
            rows.append(_verdict(engine, "delete speed vs pt-archiver's best", ">= 2.0", worst and worst[0],
                                 worst and worst[1], worst is not None and worst[0] >= 2.0))
        longest = [(m["longest_ms"], r["scenario"]) for r in mine for m in r["contenders"]
                   if m["contender"] in RETENTION and m["status"] == "ok" and m["longest_ms"] is not None]
        top = max(longest) if longest else None
        want = TARGETS[(engine, "longest")]
        rows.append(_verdict(engine, "longest batch (ms)", f"<= {want}", top and round(top[0]), top and top[1],
                             top is not None and top[0] <= want))
        rss = [(m["maxrss_kb"] / 1024, r["scenario"]) for r in mine for m in r["contenders"]
               if m["contender"] in RETENTION and m["status"] == "ok" and m["maxrss_kb"]]
        top = max(rss) if rss else None
        rows.append(_verdict(engine, "peak RSS (MB)", f"< {RSS_LIMIT_MB}", top and round(top[0]), top and top[1],
                             top is not None and top[0] < RSS_LIMIT_MB))
        mem = doc["memory"].get(engine)
        if mem and mem.get("small_kb") and mem.get("full_kb"):
            growth = round(mem["full_kb"] / mem["small_kb"], 2)
            rows.append(_verdict(engine, "peak RSS flat in N (RSS at N / at smaller N)", f"<= {FLAT_LIMIT}", growth,
                                 f"{mem['small_rows']:,} -> {mem['full_rows']:,} rows", growth <= FLAT_LIMIT))
        plan = doc["plan"].get(engine)
        if plan:
            x = plan.get("plan_over_counts")
            rows.append(_verdict(engine, "plan cost / COUNT(*) queries (run's own time)", f"<= {PLAN_LIMIT}", x,
                                 "delete A 50%", x is not None and x <= PLAN_LIMIT))
            for label, x in (plan.get("noop_over_counts") or {}).items():
                rows.append(_verdict(engine, f"no-op run ({label}) / COUNT(*) queries", f"<= {NOOP_LIMIT} (near)", x,
                                     "nothing due", x is not None and x <= NOOP_LIMIT))
    return rows


def _verdict(engine, what, target, got, where, ok) -> list[str]:
    state = "not measured" if got is None else ("met" if ok else "not met")
    return [engine, what, target, fmt(got), where or "", state]


def render(doc: dict) -> str:
    """The whole report as markdown."""
    m = doc["machine"]
    out = [f"Run {doc['timestamp']} at commit {(doc.get('git_commit') or '?')[:12]}"
           + (f" (modified: {', '.join(doc['git_modified'])})" if doc.get("git_modified") else ""),
           "",
           f"Machine: {m['cpus']} CPUs, {m['ram_gb']} GB RAM, {m['platform']}; Python {m['python']}.",
           f"Rows: {doc['args']['rows']:,} in each big table; batch size {doc['args']['batch_size']:,} "
           f"(retention's default); repeat {doc['args']['repeat']} (medians); total {doc['total_seconds']:.0f} s.",
           ""]
    out.append(table(["engine", "version", "durability and settings", "one-row commit (ms)", "process start (s)"],
                     [[e, doc["versions"].get(e, ""),
                       "; ".join(f"{k}={v}" for k, v in doc["settings"].get(e, {}).items()),
                       fmt(doc["commit_ms"].get(e)), fmt(doc.get("start_seconds", {}).get(e), ".2f")]
                      for e in doc["engines"]]))
    out += ["", "process start: a `retention` process that imports what a run imports, this engine's modules and "
                "driver included, and touches no database; every retention contender pays it (and its connections, "
                "reflection and lock) on top of its run."]
    for e, why in doc["skipped"].items():
        out.append(f"\n**{e} not run:** {why}")
    out += ["", "## Targets (issue 9)", "",
            table(["engine", "target", "wanted", "measured", "where (worst case)", "verdict"], judge(doc)),
            "", "## Every scenario", "",
            "ratio = raw statement seconds / contender seconds (above 1: faster than the single statement), "
            "the raw statement timed BEGIN to COMMIT inside the benchmark's process, a contender as a whole "
            "process (what cron pays; the targets are judged on it). own s: retention's run itself, its report's "
            "started_at to finished_at (no interpreter start, imports, connections or reflection), and run ratio "
            "= raw seconds / own s: the gap between the two ratios is the process's fixed cost. Batch times are "
            "each batch's transaction, BEGIN to COMMIT, from retention's audit log; the raw statement is one "
            "batch. RSS: the process's peak. WAL: PostgreSQL only.",
            "",
            table(["engine", "scenario", "contender", "seconds", "own s", "rows/s", "ratio", "run ratio", "batches",
                   "longest ms", "p99 ms", "peak RSS MB", "WAL B/row"], scenario_rows(doc["results"]))]
    checks = [(r["engine"], r["scenario"], k, v) for r in doc["results"] for k, v in r["checks"].items()
              if not v["ok"]]
    out += ["", "## Correctness", ""]
    if checks:
        out += [f"- **FAILED** {e} / {s}: {k}: got {v['got']}, want {v['want']}" for e, s, k, v in checks]
    else:
        n = sum(len(r["checks"]) for r in doc["results"])
        out.append(f"All {n} checks passed: every contender changed exactly the rows the raw statement changed "
                   "(same row count and checksum of the tables afterwards) and left every held row.")
    if doc["plan"]:
        out += ["", "## `plan` and a no-op run against the COUNT(*) queries", "",
                "The counts: rows due, and rows due and not held (what `plan` reports), on a fresh connection. "
                "`plan` and the no-op run: the run's own time (report `started_at` to `finished_at`), and the "
                "whole process.", "",
                table(["engine", "COUNT(*) s", "plan s (own / process)", "plan / counts",
                       "no-op run s (own / process)", "no-op / counts"],
                      [[e, fmt(p["counts_seconds"], ".3f"),
                        f"{fmt(p['plan_in_run'], '.3f')} / {fmt(p['plan_process'], '.2f')}", fmt(p["plan_over_counts"]),
                        "; ".join(f"{k}: {fmt(v[0], '.3f')} / {fmt(v[1], '.2f')}" for k, v in p["noop"].items()),
                        "; ".join(f"{k}: {fmt(v)}" for k, v in p["noop_over_counts"].items())]
                       for e, p in doc["plan"].items()])]
    if doc["memory"]:
        out += ["", "## Memory", "",
                table(["engine", "rows (smaller)", "peak RSS KiB", "rows (full)", "peak RSS KiB", "growth"],
                      [[e, f"{x['small_rows']:,}", fmt(x["small_kb"], ","), f"{x['full_rows']:,}",
                        fmt(x["full_kb"], ","),
                        fmt(x["small_kb"] and x["full_kb"] and round(x["full_kb"] / x["small_kb"], 2))]
                       for e, x in doc["memory"].items()])]
    return "\n".join(out) + "\n"


def median_measure(samples: list[dict]) -> dict:
    """The sample with the median wall time (its batches, RSS and WAL come with it)."""
    ok = [s for s in samples if s["status"] == "ok" and s["seconds"] is not None]
    if not ok:
        return samples[-1]
    mid = statistics.median_low([s["seconds"] for s in ok])
    chosen = dict(next(s for s in ok if s["seconds"] == mid))
    chosen["samples"] = [round(s["seconds"], 3) for s in ok]
    return chosen
