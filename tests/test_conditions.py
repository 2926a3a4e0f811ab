"""Structured ``where`` / ``active_where`` conditions on dates and timestamps compare as instants.

SQLite stores timestamps as text, and an application may write them with or
without fractional seconds ('2024-01-01 00:00:00' or '... 00:00:00.500000'):
compared as text, equal instants differ, so ``eq`` never matched and ``lt`` /
``ge`` were wrong at the exact boundary.  Every comparison here is checked at
its boundary against the same comparison done in Python on the instants.
"""

from __future__ import annotations

import operator
from datetime import date, datetime, time, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV, HOLDS, outcome

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)
B = datetime(2024, 1, 1, 0, 0, 0)
OPS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le,
       "gt": operator.gt, "ge": operator.ge}

# (id, instant, text as an application might have written it on SQLite)
CLOSED = [
    (1, datetime(2023, 12, 31, 23, 59, 59), "2023-12-31 23:59:59"),
    (2, B, "2024-01-01 00:00:00"),                          # the boundary, no fraction
    (3, B, "2024-01-01 00:00:00.000000"),                   # the boundary, as SQLAlchemy writes it
    (4, datetime(2024, 1, 1, 0, 0, 0, 500000), "2024-01-01 00:00:00.5"),
    (5, datetime(2024, 1, 1, 0, 0, 0, 500000), "2024-01-01 00:00:00.500000"),
    (6, datetime(2024, 1, 1, 0, 0, 1), "2024-01-01 00:00:01"),
    (7, None, None),
]
BIRTH = [(11, date(2009, 12, 31)), (12, date(2010, 1, 1)), (13, date(2010, 1, 2)), (14, None)]
DEFAULT_BIRTH = date(1990, 5, 17)          # what Shop.user gives the CLOSED users


def _users(shop, closed_as_text: bool) -> None:
    for uid, moment, text in CLOSED:
        shop.user(uid, status="closed", closed_at=moment)
    for uid, born in BIRTH:
        shop.user(uid, birth_date=born)
    if closed_as_text and shop.engine.dialect.name == "sqlite":
        with shop.engine.begin() as c:
            for uid, _moment, text in CLOSED:
                c.exec_driver_sql("UPDATE users SET closed_at = ? WHERE id = ?", (text, uid))


def _restricted_by(shop, where: str) -> set[int]:
    policy = shop.policy(f"""
    [[rules]]
    name = "cond"
    table = "shop.users"
    clock = "created_at"
    after = "1d"
    action = "restrict"
    max_fraction = 1.0
    where = {where}
    """)
    out = outcome(shop.run(policy, now=NOW), "cond")
    assert out.error is None, out.error
    restricted = {r["id"] for r in shop.rows("users") if r["restricted_at"] is not None}
    with shop.engine.begin() as c:
        c.execute(shop.t("users").update().values(restricted_at=None))
    return restricted


@pytest.mark.parametrize("value", [B, datetime(2024, 1, 1, 0, 0, 0, 500000), B.date()],
                         ids=["whole-second", "fraction", "date"])
def test_datetime_conditions_match_at_the_exact_boundary(shop, value):
    _users(shop, closed_as_text=True)
    literal = value.isoformat()
    instant = value if isinstance(value, datetime) else datetime.combine(value, time())
    for op, fn in OPS.items():
        expected = {uid for uid, moment, _ in CLOSED if moment is not None and fn(moment, instant)}
        if op == "ne":
            expected |= {7} | {uid for uid, _ in BIRTH}          # ne matches NULL, as documented
        got = _restricted_by(shop, f"{{ closed_at = {{ {op} = {literal} }} }}")
        assert got == expected, (op, literal)


@pytest.mark.parametrize("value", [date(2010, 1, 1), datetime(2010, 1, 1), datetime(2010, 1, 1, 12, 0)],
                         ids=["date", "midnight", "noon"])
