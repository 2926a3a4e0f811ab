"""SQLite: every batch over a text key reads the table by rowid or by the key's index, the first one included.

A first batch over a key is ``key <= ?`` with no lower bound.  SQLite's planner
takes that for half the key's index and, once ANALYZE has run, may prefer an
index of the rule's clock instead: on a million rows that first batch read half
the table (3.8 s, holding the database's write lock).  A rowid table's batches
now walk rowid ranges (``rowid >= ? AND rowid < ?``), the table's own b-tree;
a table with a trigger still walks its key (it must count what each batch
selects), and its first batch must read the key's index.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from retention import commands

NOW = datetime(2026, 6, 15, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

POLICY = """version = 1

[settings]
timezone = "UTC"
batch_size = 40

[databases.app]
url = "sqlite:///{db}"

[[rules]]
name = "old-events"
table = "app.events"
clock = "created_at"
after = "30d"
action = "delete"
basis = "test"
max_fraction = 1.0
"""


def _app(tmp_path, walk: str) -> str:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.executescript("CREATE TABLE events (id TEXT PRIMARY KEY, created_at TIMESTAMP NOT NULL, note TEXT);"
                       + ("" if walk == "rowids" else "CREATE TRIGGER events_seen AFTER DELETE ON events "
                          "BEGIN SELECT 1; END;")
                       + "CREATE INDEX events_created_at ON events (created_at);")
    rows = [(str(uuid.UUID(int=i * 7919 + 1)), (OLD + timedelta(minutes=i)).strftime("%Y-%m-%d %H:%M:%S.%f"), "x")
            for i in range(200)]
    rows += [(str(uuid.uuid4()), "2026-06-14 00:00:00.000000", "new") for _ in range(50)]
    conn.executemany("INSERT INTO events VALUES (?, ?, ?)", rows)
    # the statistics of a large table, whose clock index looks as selective as its key's
    conn.execute("ANALYZE")
    conn.execute("DELETE FROM sqlite_stat1 WHERE tbl = 'events'")
    conn.executemany("INSERT INTO sqlite_stat1 VALUES ('events', ?, ?)",
                     [("events_created_at", "1000000 3"), ("sqlite_autoindex_events_1", "1000000 1")])
    conn.commit()
    conn.close()
    return str(db)


@pytest.mark.parametrize("walk", ["rowids", "keys"])
def test_the_first_batch_over_a_text_key_reads_the_keys_index(tmp_path, walk):
    db = _app(tmp_path, walk)
    (tmp_path / "p.toml").write_text(POLICY.format(db=db))
    writes: list[tuple[str, tuple]] = []

    def record(conn, cursor, statement, parameters, *_):
        if statement.lstrip().upper().startswith("DELETE FROM EVENTS"):
            writes.append((statement, parameters))

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        report = commands.run(tmp_path / "p.toml", now=NOW, env={})
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    out = report.rules[0]
    assert (out.status, out.touch) == ("ok", 200) and out.batches >= 5
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 50
        for statement, parameters in writes:
            plan = " ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + statement, parameters))
            reads = "INTEGER PRIMARY KEY (rowid>? AND rowid<?)" if walk == "rowids" else "sqlite_autoindex_events_1"
            assert reads in plan and "events_created_at" not in plan, (statement, plan)
    finally:
        conn.close()
