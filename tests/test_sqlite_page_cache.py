"""SQLite: the job's connections get a page cache large enough for a batch's dirty pages.

With SQLite's default cache (2,000 KiB) a batch that dirties pages across a table's
secondary indexes spills them to the file mid-transaction and reads them back.
"""

from __future__ import annotations

import sqlite3

from retention.dialects.sqlite import CACHE_KIB, _raise_cache
from retention.schema import make_engine


def _cache_kib(dbapi_conn) -> int:
    size = dbapi_conn.execute("PRAGMA cache_size").fetchone()[0]
    if size > 0:
        return size * dbapi_conn.execute("PRAGMA page_size").fetchone()[0] // 1024
    return -size


def test_every_job_connection_has_the_larger_page_cache(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/app.db")
    try:
        for _ in range(2):      # a fresh connection each time: the setting is the connection's
            with engine.connect() as conn:
                assert _cache_kib(conn.connection.dbapi_connection) == CACHE_KIB
            engine.dispose()
    finally:
        engine.dispose()
    assert CACHE_KIB > 2000


def test_a_larger_cache_is_kept_whether_set_in_kib_or_in_pages(tmp_path):
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB * 2}")
        _raise_cache(conn, CACHE_KIB)
        assert _cache_kib(conn) == CACHE_KIB * 2
        pages = CACHE_KIB * 4 * 1024 // conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA cache_size = {pages}")
        _raise_cache(conn, CACHE_KIB)
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == pages
        conn.execute("PRAGMA cache_size = 10")          # ten pages: far smaller
        _raise_cache(conn, CACHE_KIB)
        assert _cache_kib(conn) == CACHE_KIB
    finally:
        conn.close()
