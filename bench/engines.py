"""The three engines the benchmark runs on: a throwaway server made durable, and each one's SQL.

The servers come from the test suite's helpers (``tests/pgserver.py``,
``tests/mariadbserver.py``), which tune them for speed; the benchmark then
turns durability back on through SQL, checks that it took, and records every
setting that matters in the results.  A benchmark on a server that does not
fsync its commits would flatter the job, whose batches commit often.

Each engine builds one *template* per table family, once, and gives every
contender a fresh copy of it (PostgreSQL: ``CREATE DATABASE … TEMPLATE``;
SQLite: a file copy; MariaDB: ``INSERT … SELECT`` from a template schema), so
all contenders start from identical, analyzed tables.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from data import FAMILIES, Family, table_names

ROOT = Path(__file__).resolve().parent.parent
WORK_DB = "retention_bench"


class EngineUnavailable(RuntimeError):
    """The engine's server could not be started or reached: its scenarios are not run."""


class Engine:
    """One database engine: its server, its SQL dialect pieces, templates and working copies."""

    name = ""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.settings: dict[str, str] = {}
        self.built: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start (or open) the server and make it durable; raise EngineUnavailable."""

    def stop(self) -> None:
        """Stop the server and remove what it left."""

    def version(self) -> str:
        raise NotImplementedError

    # -- working copies --------------------------------------------------------------------------
    def build_template(self, family: Family, n: int) -> None:
        raise NotImplementedError

    def fresh_copy(self, family: Family) -> str:
        """A working database holding a fresh copy of ``family``'s template; returns its URL."""
        raise NotImplementedError

    def engine(self, url: str) -> sa.Engine:
        return sa.create_engine(url, poolclass=NullPool)

    # -- dialect pieces --------------------------------------------------------------------------
    bigint_pk = "bigint PRIMARY KEY"
    uuid_type = "uuid"
    ts = "timestamp"
    text = "varchar"
    supports_partitions = True

    def cat(self, *parts: str) -> str:
        return " || ".join(f"({p})" for p in parts)

    def series(self, n: int) -> str:
        raise NotImplementedError

    def idiv(self, a: str, b: str) -> str:
        return f"(({a}) / ({b}))"

    def at_seconds(self, start: str, secs: str) -> str:
        raise NotImplementedError

    def uuid(self, i: str) -> str:
        raise NotImplementedError

    def right(self, expr: str, n: int) -> str:
        return f"right({expr}, {n})"

    def mask(self, col: str, keep: int) -> str:
        return (f"CASE WHEN {col} IS NULL THEN NULL WHEN length({col}) <= {keep} THEN repeat('*', length({col})) "
                f"ELSE repeat('*', length({col}) - {keep}) || right({col}, {keep}) END")

    def cutoff_param(self, cutoff):
        return cutoff

    def partition_ddl(self, months: list[tuple[str, str, str]]) -> tuple[str, list[str]]:
        """(the clause after CREATE TABLE …(…), extra statements) for a table partitioned by month."""
        raise NotImplementedError

    def analyze_sql(self, table: str) -> list[str]:
        return [f"ANALYZE {table}"]

    def checksum(self, conn, table: str, columns: list[str]) -> str:
        raise NotImplementedError

    def wal_lsn(self, conn) -> int | None:
        """The write-ahead log position in bytes (PostgreSQL), else None."""
        return None

    def commit_probe(self, url: str, commits: int = 50) -> float:
        """Milliseconds per one-row commit: shows the server pays for durability as configured."""
        eng = self.engine(url)
        try:
            with eng.begin() as conn:
                conn.exec_driver_sql("DROP TABLE IF EXISTS bench_probe")
                conn.exec_driver_sql("CREATE TABLE bench_probe (id integer PRIMARY KEY, v integer)")
            with eng.connect() as conn:
                t0 = time.perf_counter()
                for i in range(commits):
                    conn.exec_driver_sql(f"INSERT INTO bench_probe (id, v) VALUES ({i}, {i})")
                    conn.commit()
                ms = (time.perf_counter() - t0) * 1000 / commits
            with eng.begin() as conn:
                conn.exec_driver_sql("DROP TABLE bench_probe")
            return round(ms, 2)
        finally:
            eng.dispose()

    def _run_script(self, url: str, statements: list[str], autocommit_tail: list[str] = ()) -> None:
        eng = self.engine(url)
        try:
            with eng.begin() as conn:
                for s in statements:
                    conn.execute(sa.text(s))     # text(): '%' stays an operator on every driver
            if autocommit_tail:
                with eng.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    for s in autocommit_tail:
                        conn.exec_driver_sql(s)
        finally:
            eng.dispose()


# --- SQLite -------------------------------------------------------------------------------------

