#!/usr/bin/env python
"""Benchmark `retention run` against the raw SQL a DBA would write, on the same data, in the same run.

    .venv/bin/python bench/run.py [--rows N] [--backend sqlite|postgresql|all] [--batch-size B]

Every scenario is measured twice on identical data (the tables are dropped and
rebuilt from the same deterministic generator before each measurement, then
ANALYZEd, and on PostgreSQL VACUUM ANALYZEd): once as one raw statement (or two,
for the cascade) in one transaction, once as ``retention run`` in a fresh Python
process, exactly as cron would start it.  The result is a ratio,
retention_time / baseline_time, measured on this machine in this run: no
absolute number is compared against anything.

Both measurements are checked to have changed the same rows: the rows affected
must match, and a checksum of the whole table afterwards must be equal.

See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# --- the data -------------------------------------------------------------------------------
#
# Every value is a function of the row number i, so a rebuild gives the same table, byte for byte.
#
#   accounts      ACCOUNTS rows: the subject of the legal holds (the "small parent table")
#   legal_holds   an active hold on every 50th account (2% of accounts, so ~2% of rows),
#                 a released one on every 70th (a released hold protects nothing)
#   events        N rows: account_id = (37 i mod ACCOUNTS) + 1 (indexed FK),
#                 created_at = 2020-01-01 + (7919 i mod 730) days + (i mod 86400) s (indexed),
#                 so the clock is uncorrelated with the key and half the rows are older than
#                 the cutoff, spread over the whole key range
#   orders        N/5 rows, same clock and account formulas          (cascade scenario only)
#   order_lines   N rows, five per order, order_id indexed            (cascade scenario only)

ACCOUNTS = 1000
HOLD_EVERY = 50
RELEASED_EVERY = 70
LINES_PER_ORDER = 5
NOW = datetime(2022, 1, 1, tzinfo=timezone.utc)
AFTER = "365d"
CUTOFF = datetime(2021, 1, 1)          # NOW - 365 days: rows from 2020 (366 of 730 days) are due
MASK_KEEP_LAST = 4
PG_DATABASE = "retention_bench"   # created (and dropped first if it exists) on the server
CONSTANT_NAME = "deleted user"

HELD = ("NOT EXISTS (SELECT 1 FROM legal_holds h WHERE h.account_id = {t}.account_id "
        "AND h.released_at IS NULL)")


def due_sql(table: str) -> str:
    return f"{table}.created_at <= :cutoff AND " + HELD.format(t=table)


class Backend:
    """One database engine: how to build the tables, reset them, checksum them."""

    name = ""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, poolclass=NullPool)

    # dialect pieces, filled in by the subclasses
    def series(self, n: int) -> tuple[str, str]:          # (prefix before SELECT, FROM source of i)
        raise NotImplementedError

    def clock(self, i: str) -> str:
        raise NotImplementedError

    def last_digits(self, expr: str, n: int) -> str:
        raise NotImplementedError

    def mask(self, col: str) -> str:
        raise NotImplementedError

    def cutoff_param(self):
        return CUTOFF

    pk = "integer PRIMARY KEY"
    ts = "timestamp"

    def execute(self, *statements: str, autocommit: bool = False) -> None:
        engine = self.engine.execution_options(isolation_level="AUTOCOMMIT") if autocommit else self.engine
        with engine.begin() as conn:
            for s in statements:
                conn.execute(sa.text(s))

    def insert_select(self, table: str, columns: str, exprs: str, n: int) -> str:
        prefix, source = self.series(n)
        return f"INSERT INTO {table} ({columns}) {prefix} SELECT {exprs} FROM {source}"

    # -- tables ------------------------------------------------------------------------------

    def build_common(self) -> None:
        self.execute(
            "DROP TABLE IF EXISTS order_lines", "DROP TABLE IF EXISTS orders", "DROP TABLE IF EXISTS events",
            "DROP TABLE IF EXISTS legal_holds", "DROP TABLE IF EXISTS accounts",
            f"CREATE TABLE accounts (id {self.pk}, name varchar(80) NOT NULL)",
            f"CREATE TABLE legal_holds (id {self.pk}, account_id integer NOT NULL REFERENCES accounts (id), "
            f"released_at {self.ts})",
            "CREATE INDEX legal_holds_account_id ON legal_holds (account_id)",
            self.insert_select("accounts", "id, name", "i, 'account ' || i", ACCOUNTS),
            self.insert_select("legal_holds", "id, account_id, released_at",
                               f"i, i * {HOLD_EVERY}, NULL", ACCOUNTS // HOLD_EVERY),
            self.insert_select("legal_holds", "id, account_id, released_at",
                               f"1000000 + i, i * {RELEASED_EVERY}, '2021-06-01 00:00:00'",
                               ACCOUNTS // RELEASED_EVERY),
        )

    def build_events(self, n: int) -> None:
        self.execute(
            "DROP TABLE IF EXISTS order_lines", "DROP TABLE IF EXISTS orders", "DROP TABLE IF EXISTS events",
            f"CREATE TABLE events (id {self.pk}, account_id integer NOT NULL REFERENCES accounts (id), "
            f"created_at {self.ts} NOT NULL, name varchar(80), phone varchar(30), note varchar(200))",
            self.insert_select(
                "events", "id, account_id, created_at, name, phone, note",
                f"i, ((i * 37) % {ACCOUNTS}) + 1, {self.clock('i')}, 'User ' || i, "
                f"'+1555' || {self.last_digits('i', 7)}, 'note-' || i || '-' || ((i * 2654435761) % 1000000007)",
                n),
            "CREATE INDEX events_account_id ON events (account_id)",
            "CREATE INDEX events_created_at ON events (created_at)",
        )
        self.analyze("events")

    def build_orders(self, n_lines: int) -> None:
        n_orders = max(1, n_lines // LINES_PER_ORDER)
        self.execute(
            "DROP TABLE IF EXISTS order_lines", "DROP TABLE IF EXISTS orders", "DROP TABLE IF EXISTS events",
            f"CREATE TABLE orders (id {self.pk}, account_id integer NOT NULL REFERENCES accounts (id), "
            f"created_at {self.ts} NOT NULL, note varchar(200))",
            f"CREATE TABLE order_lines (id {self.pk}, order_id integer NOT NULL REFERENCES orders (id), "
            f"sku varchar(20), note varchar(200))",
            self.insert_select("orders", "id, account_id, created_at, note",
                               f"i, ((i * 37) % {ACCOUNTS}) + 1, {self.clock('i')}, 'order-' || i", n_orders),
            self.insert_select("order_lines", "id, order_id, sku, note",
                               f"i, ((i - 1) / {LINES_PER_ORDER}) + 1, 'SKU-' || (i % 997), 'line-' || i",
                               n_orders * LINES_PER_ORDER),
            "CREATE INDEX orders_account_id ON orders (account_id)",
            "CREATE INDEX orders_created_at ON orders (created_at)",
            "CREATE INDEX order_lines_order_id ON order_lines (order_id)",
        )
        self.analyze("orders", "order_lines")

    def analyze(self, *tables: str) -> None:
        raise NotImplementedError

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text(sql), {"cutoff": self.cutoff_param()}).scalar() or 0)

    def timed(self, *statements: str) -> tuple[float, list[int], list[float]]:
        """Run the statements in one transaction.

        Returns the seconds from BEGIN to after COMMIT, the rows of each statement, and the seconds
        of each statement followed by the COMMIT's.
        """
        counts, splits = [], []
        with self.engine.connect() as conn:
            t0 = time.perf_counter()
            with conn.begin():
                for s in statements:
                    t1 = time.perf_counter()
                    counts.append(conn.execute(sa.text(s), {"cutoff": self.cutoff_param()}).rowcount)
                    splits.append(time.perf_counter() - t1)
                t1 = time.perf_counter()
            total = time.perf_counter() - t0
            splits.append(time.perf_counter() - t1)
            return total, counts, splits

    def checksum(self, *tables: str) -> str:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        self.engine.dispose()


class SQLiteBackend(Backend):
    name = "sqlite"
    ts = "TIMESTAMP"

    def __init__(self, path: Path) -> None:
        super().__init__(f"sqlite:///{path}")

        @sa.event.listens_for(self.engine, "connect")
        def _fk(dbapi_conn, _record):
            # retention's own connections enforce foreign keys; the baseline must pay the same checks
            dbapi_conn.execute("PRAGMA foreign_keys = ON")

    def series(self, n):
        return f"WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n})", "g"

    def clock(self, i):
        # the text form SQLAlchemy writes and retention accepts: 'YYYY-MM-DD HH:MM:SS'
        return (f"datetime('2020-01-01', '+' || (({i} * 7919) % 730) || ' days', "
                f"'+' || ({i} % 86400) || ' seconds')")

    def last_digits(self, expr, n):
        return f"substr('{'0' * n}' || {expr}, -{n})"

    def mask(self, col):
        k = MASK_KEEP_LAST
        return (f"CASE WHEN {col} IS NULL THEN NULL "
                f"WHEN length({col}) <= {k} THEN replace(hex(zeroblob(length({col}))), '00', '*') "
                f"ELSE replace(hex(zeroblob(length({col}) - {k})), '00', '*') || substr({col}, -{k}) END")

    def cutoff_param(self):
        return CUTOFF.strftime("%Y-%m-%d %H:%M:%S")

    def analyze(self, *tables):
        self.execute(*(f"ANALYZE {t}" for t in tables), "ANALYZE legal_holds", autocommit=True)

    def checksum(self, *tables):
        # SQLite has no hash function: stream the rows in key order into SHA-256
        h = hashlib.sha256()
        with self.engine.connect() as conn:
            for t in tables:
                h.update(f"[{t}]".encode())
                for row in conn.exec_driver_sql(f"SELECT * FROM {t} ORDER BY id"):
                    h.update(repr(tuple(row)).encode())
        return h.hexdigest()[:16]

    def version(self):
        import sqlite3
        return f"SQLite {sqlite3.sqlite_version}"


class PostgresBackend(Backend):
    name = "postgresql"

    def series(self, n):
        return "", f"generate_series(1::bigint, {n}) AS g(i)"

    def clock(self, i):
        return (f"timestamp '2020-01-01' + make_interval(days => (({i} * 7919) % 730)::int, "
                f"secs => ({i} % 86400)::int)")

    def last_digits(self, expr, n):
        return f"right('{'0' * n}' || {expr}, {n})"

    def mask(self, col):
        k = MASK_KEEP_LAST
        return (f"CASE WHEN {col} IS NULL THEN NULL WHEN length({col}) <= {k} THEN repeat('*', length({col})) "
                f"ELSE repeat('*', length({col}) - {k}) || right({col}, {k}) END")

    def analyze(self, *tables):
        self.execute(*(f"VACUUM ANALYZE {t}" for t in tables), "VACUUM ANALYZE legal_holds",
                     "VACUUM ANALYZE accounts", autocommit=True)

    def checksum(self, *tables):
        # order-independent: the sum of a 64-bit hash of every row's text, and the row count
        parts = []
        with self.engine.connect() as conn:
            for t in tables:
                n, s = conn.exec_driver_sql(
                    f"SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0) FROM {t} x").one()
                parts.append(f"{t}:{n}:{s}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def version(self):
        with self.engine.connect() as conn:
            return conn.exec_driver_sql("SHOW server_version").scalar()


# --- the policies ----------------------------------------------------------------------------

def policy(url: str, batch_size: int, rule: str, tables: str = "") -> str:
    return textwrap.dedent(f"""\
        version = 1

        [settings]
        timezone = "UTC"
        batch_size = {batch_size}
        statement_timeout = "1h"      # the counting reads scan the table; a big --rows must not time out

        [databases.bench]
        url = "{url}"

        [subjects.account]
        table = "bench.accounts"
        key = "id"

        [[holds]]
        name = "litigation"
        table = "bench.legal_holds"
        subject = "account"
        subject_column = "account_id"
        active_where = {{ released_at = {{ is_null = true }} }}
        """) + textwrap.dedent(tables) + textwrap.dedent(rule)


DELETE_RULE = f"""
[[rules]]
name = "events-delete"
table = "bench.events"
clock = "created_at"
after = "{AFTER}"
action = "delete"
basis = "bench"
max_fraction = 1.0
"""

ANONYMIZE_RULE = f"""
[[rules]]
name = "events-anonymize"
table = "bench.events"
clock = "created_at"
after = "{AFTER}"
action = "anonymize"
basis = "bench"
max_fraction = 1.0
columns.phone = {{ strategy = "mask", keep_last = {MASK_KEEP_LAST} }}
columns.name = {{ strategy = "constant", value = "{CONSTANT_NAME}" }}
"""

CASCADE_TABLES = """
[tables."bench.order_lines"]
on_parent_delete = "delete"
"""

CASCADE_RULE = f"""
[[rules]]
name = "orders-delete"
table = "bench.orders"
clock = "created_at"
after = "{AFTER}"
action = "delete"
basis = "bench"
max_fraction = 1.0
"""


# --- the retention process ---------------------------------------------------------------------

def child_main(spec_path: str) -> None:
    """Run the policy once in this (fresh) process and print what happened as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    import resource
    import tracemalloc
    from collections import defaultdict

    from retention import commands
    import retention.execute.rules as ex

    def vm(field_name: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        return 0

    phases: dict[str, list] = defaultdict(lambda: [0, 0.0])
    stmts: dict[tuple[str, str], list] = defaultdict(lambda: [0, 0.0])
    current = ["setup"]

    if spec["profile"]:
        def wrap(mod, name, label):
            fn = getattr(mod, name, None)
            if fn is None:       # renamed in the product: that phase is just not shown
                return

            def timed(*a, **kw):
                outer, current[0] = current[0], label
                t0 = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    p = phases[label]
                    p[0] += 1
                    p[1] += time.perf_counter() - t0
                    current[0] = outer
            setattr(mod, name, timed)

        # phase timers around the functions a run goes through (bench-side wrappers; no product change)
        wrap(commands, "open_session", "open session: load, reflect, bind")
        wrap(commands, "_compile_check", "prepare check (LIMIT 0)")
        wrap(commands, "_check_clock_values", "clock value check")
        wrap(ex, "count_rule", "count before the run")
        wrap(ex, "_enforce", "enforce: all batches")
        wrap(ex, "_next_bound", "batch: boundary query")
        wrap(ex, "_batch", "batch: write")

        def before(conn, cursor, statement, parameters, context, executemany):
            conn.info.setdefault("bench_t0", []).append(time.perf_counter())

        def after(conn, cursor, statement, parameters, context, executemany):
            dt = time.perf_counter() - conn.info["bench_t0"].pop()
            s = stmts[(current[0], " ".join(statement.split())[:160])]
            s[0] += 1
            s[1] += dt

        # COMMIT is not a cursor statement: time the dialect's do_commit (SQLite pays an fsync here)
        do_commit = sa.engine.default.DefaultDialect.do_commit

        def timed_commit(self, dbapi_connection):
            t0 = time.perf_counter()
            try:
                return do_commit(self, dbapi_connection)
            finally:
                p = phases["batch: COMMIT" if current[0] == "enforce: all batches" else f"COMMIT ({current[0]})"]
                p[0] += 1
                p[1] += time.perf_counter() - t0
        sa.engine.default.DefaultDialect.do_commit = timed_commit

        sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)
        sa.event.listen(sa.engine.Engine, "after_cursor_execute", after)

    rss_before = vm("VmRSS")
    hwm_before = vm("VmHWM")
    if spec["tracemalloc"]:
        tracemalloc.start()
    t0 = time.perf_counter()
    report = commands.run(spec["policy"], now=datetime.fromisoformat(spec["now"]), env={})
    wall = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] if spec["tracemalloc"] else None
    if spec["tracemalloc"]:
        tracemalloc.stop()
    out = report.rules[0]
    top = sorted(stmts.items(), key=lambda kv: -kv[1][1])
    print(json.dumps({
        "wall_seconds": wall,
        "rule_seconds": out.duration_seconds,
        "status": out.status, "error": out.error,
        "touch": out.touch, "batches": out.batches,
        "cascaded": {c.table: c.rows for c in out.cascades},
        "rss_before_kb": rss_before, "hwm_before_kb": hwm_before,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "tracemalloc_peak_bytes": peak,
        "phases": {k: {"calls": c, "seconds": s} for k, (c, s) in phases.items()},
        "statements": [{"phase": ph, "sql": sql, "calls": c, "seconds": s} for (ph, sql), (c, s) in top[:12]],
    }))


