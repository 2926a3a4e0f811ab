"""Batches over page ranges (PostgreSQL's TID ranges) for keys that are not integers.

A batch is the rule's whole statement over pages ``[p, q)`` of the table: no
query looks for its bound first.  Each row is touched once even where an
update moves it to a page the walk has not reached; a row the application
moves behind the walk waits for the next run; pages added meanwhile are
walked; the run never touches more than it counted.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from retention.dialects import impl_for
from retention.execute import rules
from retention.execute.pages import PageWalk
from tests.runkit import Statements, holds_released_once_counted, run_hearing
from tests.shopkit import HASH_ENV, HOLDS, NOTES_HASH, NOTES_PURGE, extra_tables, outcome

pytestmark = pytest.mark.postgresql

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)
NEW = datetime(2026, 6, 15)
#: a body this long puts 7 rows on a page
BODY = "x" * 1000
PER_PAGE = 7


def notes_table(md: sa.MetaData) -> None:
    sa.Table("notes", md, sa.Column("id", sa.Uuid, primary_key=True),
             sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
             sa.Column("created_at", sa.DateTime, nullable=False),
             sa.Column("email", sa.String(200)),
             sa.Column("body", sa.Text))


def key(i: int) -> uuid.UUID:
    # key order is not storage order
    return uuid.UUID(int=((i * 2654435761) % 2**32) << 96 | i)


def notes(shop, n: int, due=lambda i: True, user=lambda i: None) -> sa.Table:
    """``n`` rows in storage order (row i on page i // 7), each due where ``due(i)``."""
    extra_tables(shop, notes_table)
    t = shop.t("notes")
    with shop.engine.begin() as conn:
        for i in range(n):      # one by one: storage order is insertion order
            conn.execute(t.insert().values(id=key(i), user_id=user(i), created_at=OLD if due(i) else NEW,
                                           email=f"user{i}@example.com", body=BODY))
    assert pages(shop) == {key(i): i // PER_PAGE for i in range(n)}
    return t


def pages(shop) -> dict:
    """Each row's page, by key."""
    with shop.engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT id, (ctid::text::point)[0]::int FROM notes")).all())


def vacuum(shop) -> None:
    with shop.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM notes"))


def after_batch(monkeypatch, n: int, fn) -> list[int]:
    """Call ``fn()`` (the application, on its own connection) once the ``n``-th batch's statements ran;
    returns the rows each batch changed."""
    sizes, original = [], rules._batch

    def batch(*args, **kw):
        done = original(*args, **kw)
        sizes.append(done)
        if len(sizes) == n:
            fn()
        return done

    monkeypatch.setattr(rules, "_batch", batch)
    return sizes


def grow(shop, i: int) -> None:
    """The application rewrites row ``i`` longer: it no longer fits on its page and moves."""
    with shop.engine.begin() as conn:
        conn.execute(shop.t("notes").update().where(shop.t("notes").c.id == key(i)).values(body="y" * 1500))


def test_a_uuid_key_is_deleted_over_page_ranges_with_no_bound_query(pg_shop, monkeypatch):
    shop = pg_shop
    for u in (1, 2):
        shop.user(u)
    notes(shop, 70, due=lambda i: i % 5 != 0, user=lambda i: 2 if i % 9 == 0 else 1)
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))
    kept = sorted(key(i) for i in range(70) if i % 5 == 0 or i % 9 == 0)
    sizes = after_batch(monkeypatch, 0, lambda: None)
    with Statements() as seen:
        out = outcome(shop.run(shop.policy(NOTES_PURGE + HOLDS, settings="batch_size = 20"), now=NOW),
                      "notes-purge")
    assert (out.status, out.touch, out.remaining) == ("ok", 70 - len(kept), 0)
    assert sorted(pages(shop)) == kept
    assert out.batches >= 3 and max(sizes) <= 20 and sum(sizes) == out.touch
    writes = [i for i, s in enumerate(seen.sent) if s.startswith("DELETE FROM notes")]
    assert len(writes) == out.batches and all("notes.ctid >=" in seen.sent[i] for i in writes)
    # between the first write and the last, nothing read the table
    between = seen.sent[writes[0]:writes[-1] + 1]
    assert [s for s in between if s.startswith("SELECT") and "notes" in s] == []


@pytest.mark.parametrize("force_python", [False, True])
def test_rows_an_update_moves_ahead_of_the_walk_are_anonymized_once(pg_shop, force_python):
    shop = pg_shop
    # 4 due rows on each of 10 pages; the others are deleted from the last 5 pages, whose space
    # the rows of the first 5 then move to when their longer hash does not fit where they are
    t = notes(shop, 70, due=lambda i: i % PER_PAGE >= 3)
    with shop.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.id.in_([key(i) for i in range(35, 70) if i % PER_PAGE < 3])))
    vacuum(shop)
    before = pages(shop)
    out = outcome(shop.run(shop.policy(NOTES_HASH, settings="batch_size = 4"), now=NOW,
                           force_python=force_python), "notes-hash")
    assert (out.status, out.touch, out.remaining) == ("ok", 40, 0)
    after = pages(shop)
    # the walk met rows it had anonymized: moved from the first pages to pages it walked later
    assert any(before[key(i)] < 5 <= after[key(i)] for i in range(35))
    with shop.engine.connect() as conn:
        emails = dict(conn.execute(sa.select(t.c.id, t.c.email)).all())
    secret = HASH_ENV["RETENTION_HASH_KEY"].encode()
    for i in range(70):
        if key(i) not in emails:
            continue
        plain = f"user{i}@example.com"
        once = "h_" + hmac.new(secret, plain.encode(), hashlib.sha256).hexdigest()[:32]
        assert emails[key(i)] == (once if i % PER_PAGE >= 3 else plain), i


