"""SQLite: batches over rowid ranges for keys that are not integers.

A rowid table keeps its rows in rowid order, and an update keeps a row's
rowid: over a text, UUID or composite key, a batch is the rule's whole
statement over rowids ``[p, q)``, as PostgreSQL's is over pages.  No query
looks for a batch's bound; holds are re-checked by each write; rows added
during the run are walked; the run never touches more than it counted.  A
WITHOUT ROWID table, or one with hand-set negative rowids, walks its key.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention.audit import AuditLog
from retention.dialects import impl_for
from retention.execute import rules
from retention.state import StateStore
from tests.runkit import Statements, holds_released_once_counted, run_hearing
from tests.shopkit import HASH_ENV, HOLDS, NOTES_HASH, NOTES_PURGE, extra_tables, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)
NEW = datetime(2026, 6, 15)


def key(i: int) -> str:
    # key order is not rowid order
    return str(uuid.UUID(int=((i * 2654435761) % 2**32) << 96 | i))


def notes(shop, n: int, due=lambda i: True, user=lambda i: None, **table_kw) -> sa.Table:
    def build(md):
        sa.Table("notes", md, sa.Column("id", sa.String(36), primary_key=True),
                 sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
                 sa.Column("created_at", sa.DateTime, nullable=False),
                 sa.Column("email", sa.String(200)), **table_kw)

    extra_tables(shop, build)
    t = shop.t("notes")
    with shop.engine.begin() as conn:
        conn.execute(t.insert(), [dict(id=key(i), user_id=user(i), created_at=OLD if due(i) else NEW,
                                       email=f"user{i}@example.com") for i in range(n)])
    return t


def left(shop) -> list[str]:
    with shop.engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT id FROM notes")).scalars())


def test_a_uuid_key_is_deleted_over_rowid_ranges_with_no_bound_query(sqlite_shop, monkeypatch):
    shop = sqlite_shop
    for u in (1, 2):
        shop.user(u)
    notes(shop, 70, due=lambda i: i % 5 != 0, user=lambda i: 2 if i % 9 == 0 else 1)
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))
    kept = sorted(key(i) for i in range(70) if i % 5 == 0 or i % 9 == 0)
    sizes, original = [], rules._batch

    def batch(*args, **kw):
        sizes.append(original(*args, **kw))
        return sizes[-1]

    monkeypatch.setattr(rules, "_batch", batch)
    with Statements() as seen:
        out = outcome(shop.run(shop.policy(NOTES_PURGE + HOLDS, settings="batch_size = 20"), now=NOW),
                      "notes-purge")
    assert (out.status, out.touch, out.remaining) == ("ok", 70 - len(kept), 0)
    assert left(shop) == kept
    assert out.batches >= 3 and max(sizes) <= 20 and sum(sizes) == out.touch
    writes = [i for i, s in enumerate(seen.sent) if s.startswith("DELETE FROM notes")]
    assert len(writes) == out.batches and all("notes.rowid >=" in seen.sent[i] for i in writes)
    # between the first write and the last, nothing read the table
    between = seen.sent[writes[0]:writes[-1] + 1]
    assert [s for s in between if s.startswith("SELECT") and "FROM notes" in s] == []
    # the audit log names a batch's ends by rowid, not by key
    store = sa.create_engine(f"sqlite:///{shop.tmp_path / 'state.db'}")
    try:
        entries = [e for e in AuditLog(StateStore(store)).entries() if e.kind == "batch-committed"]
    finally:
        store.dispose()
    assert len(entries) == out.batches and all(e.body["keys"]["lo"].startswith("rowid ") for e in entries)


@pytest.mark.parametrize("force_python", [False, True])
def test_each_row_is_anonymized_once(sqlite_shop, force_python):
    shop = sqlite_shop
    t = notes(shop, 60, due=lambda i: i % 4 != 0)
    out = outcome(shop.run(shop.policy(NOTES_HASH, settings="batch_size = 7"), now=NOW,
                           force_python=force_python), "notes-hash")
    assert (out.status, out.touch, out.remaining) == ("ok", 45, 0) and out.batches >= 7
    with shop.engine.connect() as conn:
        emails = dict(conn.execute(sa.select(t.c.id, t.c.email)).all())
    secret = HASH_ENV["RETENTION_HASH_KEY"].encode()
    for i in range(60):
        plain = f"user{i}@example.com"
        once = "h_" + hmac.new(secret, plain.encode(), hashlib.sha256).hexdigest()[:32]
        assert emails[key(i)] == (once if i % 4 else plain), i


def test_rows_added_during_the_run_are_walked(sqlite_shop, monkeypatch):
    shop = sqlite_shop
    t = notes(shop, 30)
    original, calls = rules._batch, []

    def batch(*args, **kw):
        done = original(*args, **kw)
        calls.append(done)
        if len(calls) == 1:
            # the application, between two batches (SQLite has one writer at a time): one counted
            # row goes, a due one arrives, past every rowid the walk first saw
            args[0].execute(t.delete().where(t.c.id == key(29)))
            args[0].execute(t.insert().values(id=key(99), created_at=OLD, email="late@example.com"))
        return done

    monkeypatch.setattr(rules, "_batch", batch)
    out = outcome(shop.run(shop.policy(NOTES_PURGE, settings="batch_size = 7"), now=NOW), "notes-purge")
    assert (out.status, out.touch, out.remaining) == ("ok", 30, 0)
    assert left(shop) == []


def test_a_rowid_range_never_touches_more_than_the_run_counted(sqlite_shop):
    # counted: 3 rows; then the application releases the hold on the 11 others. The first range
    # holds them all: its batch is rolled back and redone, stopping at what was counted
    shop = sqlite_shop
    for u in (1, 2):
        shop.user(u)
    notes(shop, 14, user=lambda i: 1 if i % 5 == 0 else 2)
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))

    out = outcome(run_hearing(shop.policy(NOTES_PURGE + HOLDS), holds_released_once_counted(shop), now=NOW),
                  "notes-purge")
    assert (out.status, out.touch) == ("ok", 3)
    assert len(left(shop)) == 11
    again = outcome(shop.run(shop.policy(NOTES_PURGE + HOLDS), now=NOW), "notes-purge")
    assert (again.status, again.touch) == ("ok", 11) and left(shop) == []


def test_tables_without_usable_rowids_walk_their_key(sqlite_shop):
    shop = sqlite_shop
    impl = impl_for(shop.engine)
    with shop.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE plain (id TEXT PRIMARY KEY, at TEXT)"))
        conn.execute(sa.text("CREATE TABLE bare (id TEXT PRIMARY KEY, at TEXT) WITHOUT ROWID"))
        conn.execute(sa.text("CREATE TABLE below (id TEXT PRIMARY KEY, at TEXT)"))
        conn.execute(sa.text("CREATE TABLE named (id TEXT PRIMARY KEY, rowid TEXT)"))
        conn.execute(sa.text("INSERT INTO plain (rowid, id) VALUES (5, 'a'), (9, 'b')"))
        conn.execute(sa.text("INSERT INTO below (rowid, id) VALUES (-3, 'a'), (9, 'b')"))
        conn.execute(sa.text("INSERT INTO named (_rowid_, id, rowid) VALUES (4, 'a', 'not the rowid')"))
        md = sa.MetaData()
        plain, bare, below, named = (sa.Table(n, md, autoload_with=conn) for n in ("plain", "bare", "below", "named"))
        assert impl.heap_pages(conn, plain) == 10
        assert impl.heap_pages(conn, bare) is None and impl.heap_pages(conn, below) is None
        # a column named rowid hides the rowid; _rowid_ still reaches it
        assert impl.heap_pages(conn, named) == 5
        assert conn.execute(sa.select(named.c.id).where(impl.page_range(named, 4, 5))).scalars().all() == ["a"]
