"""Every strategy gives the same bytes on every engine.

The same rows are anonymized by the same rule, with every strategy, on
SQLite, PostgreSQL, MariaDB and MariaDB reached through a ``mysql+pymysql://``
URL (MySQL's statement shapes); the rows each engine keeps afterwards are then
compared value by value.  Within one engine, ``test_anonymize.py`` proves the
SQL path and the Python path agree; this proves the engines agree with each
other: a subject anonymized on one database is indistinguishable from one
anonymized on another.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql as mysql_types
from sqlalchemy.engine import make_url

from tests.shopkit import Shop, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

#: microseconds kept on MariaDB/MySQL too (a plain DATETIME would drop them before any strategy ran)
MOMENT = sa.DateTime().with_variant(mysql_types.DATETIME(fsp=6), "mysql", "mariadb")

POLICY = """
[[rules]]
name = "profiles"
table = "shop.profiles"
clock = "closed_at"
after = "30d"
action = "anonymize"
max_fraction = 1.0
mark = "anonymized_at"
columns.email = "hash"
columns.short_hash = { strategy = "hash", length = 12 }
columns.contact = "redact_email"
columns.card = { strategy = "mask", keep_first = 4, keep_last = 4 }
columns.phone = "mask"
columns.nickname = { strategy = "mask", keep_first = 1, keep_last = 0, char = "é" }
columns.name = { strategy = "constant", value = "deleted user" }
columns.score = { strategy = "constant", value = 0 }
columns.avatar = "null"
columns.postcode = { strategy = "generalize", keep_prefix = 3 }
columns.ip = { strategy = "generalize", ipv4_prefix = 16, ipv6_prefix = 48 }
columns.birth = { strategy = "generalize", to = "year" }
columns.seen_at = { strategy = "generalize", to = "month" }
columns.day_text = { strategy = "generalize", to = "day" }
columns.age = { strategy = "generalize", step = 10 }
columns.balance = { strategy = "generalize", step = 0.5 }
columns.ratio = { strategy = "generalize", step = 0.25 }
"""


def _schema(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "profiles", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("closed_at", MOMENT),
        sa.Column("anonymized_at", MOMENT),
        sa.Column("email", sa.String(120)),
        sa.Column("short_hash", sa.String(120)),
        sa.Column("contact", sa.String(120)),
        sa.Column("card", sa.String(30)),
        sa.Column("phone", sa.String(30)),
        sa.Column("nickname", sa.String(60)),
        sa.Column("name", sa.String(80)),
        sa.Column("score", sa.Integer),
        sa.Column("avatar", sa.String(200)),
        sa.Column("postcode", sa.String(12)),
        sa.Column("ip", sa.String(45)),
        sa.Column("birth", sa.Date),
        sa.Column("seen_at", MOMENT),
        sa.Column("day_text", sa.String(30)),
        sa.Column("age", sa.BigInteger),
        sa.Column("balance", sa.Numeric(14, 2)),
        sa.Column("ratio", sa.Double),
    )


ROWS = [
    dict(email="alice@example.com", short_hash="alice", contact="alice@example.com", card="4111111111111111",
         phone="+15550001234", nickname="Ålice", name="Alice", score=87, avatar="https://x/a.png",
         postcode="SW1A 1AA", ip="10.2.3.4", birth=date(1987, 3, 14), seen_at=datetime(2024, 2, 29, 23, 59, 59, 999999),
         day_text="2024-02-29 13:14:15", age=37, balance=Decimal("1234.56"), ratio=0.8),
    dict(email="日本語@例え.jp", short_hash="ü", contact="al@x.com", card="123", phone="12",
         nickname="日本語テキスト", name="  padded  ", score=-5, avatar="", postcode="AB",
         ip="2001:db8:abcd:1234::1", birth=date(2000, 1, 1), seen_at=datetime(1999, 12, 31, 0, 0),
         day_text="2024-02-29", age=-7, balance=Decimal("-0.75"), ratio=-0.3),
    dict(email="", short_hash="", contact="@x.com", card="", phone="", nickname="", name="", score=0, avatar="x",
         postcode="", ip="192.168.255.255", birth=date(1, 1, 1), seen_at=datetime(9999, 12, 31, 23, 59, 59),
         day_text="0001-01-01 00:00:00", age=0, balance=Decimal("0.00"), ratio=0.0),
    # NULL stays NULL, in every column
    dict(),
    # already done: a second look changes nothing
    dict(email="h_" + "0" * 32, contact="a****@x.com", card="1234********5678", phone="********1234",
         name="deleted user", score=0, postcode="SW1", ip="10.2.0.0", birth=date(1987, 1, 1),
         seen_at=datetime(2024, 2, 1), day_text="2024-02-29", age=30, balance=Decimal("12.50"), ratio=0.25),
    # a value the strategies cannot handle: the row is left as it is, on every engine
    dict(email="bob@example.com", ip="not-an-address", name="Bob"),
    dict(email="carol@example.com", day_text="29/02/2024", name="Carol"),
]


def _engines(sqlite_path, pg_url: str, mariadb_url: str, mysql_url: str) -> dict[str, str]:
    return {"sqlite": f"sqlite:///{sqlite_path}", "postgresql": pg_url, "mariadb": mariadb_url, "mysql": mysql_url}


def _plain(value) -> object:
    """A value as bytes-comparable text, whatever type the driver handed back."""
    if value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    raise TypeError(type(value))


def _anonymized(url: str, tmp_path) -> tuple[list[dict], object]:
    shop = Shop(url, tmp_path)
    try:
        md = sa.MetaData()
        table = _schema(md)
        md.create_all(shop.engine)
        with shop.engine.begin() as conn:
            conn.execute(table.insert(), [{c.name: None for c in table.columns} | row | {"id": i, "closed_at": OLD}
                                          for i, row in enumerate(ROWS, start=1)])
        policy = shop.policy(POLICY)
        report = shop.run(policy, now=NOW)
        again = shop.run(policy, now=NOW)
        with shop.engine.connect() as conn:
            rows = [{k: _plain(v) for k, v in r._mapping.items()}
                    for r in conn.execute(sa.select(table).order_by(table.c.id))]
        return rows, (outcome(report, "profiles"), outcome(again, "profiles"))
    finally:
        md.drop_all(shop.engine)
        shop.close()


def test_every_strategy_gives_the_same_bytes_on_every_engine(tmp_path, pg_url, mariadb_url, mariadb_server):
    name = make_url(mariadb_url).database[:50] + "_my"
    mysql_url = make_url(mariadb_server.create_database(name)).set(drivername="mysql+pymysql") \
        .render_as_string(hide_password=False)
    try:
        results = {}
        for engine, url in _engines(tmp_path / "app.db", pg_url, mariadb_url, mysql_url).items():
            (tmp_path / engine).mkdir()
            results[engine] = _anonymized(url, tmp_path / engine)
    finally:
        mariadb_server.drop_database(name)
    reference, (first, second) = results["sqlite"]
    # rows 1-3 anonymized; 4-5 have nothing left to do; 6-7 hold a value no strategy can handle
    assert first.status == "incomplete" and first.touch == 3
    assert [(n.reason, n.rows) for n in first.not_done] == [("refused", 2)]
    assert second.touch == 0
    first_row, second_row = reference[0], reference[1]
    assert first_row["email"].startswith("h_") and len(first_row["short_hash"]) == 14
    assert (first_row["card"], first_row["contact"], first_row["nickname"]) == ("4111********1111", "a****@example.com",
                                                                                "Åéééé")
    assert (first_row["ip"], second_row["ip"]) == ("10.2.0.0", "2001:db8:abcd::")
    assert (first_row["seen_at"], first_row["day_text"], first_row["birth"]) == (
        "2024-02-01T00:00:00", "2024-02-29 00:00:00", "1987-01-01")
    assert (first_row["age"], second_row["age"], first_row["balance"], second_row["balance"]) == (
        30, -10, "1234.50", "-1.00")
    assert (first_row["ratio"], second_row["ratio"], first_row["avatar"], first_row["score"]) == (
        "0.75", "-0.5", None, 0)
    assert reference[5]["name"] == "Bob" and reference[6]["name"] == "Carol"
    for engine, (rows, (out, again)) in results.items():
        assert (out.status, out.touch, out.not_done, again.touch) == (
            first.status, first.touch, first.not_done, 0), engine
        for want, got in zip(reference, rows, strict=True):
            want = {k: v for k, v in want.items() if k != "anonymized_at"}
            got = {k: v for k, v in got.items() if k != "anonymized_at"}
            assert got == want, (engine, want["id"])