def run_retention(policy_text: str, workdir: Path, *, profile: bool = True, trace: bool = False) -> dict:
    path = workdir / "policies.toml"
    path.write_text(policy_text)
    spec = workdir / "spec.json"
    spec.write_text(json.dumps({"policy": str(path), "now": NOW.isoformat(), "profile": profile,
                                "tracemalloc": trace}))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec)],
                          cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process_seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"retention process failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = process_seconds
    if result["status"] != "ok":
        raise RuntimeError(f"retention rule {result['status']}: {result['error']}")
    return result


# --- scenarios -------------------------------------------------------------------------------------

@dataclass
class Result:
    backend: str
    scenario: str
    rows_in_table: int
    rows_affected: int
    baseline_seconds: float
    retention_seconds: float
    ratio: float
    baseline_rows_per_second: float
    retention_rows_per_second: float
    retention_rule_seconds: float
    batches: int
    checks: dict = field(default_factory=dict)
    ok: bool = True
    baseline_samples: list = field(default_factory=list)
    retention_samples: list = field(default_factory=list)
    baseline_statements: list = field(default_factory=list)     # the last baseline's statements, timed
    retention_process_seconds: float = 0.0   # the retention process from spawn to exit (imports included)
    profile: dict = field(default_factory=dict)


