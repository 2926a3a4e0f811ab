"""What the suite's throwaway database servers share, whatever the engine.

:mod:`tests.pgserver` and :mod:`tests.mariadbserver` each build a real server
in a temporary directory, loopback only, from the locally installed binaries,
and throw it away afterwards.  The life of such a server is the same for both:
a temporary directory owned by an unprivileged user when the suite runs as
root (neither server runs as root), a data directory initialised once, a free
port (retried if another process takes it first), a connection check through
the driver the tests use, and a stop that removes everything.  This module
holds that life; each engine's module keeps its binaries, its SQL and its
server options.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool


class ServerUnavailable(RuntimeError):
    """No server binaries were found, or the server would not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DatabaseAdmin:
    """CREATE/DROP DATABASE through a maintenance URL (``self.admin_url``).

    Subclasses set ``unavailable`` (the engine's :class:`ServerUnavailable`)
    and ``engine_name``, and write ``create_database``/``drop_database``.
    """

    admin_url: str
    unavailable: type[ServerUnavailable] = ServerUnavailable
    engine_name = "the database server"
    #: how many times the server was started afresh in place of a dead one
    incarnation = 0

    def _admin(self, sql: str):
        """Run one statement in autocommit; its rows, if it returns any."""
        engine = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with engine.connect() as conn:
                result = conn.exec_driver_sql(sql)
                return result.all() if result.returns_rows else None
        finally:
            engine.dispose()

    def drop_database_later(self, name: str) -> None:
        """Drop a database in the background, so that the next test need not wait for it.

        A drop costs the server real work (MariaDB's most of all) that nothing
        waits on; ``settle()`` waits for every drop still under way.
        """
        if getattr(self, "_dropper", None) is None:
            self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="drop-database")
            self._drops = []
        self._drops.append(self._dropper.submit(self.drop_database, name))

    def settle(self) -> None:
        """Wait for the drops under way; raise the first that failed."""
        dropper, self._dropper = getattr(self, "_dropper", None), None
        if dropper is None:
            return
        dropper.shutdown(wait=True)
        for future in self._drops:
            future.result()

    def database_url(self, name: str) -> str:
        """The SQLAlchemy URL of database ``name`` on this server."""
        return make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)

    def gone(self) -> str | None:
        """None while the server runs; else how it ended (see :meth:`ThrowawayServer.gone`)."""
        return None

    def check(self) -> None:
        """Raise ``self.unavailable`` unless the server answers."""
        try:
            self._admin("SELECT 1")
        except sa.exc.SQLAlchemyError as exc:
            raise self.unavailable(f"cannot connect to {self.engine_name}: {exc.__class__.__name__}: "
                                   f"{str(exc).splitlines()[0]}") from exc


class ExistingServerBase(DatabaseAdmin):
    """A server someone else runs (given by URL): nothing to start or stop."""

    def stop(self) -> None:
        """Nothing to stop (the server is not ours) but the drops under way."""
        self.settle()


