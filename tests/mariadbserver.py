"""A throwaway MariaDB server for the test suite.

Like :mod:`tests.pgserver`: the suite proves on a real MariaDB what it proves
on SQLite and PostgreSQL, without anyone having to set a server up.
:class:`MariaDBServer` builds one in a temporary directory from Debian's
``mariadb-server`` binaries (``mariadb-install-db``, ``mariadbd``), listening
on 127.0.0.1 only, tuned for speed over durability, and throws it away
afterwards::

    with MariaDBServer() as server:
        url = server.create_database("scratch")
        engine = sqlalchemy.create_engine(url)

The server's time-zone tables are loaded from the system's zoneinfo
(``mariadb-tzinfo-to-sql``), so a policy's named ``timezone`` works as it does
on a production server whose tables are loaded.

:class:`ExistingMariaDB` offers the same ``create_database``/``drop_database``
interface over a server given by URL (``RETENTION_TEST_MARIADB_URL``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dbserver import ExistingServerBase, ServerUnavailable, ThrowawayServer, _as_user, read_pid

#: created by mariadb-install-db with no password, reachable only over loopback
SUPERUSER = "root"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


class MariaDBUnavailable(ServerUnavailable):
    """No MariaDB binaries were found, or the server would not start."""


def find_binaries() -> tuple[Path, Path]:
    """``(mariadb-install-db, mariadbd)``: PATH first, then Debian's /usr/sbin (not on a user's PATH)."""
    found = []
    for names in (("mariadb-install-db", "mysql_install_db"), ("mariadbd", "mysqld")):
        path = None
        for name in names:
            path = shutil.which(name) or next(
                (str(Path(d) / name) for d in ("/usr/sbin", "/usr/bin") if os.access(Path(d) / name, os.X_OK)), None)
            if path:
                break
        if not path:
            raise MariaDBUnavailable(
                f"MariaDB server binaries not found: no {names[0]} on PATH or in /usr/sbin (install the "
                "'mariadb-server' package, or set RETENTION_TEST_MARIADB_URL to an existing server)")
        found.append(Path(path))
    return found[0], found[1]


def _quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"database name {name!r} must be a lowercase identifier of at most 64 characters")
    return f"`{name}`"


class _MariaDBAdmin:
    """MariaDB's CREATE/DROP DATABASE, for a server of ours or someone else's."""

    unavailable = MariaDBUnavailable
    engine_name = "MariaDB"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._admin(f"CREATE DATABASE {_quote_ident(name)} CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, first ending any session still using it (a test that forgot to dispose)."""
        quoted = _quote_ident(name)
        rows = self._admin(f"SELECT id FROM information_schema.processlist WHERE db = '{name}' "
                           "AND id <> connection_id()")
        for (pid,) in rows or ():
            try:
                self._admin(f"KILL {int(pid)}")
            except sa.exc.DBAPIError:
                pass  # it ended by itself meanwhile
        self._admin(f"DROP DATABASE IF EXISTS {quoted}")


class ExistingMariaDB(_MariaDBAdmin, ExistingServerBase):
    """A server someone else runs, given by a SQLAlchemy URL of a user allowed to create databases.

    Its time-zone tables must be loaded for the scenarios that use a named
    ``timezone`` (``mariadb-tzinfo-to-sql /usr/share/zoneinfo | mariadb mysql``).
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername in ("mysql", "mariadb"):
            parsed = parsed.set(drivername=f"{parsed.drivername}+pymysql")
        self.admin_url = parsed._replace(database=None).render_as_string(hide_password=False)


class MariaDBServer(_MariaDBAdmin, ThrowawayServer):
    """A throwaway MariaDB server in a temporary directory.

    ``start()`` creates the system tables and starts ``mariadbd`` on a free
    port of 127.0.0.1 (as an unprivileged user when the process is root: the
    server refuses to run as root), then loads the time zones; ``stop()``
    stops it and removes the directory.
    """

    tmp_prefix = "retention-mariadb-"
    users = ("mysql",)
    fallback_user = "retention-mariadb"

    #: InnoDB's durability and sizes: durability is worthless for a server deleted after the run
    #: (a benchmark, which must pay for it as production does, gives its own)
    storage_options: tuple[str, ...] = (
        "--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0", "--innodb-flush-method=nosync",
        "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M")

    def __init__(self, *, startup_timeout: float = 60.0, time_zones: bool = True) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.time_zones = time_zones
        self._binaries: tuple[Path, Path] | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "mariadbd.sock"

    @property
    def admin_url(self) -> str:
        return f"mariadb+pymysql://{SUPERUSER}@127.0.0.1:{self.port}/"

    def _find_binaries(self) -> None:
        self._binaries = find_binaries()

    def _initialise(self) -> None:
        self._run([str(self._binaries[0]), "--no-defaults", f"--datadir={self.datadir}",
                   "--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"],
                  timeout=self.startup_timeout + 60)

    def _launch(self) -> None:
        argv = [str(self._binaries[1]), "--no-defaults", f"--datadir={self.datadir}",
                "--bind-address=127.0.0.1", f"--port={self.port}", f"--socket={self.socket}",
                f"--pid-file={self.tmpdir / 'mariadbd.pid'}", f"--log-error={self.logfile}",
                "--skip-name-resolve", "--skip-log-bin", "--skip-symbolic-links",
                "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                *self.storage_options,
                "--innodb-file-per-table=0", "--performance-schema=off", "--max-connections=200"]
        if self.run_as:
            argv = _as_user(self.run_as, argv)
        self._proc = subprocess.Popen(argv, cwd=self.tmpdir, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        try:
            self._wait_answering(alive=lambda: self._proc.poll() is None)
        except MariaDBUnavailable:
            if self._proc.poll() is not None:
                self._proc = None
            raise

    def _after_start(self) -> None:
        if self.time_zones:
            self._load_time_zones()

    def _shutdown(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGKILL: no shutdown work for files about to be deleted. runuser stays the
        # parent of the server, so the server is killed by its own pid (the pid file),
        # and the process group this class started only if that is not enough.
        pid = self._server_pid()
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            proc.wait(timeout=10)   # runuser reaps the server and exits
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass

    def _server_pid(self) -> int | None:
        return read_pid(self.tmpdir / "mariadbd.pid")

    def _load_time_zones(self) -> None:
        """Fill mysql.time_zone* from the system's zoneinfo, as Debian's package does on install."""
        tzinfo = shutil.which("mariadb-tzinfo-to-sql") or shutil.which("mysql_tzinfo_to_sql")
        if not tzinfo or not Path("/usr/share/zoneinfo").is_dir():
            raise MariaDBUnavailable("mariadb-tzinfo-to-sql or /usr/share/zoneinfo is missing: the server "
                                     "could not resolve named time zones (install 'mariadb-server' and 'tzdata')")
        sql = subprocess.run([tzinfo, "/usr/share/zoneinfo"], stdin=subprocess.DEVNULL, capture_output=True,
                             text=True, timeout=120, check=True).stdout
        raw = make_url(self.admin_url).set(database="mysql")
        import pymysql
        conn = pymysql.connect(host=raw.host, port=raw.port, user=raw.username, database="mysql",
                               autocommit=True, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                while cur.nextset():
                    pass
        finally:
            conn.close()