def test_a_row_moved_to_pages_added_during_the_run_is_done_in_the_run(pg_shop, monkeypatch):
    shop = pg_shop
    notes(shop, 70)
    moved = 60
    after_batch(monkeypatch, 1, lambda: grow(shop, moved))
    out = outcome(shop.run(shop.policy(NOTES_PURGE, settings="batch_size = 7"), now=NOW), "notes-purge")
    assert (out.status, out.touch, out.remaining) == ("ok", 70, 0)
    assert pages(shop) == {}


def test_a_row_moved_behind_the_walk_waits_for_the_next_run(pg_shop, monkeypatch):
    shop = pg_shop
    t = notes(shop, 70, due=lambda i: i >= 2)
    # room on page 0 only: the row the application rewrites longer can only move there
    with shop.engine.begin() as conn:
        conn.execute(t.delete().where(t.c.id.in_([key(0), key(1)])))
    vacuum(shop)
    moved = 60
    where = {}

    def app_moves_a_row():
        grow(shop, moved)
        where.update(pages(shop))

    after_batch(monkeypatch, 1, app_moves_a_row)
    out = outcome(shop.run(shop.policy(NOTES_PURGE, settings="batch_size = 7"), now=NOW), "notes-purge")
    assert where[key(moved)] == 0          # the walk's first range was page 0 alone
    assert (out.status, out.touch, out.remaining) == ("ok", 67, 1)
    assert list(pages(shop)) == [key(moved)]
    again = outcome(shop.run(shop.policy(NOTES_PURGE), now=NOW), "notes-purge")
    assert (again.status, again.touch, again.remaining) == ("ok", 1, 0) and pages(shop) == {}


def test_a_page_range_never_touches_more_than_the_run_counted(pg_shop, monkeypatch):
    # counted: 3 rows; then the application releases the hold on the 11 others. The first page
    # range holds them all: its batch is rolled back and redone, stopping at what was counted
    shop = pg_shop
    for u in (1, 2):
        shop.user(u)
    notes(shop, 14, user=lambda i: 1 if i % 5 == 0 else 2)
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))
    out = outcome(run_hearing(shop.policy(NOTES_PURGE + HOLDS), holds_released_once_counted(shop), now=NOW),
                  "notes-purge")
    assert (out.status, out.touch) == ("ok", 3)
    assert len(pages(shop)) == 11
    again = outcome(shop.run(shop.policy(NOTES_PURGE + HOLDS), now=NOW), "notes-purge")
    assert (again.status, again.touch) == ("ok", 11) and pages(shop) == {}


def test_two_workers_take_disjoint_page_ranges(pg_shop):
    shop = pg_shop
    for u in (1, 2):
        shop.user(u)
    notes(shop, 140, user=lambda i: 2 if i % 11 == 0 else 1)
    shop.insert("legal_holds", dict(id=1, user_id=2, released_at=None))
    out = outcome(shop.run(shop.policy(NOTES_PURGE + HOLDS, settings="batch_size = 10"), now=NOW, workers=2),
                  "notes-purge")
    held = sorted(key(i) for i in range(140) if i % 11 == 0)
    assert (out.status, out.touch, out.remaining) == ("ok", 140 - len(held), 0)
    assert sorted(pages(shop)) == held


def test_a_partitioned_table_keeps_key_ranges(pg_shop):
    # a ctid is a row's place in its partition: the partitioned table has no pages to walk
    with pg_shop.engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE parted (id text, at date) PARTITION BY RANGE (at)"))
        conn.execute(sa.text("CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM ('2020-01-01') TO (MAXVALUE)"))
        conn.execute(sa.text("INSERT INTO parted VALUES ('a', '2021-01-01')"))
        md = sa.MetaData()
        parted, part = (sa.Table(name, md, autoload_with=conn) for name in ("parted", "parted_1"))
        impl = impl_for(conn)
        assert impl.heap_pages(conn, parted) is None and impl.heap_pages(conn, part) == 1


def test_the_first_page_range_assumes_the_counted_rows_bunched():
    walk = PageWalk(pages=100, rows=1000)
    assert walk.step(0, 500, 1.0) == 12          # 500 rows at 10 a page, a quarter of it


def test_page_ranges_grow_at_most_fourfold_and_fit_the_batch_time():
    walk = PageWalk(pages=1000, rows=1000)
    walk.learn(0, 10, 10, 0.001)                 # sparse: 1 row a page
    assert walk.step(10, 500, 1.0) == 10 + 40    # not 500 pages at once
    walk.learn(10, 50, 400, 0.4)                 # 10 ms a page
    assert walk.step(50, 10_000, 0.15) == 50 + 15
    walk.learn(50, 65, 0, 0.0015)                # empty pages, quickly read
    assert walk.step(65, 500, 1.0) == 65 + 60
