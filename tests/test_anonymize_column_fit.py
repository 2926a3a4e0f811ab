"""Strategies' values fit the column they are written to, and both paths agree on it.

A redacted e-mail never outgrows a column that ``check`` accepted, an IPv4-mapped
address is generalized with the IPv4 prefix, and PostgreSQL ``CHAR(n)`` padding neither
breaks idempotency nor makes the SQL and Python paths differ.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from retention import commands
from retention.anonymize import build
from retention.anonymize.base import ColumnInfo
from tests.shopkit import HASH_ENV, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
OLD = datetime(2020, 1, 1)


def test_redact_email_never_outgrows_a_column_that_check_accepted():
    strategy = build("redact_email")
    column = ColumnInfo("contact", sa.String(8), length=8)
    value = "a@x.com"
    assert len(value) <= 8
    assert strategy.conflicts(column) or len(strategy.apply(value)) <= 8


def test_ipv4_mapped_addresses_are_generalized_with_the_ipv4_prefix():
    root = build({"strategy": "generalize", "ipv4_prefix": 16, "ipv6_prefix": 48})
    assert root.apply("::ffff:10.2.3.4") in ("10.2.0.0", "::ffff:10.2.0.0")
    wide = build({"strategy": "generalize", "ipv4_prefix": 16, "ipv6_prefix": 120})
    assert wide.apply("::ffff:10.2.3.4") in ("10.2.0.0", "::ffff:10.2.0.0")


def _char_table(url: str, tmp_path: Path, strategies: str) -> tuple[sa.Engine, sa.Table, str]:
    engine = sa.create_engine(url)
    md = sa.MetaData()
    t = sa.Table("cards", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                 sa.Column("paid_at", sa.DateTime, nullable=False),
                 sa.Column("holder", sa.String(40)), sa.Column("card", sa.CHAR(20)))
    md.drop_all(engine)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [dict(id=1, paid_at=OLD, holder="Alice", card="4111111111111111")])
    path = tmp_path / "policies.toml"
    path.write_text(f"""version = 1
[databases.app]
url = "{url}"
[[rules]]
name = "cards"
table = "app.cards"
clock = "paid_at"
after = "1d"
action = "anonymize"
max_fraction = 1.0
{strategies}
""")
    return engine, t, str(path)


def test_constant_on_char_column_is_idempotent_on_the_python_path(pg_url, tmp_path):
    engine, _t, policy = _char_table(pg_url, tmp_path, 'columns.card = { strategy = "constant", value = "deleted" }\n'
                                                       'columns.holder = "hash"')
    try:
        first = commands.run(policy, now=NOW, env=HASH_ENV)
        second = commands.run(policy, now=NOW, env=HASH_ENV)
    finally:
        engine.dispose()
    assert outcome(first, "cards").touch == 1
    assert outcome(second, "cards").touch == 0


def test_mask_on_char_column_same_on_sql_and_python_paths(pg_url, tmp_path):
    engine, t, policy = _char_table(pg_url, tmp_path, 'columns.card = { strategy = "mask", keep_last = 4 }')
    results = []
    try:
        for force_python in (False, True):
            with engine.begin() as conn:
                conn.execute(t.update().values(card="4111111111111111"))
            commands.run(policy, now=NOW, env=HASH_ENV, force_python=force_python)
            with engine.connect() as conn:
                results.append(conn.execute(sa.select(t.c.card)).scalar().rstrip())
    finally:
        engine.dispose()
    assert results[0] == "************1111"
    assert results[1] == results[0]
