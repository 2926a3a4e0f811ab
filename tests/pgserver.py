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

import glob
import os
import re
import shutil
from pathlib import Path

from sqlalchemy.engine import make_url

from dbserver import ExistingServerBase, ServerUnavailable, ThrowawayServer, free_port, read_pid

__all__ = ["ExistingServer", "PostgresServer", "PostgresUnavailable", "find_bindir", "free_port"]

#: The role created by initdb (``-U``) and used in every URL.
SUPERUSER = "postgres"

_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(ServerUnavailable):
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


def _quote_ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"database name {name!r} must be a lowercase identifier of at most 63 characters")
    return f'"{name}"'


class _PostgresAdmin:
    """PostgreSQL's CREATE/DROP DATABASE, for a server of ours or someone else's."""

    unavailable = PostgresUnavailable
    engine_name = "PostgreSQL"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create a database and return its SQLAlchemy URL: empty, or a copy of database ``template``."""
        # template0 guarantees an empty database even if someone
        # polluted template1 on a shared server.
        self._admin(f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template or 'template0')} "
                    "ENCODING 'UTF8'")
        return self.database_url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting anyone still connected to it."""
        # A test that forgot to dispose its engine must not make the drop fail;
        # FORCE (PostgreSQL 13+) terminates leftover sessions.
        self._admin(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")


class ExistingServer(_PostgresAdmin, ExistingServerBase):
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


class PostgresServer(_PostgresAdmin, ThrowawayServer):
    """A throwaway PostgreSQL cluster in a temporary directory.

    ``start()`` runs initdb and pg_ctl (as an unprivileged user when the
    process is root, since PostgreSQL refuses to run as root), listening on
    127.0.0.1 on a free port with its unix socket in the temporary directory;
    ``stop()`` stops the server and removes the directory.
    """

    tmp_prefix = "retention-pg-"
    users = ("postgres",)
    fallback_user = "retention-pg"

    def __init__(self, bindir: str | os.PathLike | None = None, *, startup_timeout: float = 60.0) -> None:
        super().__init__(startup_timeout=startup_timeout)
        self.bindir = Path(bindir) if bindir else None
        self._running = False

    @property
    def admin_url(self) -> str:
        """URL of the ``postgres`` maintenance database."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _find_binaries(self) -> None:
        if self.bindir is None:
            self.bindir = find_bindir()

    def _initialise(self) -> None:
        self._pg(["initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync"])

    def _launch(self) -> None:
        self._write_conf()
        self._pg(["pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                  "-w", "-t", str(int(self.startup_timeout)), "start"])
        self._running = True
        # pg_ctl -w already waited, but a real connection through the same
        # driver the tests use is the check that matters.
        self._wait_answering()

    def _shutdown(self) -> None:
        """Stop fast, without a checkpoint: the files are deleted next."""
        if self._running:
            self._running = False
            try:
                self._pg(["pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
            except PostgresUnavailable:
                pass  # already gone; removing the directory is all that is left

    def _server_pid(self) -> int | None:
        return read_pid(self.datadir / "postmaster.pid")

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

    def _pg(self, argv: list[str]) -> None:
        """Run one of the server's tools from ``bindir``; pg_ctl's failures carry the server log."""
        assert self.bindir is not None
        try:
            self._run([str(self.bindir / argv[0]), *argv[1:]], timeout=self.startup_timeout + 30)
        except PostgresUnavailable as exc:
            if argv[0] != "pg_ctl":
                raise
            raise PostgresUnavailable(f"{exc}\nserver log:\n{self._log_tail()}") from None