class SQLite(Engine):
    name = "sqlite"
    bigint_pk = "INTEGER PRIMARY KEY"      # the rowid: how an SQLite application declares its key
    uuid_type = "TEXT"
    ts = "TIMESTAMP"
    text = "VARCHAR"
    supports_partitions = False

    def start(self) -> None:
        self.settings = {"journal_mode": "delete (SQLite's default)", "synchronous": "FULL (default)",
                         "foreign_keys": "ON (as retention's own connections)"}

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def _path(self, family: str) -> Path:
        return self.workdir / f"template-{family}.db"

    def engine(self, url: str) -> sa.Engine:
        eng = sa.create_engine(url, poolclass=NullPool)

        @sa.event.listens_for(eng, "connect")
        def _fk(dbapi_conn, _record):
            # retention's own connections enforce foreign keys; the raw statement must pay the same checks
            dbapi_conn.execute("PRAGMA foreign_keys = ON")
        return eng

    def build_template(self, family: Family, n: int) -> None:
        path = self._path(family.name)
        path.unlink(missing_ok=True)
        url = f"sqlite:///{path}"
        self._run_script(url, family.build(self, n), [f"ANALYZE {t}" for t in table_names(family)])

    def fresh_copy(self, family: Family) -> str:
        target = self.workdir / "work.db"
        for suffix in ("", "-journal", "-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        shutil.copyfile(self._path(family.name), target)
        return f"sqlite:///{target}"

    def series(self, n: int) -> str:
        return f"(WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {n}) SELECT i FROM g) AS g"

    def at_seconds(self, start: str, secs: str) -> str:
        # the text form SQLAlchemy writes and retention reads: 'YYYY-MM-DD HH:MM:SS'
        return f"datetime('{start}', '+' || ({secs}) || ' seconds')"

    def uuid(self, i: str) -> str:
        # a deterministic random-looking UUID: products stay below 2**63, so SQLite keeps integers
        h = [f"((({i}) * {m} + {c}) % 4294967291)" for m, c in
             ((2654435761, 97), (40503, 7), (2246822519, 11), (3266489917, 13))]
        return (f"printf('%08x-%04x-4%03x-%04x-%04x%08x', {h[0]}, {h[1]} % 65536, {h[2]} % 4096, "
                f"32768 + {h[2]} % 16384, {h[3]} % 65536, {h[3]})")

    def right(self, expr: str, n: int) -> str:
        return f"substr({expr}, -{n})"

    def mask(self, col: str, keep: int) -> str:
        return (f"CASE WHEN {col} IS NULL THEN NULL "
                f"WHEN length({col}) <= {keep} THEN replace(hex(zeroblob(length({col}))), '00', '*') "
                f"ELSE replace(hex(zeroblob(length({col}) - {keep})), '00', '*') || substr({col}, -{keep}) END")

    def cutoff_param(self, cutoff):
        return cutoff.strftime("%Y-%m-%d %H:%M:%S")

    def checksum(self, conn, table: str, columns: list[str]) -> str:
        # SQLite has no hash function: stream the rows in key order into SHA-256
        h = hashlib.sha256()
        for row in conn.exec_driver_sql(f"SELECT {', '.join(columns)} FROM {table} ORDER BY 1"):
            h.update(repr(tuple(row)).encode())
        n = conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar()
        return f"{n}:{h.hexdigest()[:16]}"


# --- PostgreSQL ---------------------------------------------------------------------------------

#: what a production server runs with; the throwaway server turns these off for the test suite
PG_DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
PG_SHOWN = ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers", "max_wal_size",
            "checkpoint_timeout", "autovacuum"]


