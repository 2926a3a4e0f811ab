"""A throwaway PostgreSQL server for the test suite.

The suite needs a real PostgreSQL to prove that what the job does on SQLite it
also does on PostgreSQL.  Rather than depend on a server someone has to set up,
:class:`PostgresServer` builds one in a temporary directory from the locally
installed binaries, tuned for speed over durability, and throws it away
afterwards::

    with PostgresServer() as server:
        url = server.create_database("scratch")
        engine = sqlalchemy.create_engine(url)

:class:`ExistingServer` offers the same ``create_database``/``drop_database``
interface over a server given by URL (``RETENTION_TEST_PG_URL``).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

#: The role created by initdb (``-U``) and used in every URL.
SUPERUSER = "postgres"

#: Tried, in order, when running as root and no ``postgres`` user exists.
_FALLBACK_USER = "retention-pg"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries were found, or the server would not start."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``.

    ``PATH`` first (an operator's explicit choice), then Debian's
    ``/usr/lib/postgresql/<version>/bin``, highest version first: Debian does
    not put ``initdb`` on ``PATH``.
    """
    initdb = shutil.which("initdb")
    if initdb:
        # Resolve symlinks so that pg_ctl is looked up next to the real initdb.
        bindir = Path(initdb).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir
        pg_ctl = shutil.which("pg_ctl")
        if pg_ctl and Path(pg_ctl).parent == Path(initdb).parent:
            return Path(initdb).parent

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in re.findall(r"\d+", name)) or (0,)

    candidates = [p for p in glob.glob("/usr/lib/postgresql/*/bin")
                  if os.access(os.path.join(p, "initdb"), os.X_OK)
                  and os.access(os.path.join(p, "pg_ctl"), os.X_OK)]
    if candidates:
        return Path(max(candidates, key=version))
    raise PostgresUnavailable(
        "PostgreSQL server binaries not found: no initdb on PATH or in /usr/lib/postgresql/*/bin "
        "(install the 'postgresql' package, or set RETENTION_TEST_PG_URL to an existing server)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"database name {name!r} must be a lowercase identifier of at most 63 characters")
    return f'"{name}"'


class _DatabaseAdmin:
    """CREATE/DROP DATABASE through a maintenance URL (``self.admin_url``)."""

    admin_url: str

    def _admin(self, sql: str) -> None:
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def database_url(self, name: str) -> str:
        """The SQLAlchemy URL of database ``name`` on this server."""
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        # template0 guarantees an empty database even if someone
        # polluted template1 on a shared server.
        self._admin(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE template0 ENCODING 'UTF8'")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting anyone still connected to it."""
        # A test that forgot to dispose its engine must not make the drop fail;
        # FORCE (PostgreSQL 13+) terminates leftover sessions.
        self._admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")

    def check(self) -> None:
        """Raise :class:`PostgresUnavailable` unless the server answers."""
        try:
            self._admin("SELECT 1")
        except sa.exc.SQLAlchemyError as exc:
            raise PostgresUnavailable(f"cannot connect to PostgreSQL: {exc.__class__.__name__}: "
                                      f"{str(exc).splitlines()[0]}") from exc


class ExistingServer(_DatabaseAdmin):
    """A server someone else runs, given by a SQLAlchemy URL with CREATEDB rights.

    The URL's database is only used to connect for CREATE/DROP DATABASE.
    """

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.drivername == "postgresql":
            # The project's driver is psycopg 3; plain "postgresql" means psycopg2 to SQLAlchemy.
            parsed = parsed.set(drivername="postgresql+psycopg")
        if not parsed.database:
            parsed = parsed.set(database="postgres")
        self.admin_url = parsed.render_as_string(hide_password=False)

    def stop(self) -> None:
        """Nothing to stop: the server is not ours."""


class PostgresServer(_DatabaseAdmin):
    """A throwaway PostgreSQL cluster in a temporary directory.

    ``start()`` runs initdb and pg_ctl (as an unprivileged user when the
    process is root, since PostgreSQL refuses to run as root), listening on
    127.0.0.1 on a free port with its unix socket in the temporary directory;
    ``stop()`` stops the server and removes the directory.
    """

    def __init__(self, bindir: str | os.PathLike | None = None, *, startup_timeout: float = 60.0) -> None:
        self.bindir = Path(bindir) if bindir else None
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self.run_as: str | None = None
        self.startup_seconds: float | None = None
        self._running = False

    # -- paths -------------------------------------------------------------

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "server.log"

    @property
    def admin_url(self) -> str:  # type: ignore[override]
        """URL of the ``postgres`` maintenance database."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> "PostgresServer":
        """Create the cluster and start the server; returns ``self``."""
        began = time.monotonic()
        if self.bindir is None:
            self.bindir = find_bindir()
        self.run_as = _unprivileged_user() if os.geteuid() == 0 else None
        self.tmpdir = Path(tempfile.mkdtemp(prefix="retention-pg-", dir=_tmp_base(self.run_as)))
        atexit.register(self.stop)
        try:
            if self.run_as:
                pw = pwd.getpwnam(self.run_as)
                os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
            self._run(["initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
                       "--encoding=UTF8", "--locale=C", "--no-sync"])
            # The port was free when picked but another process may take it
            # before the server binds; a few tries make that race harmless.
            for attempt in range(3):
                self.port = free_port()
                self._write_conf()
                try:
                    self._run(["pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                               "-w", "-t", str(int(self.startup_timeout)), "start"])
                    break
                except PostgresUnavailable:
                    if attempt == 2 or "already in use" not in self._log_tail():
                        raise
            self._running = True
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the server (fast, no checkpoint) and remove its directory. Idempotent."""
        if self._running:
            self._running = False
            try:
                self._run(["pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
            except PostgresUnavailable:
                pass  # already gone; removing the directory is all that is left
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        atexit.unregister(self.stop)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------

    def _write_conf(self) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.tmpdir}'",
            # Durability is worthless for a server that is deleted after the run.
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        # postgresql.auto.conf is read last and is the file ALTER SYSTEM owns:
        # rewriting it on a retry replaces the port instead of stacking settings.
        auto = self.datadir / "postgresql.auto.conf"
        stat = auto.stat()
        auto.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        os.chown(auto, stat.st_uid, stat.st_gid)

    def _run(self, argv: list[str]) -> None:
        assert self.bindir is not None
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.run_as:
            cmd = _as_user(self.run_as, cmd)
        # cwd: initdb and pg_ctl fail if they cannot stat the working
        # directory, which an unprivileged user cannot do in /root.
        proc = subprocess.run(cmd, cwd=self.tmpdir, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=self.startup_timeout + 30)
        if proc.returncode != 0:
            raise PostgresUnavailable(
                f"{argv[0]} failed (exit {proc.returncode}): {proc.stdout.strip()[-2000:]}"
                + (f"\nserver log:\n{self._log_tail()}" if argv[0] == "pg_ctl" else ""))

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        # pg_ctl -w already waited, but a real connection through the same
        # driver the tests use is the check that matters.
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                self.check()
                return
            except PostgresUnavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def _unprivileged_user() -> str:
    """A system user to run PostgreSQL as when we are root.

    ``postgres`` if the distribution created it; otherwise a dedicated system
    user, created on first use; ``nobody`` as a last resort.
    """
    for name in ("postgres", _FALLBACK_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/bin/sh", _FALLBACK_USER],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        try:
            pwd.getpwnam(_FALLBACK_USER)
            return _FALLBACK_USER
        except KeyError:
            pass
    return "nobody"


def _as_user(user: str, cmd: list[str]) -> list[str]:
    """Wrap ``cmd`` to run as ``user``: runuser if present, else su."""
    runuser = shutil.which("runuser") or (os.path.exists("/usr/sbin/runuser") and "/usr/sbin/runuser")
    if runuser:
        return [runuser, "-u", user, "--", *cmd]
    # su needs a shell: the user's own may be nologin, so name one.
    return ["su", "-s", "/bin/sh", user, "-c", " ".join(_shell_quote(c) for c in cmd)]


def _shell_quote(s: str) -> str:
    return "'" + s.replace("'", "'\"'\"'") + "'"


def _tmp_base(user: str | None) -> str | None:
    """Where to create the temporary directory.

    The default temp dir, unless we run the server as another user who
    cannot reach it (``TMPDIR`` under ``/root``, mode 0700): then ``/tmp``.
    """
    base = Path(tempfile.gettempdir())
    if user is None:
        return None
    for parent in [base, *base.parents]:
        if not os.stat(parent).st_mode & 0o001:   # others may not traverse it
            return "/tmp"
    return str(base)