def test_date_conditions_treat_a_date_as_its_midnight(shop, value):
    _users(shop, closed_as_text=False)
    for op, fn in OPS.items():
        instant = value if isinstance(value, datetime) else datetime.combine(value, time())
        births = dict(BIRTH) | {uid: DEFAULT_BIRTH for uid, _, _ in CLOSED}
        expected = {uid for uid, born in births.items()
                    if born is not None and fn(datetime.combine(born, time()), instant)}
        if op == "ne":
            expected |= {14}
        got = _restricted_by(shop, f"{{ birth_date = {{ {op} = {value.isoformat()} }} }}")
        assert got == expected, (op, value)


def test_in_and_not_in_match_equal_instants_written_differently(sqlite_shop):
    _users(sqlite_shop, closed_as_text=True)
    assert _restricted_by(sqlite_shop, f"{{ closed_at = [{B.isoformat()}] }}") == {2, 3}
    got = _restricted_by(sqlite_shop, f"{{ closed_at = {{ not_in = [{B.isoformat()}] }} }}")
    assert got == {uid for uid, _, _ in CLOSED if uid not in (2, 3)} | {uid for uid, _ in BIRTH}


def test_a_hold_active_until_its_exact_boundary_protects(shop):
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    # user 1's hold runs until exactly now; user 2's ended a second earlier
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=datetime(2025, 6, 1)),
                dict(id=2, user_id=2, released_at=datetime(2025, 5, 31, 23, 59, 59)))
    if shop.engine.dialect.name == "sqlite":
        with shop.engine.begin() as c:
            c.exec_driver_sql("UPDATE legal_holds SET released_at = substr(released_at, 1, 19)")
    policy = shop.policy(HOLDS.replace("{ released_at = { is_null = true } }",
                                       "{ released_at = { ge = 2025-06-01T00:00:00 } }") + """
    [[rules]]
    name = "closed"
    table = "shop.users"
    clock = "closed_at"
    after = "30d"
    action = "restrict"
    max_fraction = 1.0
    """)
    out = outcome(shop.run(policy, now=NOW), "closed")
    assert (out.due, out.protected_total, out.touch) == (2, 1, 1)
    assert [r["id"] for r in shop.rows("users") if r["restricted_at"]] == [2]


@pytest.mark.parametrize("where, key", [
    ('{ closed_at = { lt = "2024-01-01" } }', "where.closed_at"),      # text for a timestamp
    ('{ closed_at = 5 }', "where.closed_at"),
    ('{ status = 2024-01-01 }', "where.status"),                      # a date for a text column
    ('{ id = "seven" }', "where.id"),
    ('{ id = { lt = 1.5 } }', "where.id"),
])
def test_a_where_value_of_the_wrong_type_is_refused_under_its_own_key(shop, where, key):
    shop.user(1)
    policy = shop.policy(f"""
    [[rules]]
    name = "cond"
    table = "shop.users"
    clock = "created_at"
    after = "1d"
    action = "restrict"
    where = {where}
    """)
    result = CliRunner().invoke(cli, ["--config", policy, "check"], env=HASH_ENV)
    assert result.exit_code == 2, result.output
    assert f"rule 'cond' key '{key}'" in result.output and "Traceback" not in result.output


def test_active_where_value_of_the_wrong_type_is_refused_under_its_own_key(shop):
    shop.user(1)
    policy = shop.policy(HOLDS.replace("{ released_at = { is_null = true } }", '{ released_at = { gt = "now" } }')
                         + """
    [[rules]]
    name = "cond"
    table = "shop.users"
    clock = "created_at"
    after = "1d"
    action = "restrict"
    """)
    result = CliRunner().invoke(cli, ["--config", policy, "check"], env=HASH_ENV)
    assert result.exit_code == 2, result.output
    assert "hold 'litigation' key 'active_where.released_at'" in result.output


def test_text_stored_timestamps_are_untouched_by_the_comparison(sqlite_shop):
    # the normalisation happens in the comparison, never in the data
    _users(sqlite_shop, closed_as_text=True)
    _restricted_by(sqlite_shop, f"{{ closed_at = {{ ge = {B.isoformat()} }} }}")
    with sqlite_shop.engine.connect() as c:
        texts = dict(c.execute(sa.text("SELECT id, closed_at FROM users WHERE id < 8")).all())
    assert texts == {uid: text for uid, _, text in CLOSED}