def measure(backend: Backend, name: str, n: int, rebuild, tables: tuple[str, ...], raw: list[str],
            expect: list[str], protected: str, policy_text: str, workdir: Path, repeat: int) -> Result:
    """Baseline, then retention, each on a fresh rebuild of the same data, ``repeat`` times.

    ``expect``: one count query per raw statement, run on the fresh data: the rows it should change.
    ``protected``: counts the due rows a hold protects; both sides must leave every one of them.
    """
    base_times, ret_times, process_times, ret_last, base_split = [], [], [], None, []
    want = held_before = base_rows = base_sum = ret_sum = held_base = held_ret = None
    for _ in range(repeat):
        rebuild()
        if want is None:
            want = [backend.count(q) for q in expect]
            held_before = backend.count(protected)
        seconds, base_rows, base_split = backend.timed(*raw)
        base_times.append(seconds)
        base_sum, held_base = backend.checksum(*tables), backend.count(protected)
        rebuild()
        ret_last = run_retention(policy_text, workdir)
        ret_times.append(ret_last["wall_seconds"])
        process_times.append(ret_last["process_seconds"])
        ret_sum, held_ret = backend.checksum(*tables), backend.count(protected)
    affected = sum(base_rows)
    checks = {
        "raw statement rows == expected": (base_rows, want),
        "retention rows (touched + cascaded) == raw rows": (ret_last["touch"] + sum(ret_last["cascaded"].values()),
                                                            affected),
        "retention touched == raw rows on the rule's table": (ret_last["touch"], base_rows[-1]),
        "held due rows left by raw == before": (held_base, held_before),
        "held due rows left by retention == before": (held_ret, held_before),
        "checksum of the tables after: retention == raw": (ret_sum, base_sum),
    }
    b, r = statistics.median(base_times), statistics.median(ret_times)
    return Result(
        backend=backend.name, scenario=name, rows_in_table=n, rows_affected=affected,
        baseline_seconds=round(b, 4), retention_seconds=round(r, 4), ratio=round(r / b, 2),
        baseline_rows_per_second=round(affected / b), retention_rows_per_second=round(affected / r),
        retention_rule_seconds=ret_last["rule_seconds"], batches=ret_last["batches"],
        checks={k: {"got": a, "want": w, "ok": a == w} for k, (a, w) in checks.items()},
        ok=all(a == w for a, w in checks.values()),
        baseline_samples=[round(x, 4) for x in base_times], retention_samples=[round(x, 4) for x in ret_times],
        baseline_statements=[{"sql": sql[:160], "rows": n, "seconds": round(t, 4)}
                             for sql, n, t in zip(raw + ["COMMIT"], base_rows + [None], base_split)],
        retention_process_seconds=round(statistics.median(process_times), 4),
        profile={"wall_seconds": round(ret_last["wall_seconds"], 4), "phases": ret_last["phases"], "statements": ret_last["statements"],
                 "maxrss_kb": ret_last["maxrss_kb"], "rss_before_kb": ret_last["rss_before_kb"]},
    )


