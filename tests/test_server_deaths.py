"""A throwaway server that dies under the suite is named, with why, and replaced.

Without this, a server killed halfway through a session (a crash, the OOM
killer, a full disk) fails every later test of its engine with "connection
refused", and the reason is lost with its temporary directory.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

import conftest
from mariadbserver import MariaDBServer, MariaDBUnavailable
from pgserver import PostgresServer, PostgresUnavailable

ENGINES = [
    pytest.param(lambda: PostgresServer(), PostgresUnavailable, "PostgreSQL", id="postgresql",
                 marks=pytest.mark.postgresql),
    pytest.param(lambda: MariaDBServer(time_zones=False), MariaDBUnavailable, "MariaDB", id="mariadb",
                 marks=pytest.mark.mariadb),
]


def _start(make, unavailable, engine):
    try:
        return make().start()
    except unavailable as exc:
        conftest._unavailable(str(exc), engine)


def _wait_gone(server, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while (gone := server.gone()) is None:
        assert time.monotonic() < deadline, "the killed server still counts as running"
        time.sleep(0.05)
    return gone


@pytest.mark.parametrize("make, unavailable, engine", ENGINES)
def test_a_killed_server_is_reported_then_replaced_for_the_next_tests(make, unavailable, engine):
    server = _start(make, unavailable, engine)
    try:
        assert server.gone() is None
        conftest._still_running(server)          # a running server: nothing happens
        assert server.incarnation == 0
        port, tmpdir = server.port, server.tmpdir
        server.create_database("t_before")
        with (tmpdir / "server.log").open("a") as log:
            log.write("2026-12-02 12:00:00 0 [ERROR] disk full, in the test's words\n")

        os.kill(server._server_pid(), signal.SIGKILL)
        gone = _wait_gone(server)
        assert gone.startswith(f"the session's {engine} server (port {port}) exited under the suite; ")
        assert "MiB of disk" in gone and "MiB of memory are free now" in gone
        assert "[ERROR] disk full, in the test's words" in gone      # the log's telling lines
        assert "\n" not in gone                   # one line: whole in pytest's short summary

        with pytest.raises(pytest.fail.Exception, match=r"exited under the suite") as failed:
            conftest._still_running(server)
        kept = Path(str(failed.value).rsplit("its whole log is kept in ", 1)[1])
        assert "[ERROR] disk full, in the test's words" in kept.read_text()
        kept.unlink()
        assert server.incarnation == 1
        assert server.gone() is None
        assert not tmpdir.exists()                # the dead one's directory is gone
        url = server.create_database("t_after")   # the new server answers and is empty
        engine_ = sa.create_engine(url)
        try:
            assert sa.inspect(engine_).get_table_names() == []
        finally:
            engine_.dispose()
    finally:
        server.stop()
    assert server.gone() is None                  # a server stopped on purpose is not "gone"