class ThrowawayServer(DatabaseAdmin):
    """A server of our own in a temporary directory; ``start()`` builds it, ``stop()`` removes it.

    Subclasses give ``tmp_prefix``, ``users`` (who to run as when root, in
    order of preference) and ``fallback_user`` (created if none of them
    exists), and implement ``_initialise()`` (the data directory),
    ``_launch()`` (start on ``self.port``; raise ``self.unavailable`` whose
    log says "already in use" when the port was taken), ``_shutdown()`` and
    optionally ``_after_start()``.
    """

    tmp_prefix = "retention-db-"
    users: tuple[str, ...] = ()
    fallback_user = "retention-db"

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.tmpdir: Path | None = None
        self.run_as: str | None = None
        self.startup_seconds: float | None = None

    @property
    def datadir(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        assert self.tmpdir is not None, "server not started"
        return self.tmpdir / "server.log"

    # -- lifecycle ---------------------------------------------------------

    def start(self):
        """Initialise the data directory and start the server; returns ``self``."""
        began = time.monotonic()
        self._find_binaries()
        self.run_as = unprivileged_user(self.users, self.fallback_user) if os.geteuid() == 0 else None
        self.tmpdir = Path(tempfile.mkdtemp(prefix=self.tmp_prefix, dir=_tmp_base(self.run_as)))
        atexit.register(self.stop)
        try:
            if self.run_as:
                pw = pwd.getpwnam(self.run_as)
                os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
            self._initialise()
            # The port was free when picked but another process may take it
            # before the server binds; a few tries make that race harmless.
            for attempt in range(3):
                self.port = free_port()
                try:
                    self._launch()
                    break
                except self.unavailable:
                    if attempt == 2 or "already in use" not in self._log_tail():
                        raise
            self._after_start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the server (no flush: its files are deleted next) and remove its directory. Idempotent."""
        try:
            self.settle()
        except Exception:   # noqa: BLE001 - a failed drop matters not: the whole server goes next
            pass
        self._shutdown()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        atexit.unregister(self.stop)

    def __enter__(self):
        return self.start()

    # -- a server that died under the suite ----------------------------------

    def gone(self) -> str | None:
        """None while the server process runs; else one line on how it ended.

        The line gives what its log last said of errors and signals, and the
        free disk and memory now, since those are what end a server that
        nothing stopped. A server not started (or stopped) is not gone.
        """
        if self.tmpdir is None or _process_runs(self._server_pid()):
            return None
        log = self._log_tail(lines=400).splitlines()
        telling = [i for i, line in enumerate(log) if _TELLING.search(line)][-6:]
        picked = sorted({*telling, *range(max(0, len(log) - 3), len(log))})   # in the log's order
        disk = shutil.disk_usage(self.tmpdir).free // 2**20
        return (f"the session's {self.engine_name} server (port {self.port}) exited under the suite; "
                f"{disk} MiB of disk and {_available_memory_mib()} MiB of memory are free now; "
                f"its log ends: {' | '.join(log[i].strip() for i in picked)[-1500:] or '(empty)'}")

    def keep_log(self) -> Path | None:
        """A copy of the server's whole log outside its directory (which ``stop()`` removes); its path."""
        kept = Path(tempfile.gettempdir()) / f"retention-dead-{self.engine_name.lower()}-{self.port}.log"
        try:
            shutil.copyfile(self.logfile, kept)
        except OSError:
            return None
        return kept

    def restart(self) -> None:
        """A fresh server in place of a dead one: new directory, new port."""
        self.stop()
        self.incarnation += 1
        self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- what each engine does its own way ---------------------------------

    def _find_binaries(self) -> None:
        """Locate the server's binaries (raise ``self.unavailable`` if missing)."""

    def _initialise(self) -> None:
        raise NotImplementedError

    def _launch(self) -> None:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Anything the server needs once it answers."""

    def _shutdown(self) -> None:
        raise NotImplementedError

    def _server_pid(self) -> int | None:
        """The server process's pid, from its pid file; None if there is none."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------

    def _run(self, argv: list[str], *, timeout: float) -> None:
        """Run a server tool as ``self.run_as``; raise ``self.unavailable`` with its output on failure."""
        cmd = _as_user(self.run_as, argv) if self.run_as else argv
        # cwd: the tools fail if they cannot stat the working directory,
        # which an unprivileged user cannot do in /root.
        proc = subprocess.run(cmd, cwd=self.tmpdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise self.unavailable(f"{Path(argv[0]).name} failed (exit {proc.returncode}): "
                                   f"{proc.stdout.strip()[-2000:]}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _wait_answering(self, alive=lambda: True) -> None:
        """Poll a real connection until the server answers (bounded by ``startup_timeout``).

        ``alive()`` returning False means the server process ended: no use waiting.
        """
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not alive():
                raise self.unavailable(f"the server exited at start:\n{self._log_tail()}")
            try:
                self.check()
                return
            except self.unavailable:
                if time.monotonic() > deadline:
                    raise self.unavailable(f"the server did not answer within {self.startup_timeout:.0f}s:\n"
                                           f"{self._log_tail()}") from None
                time.sleep(0.1)


#: log lines that tell why a server ended
_TELLING = re.compile(r"ERROR|FATAL|PANIC|signal|Assertion|aborting|terminat|killed|out of memory|No space|^Query \(",
                      re.IGNORECASE)


def _process_runs(pid: int | None) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has)."""
    if pid is None:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return not any(line.startswith("State:") and "Z" in line.split()[1:2] for line in status.splitlines())


def _available_memory_mib() -> int | str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return "?"


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file; None if it is missing or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def unprivileged_user(preferred: tuple[str, ...], fallback: str) -> str:
    """A system user to run a server as when we are root.

    The first of ``preferred`` that exists (the distribution's own user), else
    ``fallback``, created on first use; ``nobody`` as a last resort.
    """
    for name in (*preferred, fallback):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    useradd = shutil.which("useradd")
    if useradd:
        subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/bin/sh", fallback],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        try:
            pwd.getpwnam(fallback)
            return fallback
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