def scenarios(backend: Backend, n: int, batch_size: int, workdir: Path, repeat: int, which: set[str],
              log) -> tuple[list[Result], dict | None]:
    results = []
    t0 = time.perf_counter()
    backend.build_common()

    def held(table: str) -> str:
        return f"SELECT count(*) FROM {table} WHERE {table}.created_at <= :cutoff AND NOT ({HELD.format(t=table)})"

    if "delete" in which:
        log(f"{backend.name}: delete, {n:,} rows")
        results.append(measure(
            backend, "delete", n, lambda: backend.build_events(n), ("events",),
            [f"DELETE FROM events WHERE {due_sql('events')}"],
            [f"SELECT count(*) FROM events WHERE {due_sql('events')}"], held("events"),
            policy(backend.url, batch_size, DELETE_RULE), workdir, repeat))

    if "anonymize" in which:
        log(f"{backend.name}: anonymize (mask + constant, SQL path), {n:,} rows")
        results.append(measure(
            backend, "anonymize", n, lambda: backend.build_events(n), ("events",),
            [f"UPDATE events SET phone = {backend.mask('phone')}, "
             f"name = CASE WHEN name IS NULL THEN NULL ELSE '{CONSTANT_NAME}' END WHERE {due_sql('events')}"],
            [f"SELECT count(*) FROM events WHERE {due_sql('events')}"], held("events"),
            policy(backend.url, batch_size, ANONYMIZE_RULE), workdir, repeat))

    if "cascade" in which:
        n_orders = max(1, n // LINES_PER_ORDER)
        log(f"{backend.name}: cascade delete, {n_orders:,} orders x {LINES_PER_ORDER} lines")
        due_orders = f"SELECT id FROM orders WHERE {due_sql('orders')}"
        results.append(measure(
            backend, "cascade", n_orders * (1 + LINES_PER_ORDER), lambda: backend.build_orders(n),
            ("orders", "order_lines"),
            [f"DELETE FROM order_lines WHERE order_id IN ({due_orders})",
             f"DELETE FROM orders WHERE {due_sql('orders')}"],
            [f"SELECT count(*) FROM order_lines WHERE order_id IN ({due_orders})",
             f"SELECT count(*) FROM orders WHERE {due_sql('orders')}"], held("orders"),
            policy(backend.url, batch_size, CASCADE_RULE, CASCADE_TABLES), workdir, repeat))

    memory = None
    if "memory" in which:
        memory = {}
        for size in (n // 4, n):
            log(f"{backend.name}: memory, delete on {size:,} rows (tracemalloc on)")
            backend.build_events(size)
            r = run_retention(policy(backend.url, batch_size, DELETE_RULE), workdir, profile=False, trace=True)
            memory[str(size)] = {"rows_deleted": r["touch"], "batches": r["batches"],
                                 "tracemalloc_peak_bytes": r["tracemalloc_peak_bytes"],
                                 "maxrss_kb": r["maxrss_kb"], "rss_before_run_kb": r["rss_before_kb"],
                                 "rss_growth_kb": r["maxrss_kb"] - r["rss_before_kb"]}
        small, large = memory[str(n // 4)], memory[str(n)]
        memory["peak_ratio_n_over_quarter"] = round(
            large["tracemalloc_peak_bytes"] / max(1, small["tracemalloc_peak_bytes"]), 3)
    backend.execute("DROP TABLE IF EXISTS order_lines", "DROP TABLE IF EXISTS orders", "DROP TABLE IF EXISTS events")
    log(f"{backend.name}: done in {time.perf_counter() - t0:.0f}s")
    return results, memory


# --- output --------------------------------------------------------------------------------------

def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).rjust(w) if i else str(x).ljust(w)  # noqa: E731
                               for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


PHASES = ["open session: load, reflect, bind", "prepare check (LIMIT 0)", "clock value check",
          "count before the run", "enforce: all batches", "batch: boundary query", "batch: write"]


def phase_rows(r: Result) -> list[tuple[str, int | str, float]]:
    """The phases in the order a run goes through them, with what the timers did not cover."""
    ph = r.profile["phases"]
    get = lambda k: (ph.get(k, {}).get("calls", 0), ph.get(k, {}).get("seconds", 0.0))  # noqa: E731
    rows = []
    for k in PHASES:
        calls, secs = get(k)
        rows.append((("  " if k.startswith("batch:") else "") + k, calls, secs))
    enforce = get("enforce: all batches")[1]
    commit_calls, commit = get("batch: COMMIT")
    rows.append(("  batch: COMMIT", commit_calls, commit))
    rest = enforce - get("batch: boundary query")[1] - get("batch: write")[1] - commit
    rows.append(("  batch: BEGIN, SET LOCAL, Python", "", rest))
    top = sum(get(k)[1] for k in PHASES[:5])
    rows.append(("outside the timed phases", "", r.profile["wall_seconds"] - top))
    return rows


def render(results: list[Result], memory: dict) -> str:
    out = [table([[r.backend, r.scenario, f"{r.rows_in_table:,}", f"{r.rows_affected:,}",
                   f"{r.baseline_seconds:.2f}", f"{r.retention_seconds:.2f}", f"{r.ratio:.2f}x",
                   f"{r.baseline_rows_per_second:,}", f"{r.retention_rows_per_second:,}", str(r.batches),
                   "ok" if r.ok else "MISMATCH"] for r in results],
                 ["backend", "scenario", "rows", "affected", "raw s", "retention s", "ratio",
                  "raw rows/s", "retention rows/s", "batches", "check"])]
    for r in results:
        wall = r.profile["wall_seconds"]     # the profiled run: the last one when --repeat > 1
        raw = " + ".join(f"{s['seconds']:.2f}" for s in r.baseline_statements)
        out.append(f"\n{r.backend} / {r.scenario}: where retention's {wall:.2f}s went "
                   f"(rule {r.retention_rule_seconds:.2f}s; process with imports {r.retention_process_seconds:.2f}s; "
                   f"raw {r.baseline_seconds:.2f}s = {raw} (statements + COMMIT))")
        out.append(table([[k, str(c), f"{s:.2f}", f"{100 * s / wall:.0f}%"] for k, c, s in phase_rows(r)],
                         ["phase", "calls", "seconds", "of wall"]))
        stmts = [s for s in r.profile["statements"] if s["seconds"] >= 0.05 * wall][:6]
        if stmts:
            out.append("  statements over 5% of wall:")
            for s in stmts:
                out.append(f"    {s['seconds']:7.2f}s  x{s['calls']:<5} [{s['phase']}] {s['sql'][:110]}")
        bad = [k for k, v in r.checks.items() if not v["ok"]]
        if bad:
            out.append("  CHECK FAILED: " + "; ".join(f"{k}: {r.checks[k]}" for k in bad))
    for backend, mem in memory.items():
        if not mem:
            continue
        sizes = [k for k in mem if k.isdigit()]
        out.append(f"\n{backend}: retention process memory, delete scenario (tracemalloc on)")
        out.append(table([[f"{int(k):,}", f"{mem[k]['rows_deleted']:,}", str(mem[k]["batches"]),
                           f"{mem[k]['tracemalloc_peak_bytes'] / 1024:,.0f}", f"{mem[k]['maxrss_kb']:,}",
                           f"{mem[k]['rss_growth_kb']:,}"] for k in sizes],
                         ["rows", "deleted", "batches", "tracemalloc peak KiB", "max RSS KiB",
                          "RSS growth in run KiB"]))
        out.append(f"  peak at N / peak at N/4: {mem['peak_ratio_n_over_quarter']}")
    return "\n".join(out)


def git(*argv: str) -> str | None:
    try:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --- main ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=None,
                    help="rows in the big table (default 1,000,000 on both backends)")
    ap.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    ap.add_argument("--batch-size", type=int, default=5000, help="the policy's batch_size (default 5000)")
    ap.add_argument("--scenarios", default="delete,anonymize,cascade,memory",
                    help="comma-separated subset of delete,anonymize,cascade,memory")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure each side this many times (rebuilding each time) and keep the median")
    ap.add_argument("--pg-url", default=None,
                    help="an existing PostgreSQL server (a URL with CREATEDB rights) instead of a throwaway one")
    ap.add_argument("--no-save", action="store_true", help="do not write bench/results/<timestamp>.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0

    which = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = which - {"delete", "anonymize", "cascade", "memory"}
    if unknown:
        ap.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if args.rows is not None and args.rows < 100:
        ap.error("--rows must be at least 100")
    if args.batch_size < 1 or args.repeat < 1:
        ap.error("--batch-size and --repeat must be positive")
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]
    rows = {"sqlite": args.rows or 1_000_000, "postgresql": args.rows or 1_000_000}
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {msg}", file=sys.stderr, flush=True)

    results: list[Result] = []
    memory: dict[str, dict | None] = {}
    versions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="retention-bench-") as tmp:
        workdir = Path(tmp)
        for name in backends:
            if name == "sqlite":
                backend: Backend = SQLiteBackend(workdir / "bench.db")
                server = None
            else:
                sys.path.insert(0, str(ROOT / "tests"))
                from pgserver import ExistingServer, PostgresServer, PostgresUnavailable
                server = ExistingServer(args.pg_url) if args.pg_url else PostgresServer()
                try:
                    if isinstance(server, PostgresServer):
                        log("postgresql: starting a throwaway server")
                        server.start()
                    server.drop_database(PG_DATABASE)
                    backend = PostgresBackend(server.create_database(PG_DATABASE))
                except (PostgresUnavailable, sa.exc.SQLAlchemyError) as e:
                    skipped[name] = str(e).splitlines()[0]
                    log(f"postgresql: SKIPPED: {skipped[name]}")
                    server.stop()
                    continue
            try:
                versions[name] = backend.version()
                res, mem = scenarios(backend, rows[name], args.batch_size, workdir, args.repeat, which, log)
                results += res
                memory[name] = mem
            finally:
                backend.close()
                if server is not None:
                    server.drop_database(PG_DATABASE)
                    server.stop()

    print(render(results, memory))
    for name, why in skipped.items():
        print(f"\n{name}: SKIPPED: {why}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    doc = {
        "timestamp": stamp, "git_commit": git("rev-parse", "HEAD"),
        # the code measured is the working tree: list what differed from the commit
        "git_modified": [line[3:] for line in (git("status", "--porcelain", "--untracked-files=no") or "").splitlines()],
        "args": {"rows": rows, "backends": backends, "batch_size": args.batch_size,
                 "scenarios": sorted(which), "repeat": args.repeat},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "versions": versions,
        "skipped": skipped,
        "total_seconds": round(time.perf_counter() - started, 1),
        "results": [asdict(r) for r in results],
        "memory": memory,
    }
    if not args.no_save:
        out = HERE / "results" / f"{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {out.relative_to(ROOT)}")
    print(f"total {doc['total_seconds']}s", file=sys.stderr)
    if not all(r.ok for r in results):
        return 1
    return 2 if skipped else 0


if __name__ == "__main__":
    sys.exit(main())
