"""Cascades that come back to a table they started from: a self-referencing foreign key.

A reply references the comment it answers (``comments.parent_id ->
comments.id``), and a category its parent by code.  Deleting a user deletes
their comments and detaches the replies to them; deleting a category detaches
its subcategories.  The detach writes the very table its rows are found in,
which MySQL refuses when the statement's subquery reads that table (error
1093, "can't specify target table for update in FROM clause").  MariaDB
allows it, so the MySQL statement shapes are checked on MariaDB through a
``mysql+pymysql://`` URL: every UPDATE and DELETE the run sends is parsed, and
none may read its own table in a subquery.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
import sqlglot
from sqlalchemy.engine import make_url
from sqlglot import exp

from tests.shopkit import Shop, cascades, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

POLICY = """
[[rules]]
name = "closed-accounts"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0

[[rules]]
name = "retired-categories"
table = "shop.categories"
clock = "retired_at"
after = "30d"
action = "delete"
max_fraction = 1.0

[tables."shop.comments"]
on_parent_delete = { user_id = "delete", parent_id = "detach" }

[tables."shop.categories"]
on_parent_delete = "detach"
"""


def _tables(shop: Shop) -> None:
    md = sa.MetaData()
    sa.Table("comments", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, sa.ForeignKey(shop.t("users").c.id), nullable=False),
             sa.Column("parent_id", sa.Integer, sa.ForeignKey("comments.id")),
             sa.Column("body", sa.String(100)))
    sa.Table("categories", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("code", sa.String(10), nullable=False, unique=True),
             # a key to a unique column other than the primary key: the detach cannot bind the batch's keys
             sa.Column("parent_code", sa.String(10), sa.ForeignKey("categories.code")),
             sa.Column("retired_at", sa.DateTime))
    md.create_all(shop.engine)


def _fill(shop: Shop) -> None:
    shop.user(1, closed_at=OLD)
    shop.user(2)
    with shop.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO comments (id, user_id, parent_id, body) VALUES "
                             "(10, 1, NULL, 'first'), (11, 1, 10, 'self-reply'), (20, 2, 10, 'reply'), "
                             "(21, 2, 20, 'reply to reply'), (22, 2, NULL, 'other')"))
        conn.execute(sa.text("INSERT INTO categories (id, code, parent_code, retired_at) VALUES "
                             "(1, 'old', NULL, :old), (2, 'sub', 'old', NULL), (3, 'keep', NULL, NULL)"),
                     {"old": OLD})


def _rows(shop: Shop, table: str) -> list[tuple]:
    with shop.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]


def _expected(shop: Shop, report) -> None:
    users, cats = outcome(report, "closed-accounts"), outcome(report, "retired-categories")
    assert (users.status, users.touch, users.error) == ("ok", 1, None)
    assert cascades(users) == {"shop.comments:delete": 2, "shop.comments:detach": 2}
    assert (cats.status, cats.touch, cats.error) == ("ok", 1, None)
    assert cascades(cats) == {"shop.categories:detach": 1}
    assert report.exit_code == 0
    assert shop.ids("users") == [2]
    assert _rows(shop, "comments") == [(20, 2, None, "reply"), (21, 2, 20, "reply to reply"), (22, 2, None, "other")]
    assert [r[:3] for r in _rows(shop, "categories")] == [(2, "sub", None), (3, "keep", None)]


def test_self_referencing_detach_on_every_engine(backend, tmp_path):
    shop = Shop(backend, tmp_path)
    try:
        _tables(shop)
        _fill(shop)
        policy = shop.policy(POLICY)
        dry = shop.run(policy, dry_run=True, now=NOW)
        assert cascades(outcome(dry, "closed-accounts")) == {"shop.comments:delete": 2, "shop.comments:detach": 2}
        _expected(shop, shop.run(policy, now=NOW))
    finally:
        shop.close()


_PLACEHOLDER = re.compile(r"%\(\w+\)s|%s")


def reads_own_table(statement: str) -> bool:
    """Whether an UPDATE or DELETE reads the table it writes in a subquery (MySQL's error 1093)."""
    tree = sqlglot.parse_one(_PLACEHOLDER.sub("0", statement), read="mysql")
    if not isinstance(tree, (exp.Update, exp.Delete)):
        return False
    target = tree.this.name if isinstance(tree, exp.Update) else tree.find(exp.Table).name
    for select in tree.find_all(exp.Select):
        if any(t.name == target for t in select.find_all(exp.Table)):
            return True
    return False


def test_the_detector_knows_error_1093():
    assert reads_own_table("UPDATE c SET p = NULL WHERE c.p IN (SELECT c.id FROM u JOIN c ON u.id = c.u)")
    assert reads_own_table("DELETE FROM c WHERE c.id IN (SELECT x.id FROM c AS x WHERE x.p = %(p)s)")
    assert not reads_own_table("UPDATE c SET p = NULL WHERE c.p IN (%(a)s, %(b)s)")
    assert not reads_own_table("DELETE FROM c WHERE c.u IN (SELECT u.id FROM u)")
    assert not reads_own_table("SELECT c.id FROM c WHERE c.p IN (SELECT c.id FROM c) FOR UPDATE")


@pytest.fixture
def mysql_url(mariadb_url):
    return make_url(mariadb_url).set(drivername="mysql+pymysql").render_as_string(hide_password=False)


def test_under_the_mysql_url_no_write_reads_its_own_table(mysql_url, tmp_path):
    shop = Shop(mysql_url, tmp_path)
    seen: list[str] = []

    def record(conn, cursor, statement, *_):
        seen.append(statement)

    try:
        _tables(shop)
        _fill(shop)
        policy = shop.policy(POLICY)
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
        try:
            report = shop.run(policy, now=NOW)
        finally:
            sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
        _expected(shop, report)
    finally:
        shop.close()
    writes = [s for s in seen if s.lstrip().upper().startswith(("UPDATE COMMENTS", "UPDATE CATEGORIES"))]
    assert writes
    assert [s for s in seen if reads_own_table(s)] == []