class PostgreSQL(Engine):
    name = "postgresql"

    def __init__(self, workdir: Path, url: str | None = None) -> None:
        super().__init__(workdir)
        self.url = url
        self.server = None

    def start(self) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import ExistingServer, PostgresServer, PostgresUnavailable
        try:
            self.server = ExistingServer(self.url) if self.url else PostgresServer().start()
            self.server.check()
            if not self.url:
                self._admin(*(f"ALTER SYSTEM SET {k} = '{v}'" for k, v in PG_DURABLE.items()),
                            "SELECT pg_reload_conf()")
                time.sleep(0.5)   # the reload is asynchronous
        except (PostgresUnavailable, sa.exc.SQLAlchemyError) as e:
            self.stop()
            raise EngineUnavailable(str(e).splitlines()[0]) from None
        eng = self.engine(self.server.admin_url)
        try:
            with eng.connect() as conn:
                self.settings = {k: conn.exec_driver_sql(f"SHOW {k}").scalar() for k in PG_SHOWN}
        finally:
            eng.dispose()
        wrong = {k: self.settings[k] for k, v in PG_DURABLE.items() if self.settings[k] != v}
        if wrong and not self.url:       # a server of the operator's is measured as it is configured
            raise EngineUnavailable(f"the server is not durable: {wrong}")

    def _admin(self, *statements: str) -> None:
        eng = sa.create_engine(self.server.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with eng.connect() as conn:
                for s in statements:
                    conn.exec_driver_sql(s)
        finally:
            eng.dispose()

    def stop(self) -> None:
        if self.server is not None:
            try:
                self._admin(f"DROP DATABASE IF EXISTS {WORK_DB} WITH (FORCE)",
                            *(f"DROP DATABASE IF EXISTS {WORK_DB}_t_{f} WITH (FORCE)" for f in FAMILIES))
            except sa.exc.SQLAlchemyError:
                pass
            self.server.stop()
            self.server = None

    def version(self) -> str:
        eng = self.engine(self.server.admin_url)
        try:
            with eng.connect() as conn:
                return "PostgreSQL " + conn.exec_driver_sql("SHOW server_version").scalar()
        finally:
            eng.dispose()

    def _url(self, db: str) -> str:
        return self.server.database_url(db)

    def build_template(self, family: Family, n: int) -> None:
        db = f"{WORK_DB}_t_{family.name}"
        self._admin(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)",
                    f"CREATE DATABASE {db} TEMPLATE template0 ENCODING 'UTF8'")
        self._run_script(self._url(db), family.build(self, n), [f"VACUUM (ANALYZE, FREEZE) {t}"
                                                               for t in table_names(family)])

    def fresh_copy(self, family: Family) -> str:
        # a file-level copy of the template: its statistics and visibility map come with it
        self._admin(f"DROP DATABASE IF EXISTS {WORK_DB} WITH (FORCE)",
                    f"CREATE DATABASE {WORK_DB} TEMPLATE {WORK_DB}_t_{family.name} STRATEGY FILE_COPY")
        return self._url(WORK_DB)

    def series(self, n: int) -> str:
        return f"generate_series(1::bigint, {n}) AS g(i)"

    def at_seconds(self, start: str, secs: str) -> str:
        return f"(timestamp '{start}' + ({secs}) * interval '1 second')"

    def uuid(self, i: str) -> str:
        return f"md5(({i})::text)::uuid"

    def partition_ddl(self, months):
        parts = [f"CREATE TABLE logs_p_{name} PARTITION OF logs_p FOR VALUES FROM ('{lo}') TO ('{hi}')"
                 for name, lo, hi in months]
        return "PARTITION BY RANGE (created_at)", parts + ["CREATE TABLE logs_p_rest PARTITION OF logs_p DEFAULT"]

    def checksum(self, conn, table: str, columns: list[str]) -> str:
        n, s = conn.exec_driver_sql(
            f"SELECT count(*), coalesce(sum(hashtextextended(row({', '.join(columns)})::text, 0)::numeric), 0) "
            f"FROM {table}").one()
        return f"{n}:{hashlib.sha256(str(s).encode()).hexdigest()[:16]}"

    def wal_lsn(self, conn) -> int | None:
        return int(conn.exec_driver_sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").scalar())


# --- MariaDB ------------------------------------------------------------------------------------

#: InnoDB as a production server runs it: every commit's redo log flushed (fsync), pages written
#: through the doublewrite buffer; a buffer pool and redo log with room for the data
MARIADB_STORAGE = ("--innodb-flush-log-at-trx-commit=1", "--innodb-doublewrite=1", "--innodb-flush-method=fsync",
                   "--innodb-buffer-pool-size=1G", "--innodb-log-file-size=512M")
MARIADB_DURABLE = {"innodb_flush_log_at_trx_commit": "1", "innodb_doublewrite": "1", "innodb_flush_method": "fsync"}
MARIADB_SHOWN = ["innodb_flush_log_at_trx_commit", "innodb_doublewrite", "innodb_flush_method",
                 "innodb_buffer_pool_size", "innodb_log_file_size", "log_bin", "sync_binlog"]


class MariaDB(Engine):
    name = "mariadb"
    bigint_pk = "BIGINT PRIMARY KEY"
    uuid_type = "CHAR(36) CHARACTER SET ascii"
    ts = "DATETIME"
    text = "VARCHAR"

    def __init__(self, workdir: Path, url: str | None = None) -> None:
        super().__init__(workdir)
        self.url = url
        self.server = None

    def start(self) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from mariadbserver import ExistingMariaDB, MariaDBServer, MariaDBUnavailable

        class DurableMariaDB(MariaDBServer):
            storage_options = MARIADB_STORAGE

        try:
            self.server = ExistingMariaDB(self.url) if self.url else DurableMariaDB(time_zones=False).start()
            self.server.check()
        except (MariaDBUnavailable, sa.exc.SQLAlchemyError) as e:
            self.stop()
            raise EngineUnavailable(str(e).splitlines()[0]) from None
        eng = self.engine(self.server.admin_url)
        try:
            with eng.connect() as conn:
                self.settings = {k: str(conn.exec_driver_sql(f"SELECT @@GLOBAL.{k}").scalar())
                                 for k in MARIADB_SHOWN}
        finally:
            eng.dispose()
        wrong = {k: self.settings[k] for k, v in MARIADB_DURABLE.items() if self.settings[k] != v}
        if wrong and not self.url:
            self.stop()
            raise EngineUnavailable(f"the server is not durable: {wrong}")

    def stop(self) -> None:
        if self.server is not None:
            try:
                for db in [WORK_DB, *(f"{WORK_DB}_t_{f}" for f in FAMILIES)]:
                    self.server.drop_database(db)
            except sa.exc.SQLAlchemyError:
                pass
            self.server.stop()
            self.server = None

    def version(self) -> str:
        eng = self.engine(self.server.admin_url)
        try:
            with eng.connect() as conn:
                return "MariaDB " + conn.exec_driver_sql("SELECT VERSION()").scalar()
        finally:
            eng.dispose()

    def build_template(self, family: Family, n: int) -> None:
        db = f"{WORK_DB}_t_{family.name}"
        self.server.drop_database(db)
        url = self.server.create_database(db)
        self._run_script(url, ["SET SESSION foreign_key_checks = 0", *family.build(self, n)],
                         [f"ANALYZE TABLE {t}" for t in table_names(family)])

    def fresh_copy(self, family: Family) -> str:
        tpl = f"{WORK_DB}_t_{family.name}"
        self.server.drop_database(WORK_DB)
        url = self.server.create_database(WORK_DB)
        self._run_script(url, ["SET SESSION foreign_key_checks = 0", *family.ddl(self),
                               *(f"INSERT INTO {t} SELECT * FROM {tpl}.{t}" for t in table_names(family))],
                         [f"ANALYZE TABLE {t}" for t in table_names(family)])
        return url

    def cat(self, *parts: str) -> str:
        return f"CONCAT({', '.join(parts)})"

    def series(self, n: int) -> str:
        # the SEQUENCE engine, built into MariaDB
        return f"(SELECT seq AS i FROM seq_1_to_{n}) AS g"

    def idiv(self, a: str, b: str) -> str:
        return f"(({a}) DIV ({b}))"

    def at_seconds(self, start: str, secs: str) -> str:
        return f"TIMESTAMPADD(SECOND, {secs}, '{start}')"

    def uuid(self, i: str) -> str:
        m = f"md5({i})"
        return (f"CONCAT(SUBSTR({m}, 1, 8), '-', SUBSTR({m}, 9, 4), '-', SUBSTR({m}, 13, 4), '-', "
                f"SUBSTR({m}, 17, 4), '-', SUBSTR({m}, 21, 12))")

    def right(self, expr: str, n: int) -> str:
        return f"RIGHT({expr}, {n})"

    def mask(self, col: str, keep: int) -> str:
        return (f"CASE WHEN {col} IS NULL THEN NULL WHEN CHAR_LENGTH({col}) <= {keep} "
                f"THEN REPEAT('*', CHAR_LENGTH({col})) "
                f"ELSE CONCAT(REPEAT('*', CHAR_LENGTH({col}) - {keep}), RIGHT({col}, {keep})) END")

    def partition_ddl(self, months):
        parts = ", ".join(f"PARTITION p{name} VALUES LESS THAN ('{hi}')" for name, _lo, hi in months)
        return f"PARTITION BY RANGE COLUMNS (created_at) ({parts}, PARTITION prest VALUES LESS THAN (MAXVALUE))", []

    def analyze_sql(self, table: str) -> list[str]:
        return [f"ANALYZE TABLE {table}"]

    def checksum(self, conn, table: str, columns: list[str]) -> str:
        n, s = conn.exec_driver_sql(
            f"SELECT count(*), coalesce(sum(crc32(concat_ws('|', {', '.join(columns)}))), 0) FROM {table}").one()
        return f"{n}:{hashlib.sha256(str(s).encode()).hexdigest()[:16]}"

    def pt_archiver_dsn(self, table: str) -> str:
        url = sa.engine.make_url(self.server.admin_url)
        dsn = f"h={url.host},P={url.port},u={url.username},D={WORK_DB},t={table},A=utf8mb4"
        return dsn + (f",p={url.password}" if url.password else "")


ENGINES = {"sqlite": SQLite, "postgresql": PostgreSQL, "mariadb": MariaDB}
