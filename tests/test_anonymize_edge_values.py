"""The SQL and Python paths of each strategy agree on odd stored values, and a second pass changes nothing.

Malformed dates (SQLite text that is not in SQLAlchemy's form, PostgreSQL
dates beyond Python's years) and SQLite text holding a NUL character: for
each value, the SQL path must rewrite it exactly as the Python path does, or,
where the Python path refuses it, leave it untouched; and neither path may
change anything the second time.

The Python path is driven here row by row, as the executor reads and writes
(through the job's own reflected table), so a refusal is seen per value.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from retention.anonymize import build
from retention.dialects import impl_for
from retention.schema import Catalog, make_engine

KEY = {"RETENTION_HASH_KEY": "edge-key"}


def _table(url: str, ddl: str, rows: list[tuple]) -> tuple[sa.engine.Engine, sa.Table]:
    engine = make_engine(url)
    with engine.begin() as c:
        c.exec_driver_sql("DROP TABLE IF EXISTS edge")
        c.exec_driver_sql(ddl)
        for row in rows:
            marks = ", ".join(["%s" if engine.dialect.name == "postgresql" else "?"] * len(row))
            c.exec_driver_sql(f"INSERT INTO edge VALUES ({marks})", row)
    table = Catalog({"db": engine}).tables["db.edge"].table
    return engine, table


def _sql_pass(engine, table, strategy, column: str) -> int:
    """The SQL path's UPDATE for one column, as the executor runs it; returns rows changed."""
    col, impl = table.c[column], impl_for(engine)
    handled = strategy.handled_sql(col, impl)
    where = [sa.not_(strategy.done_sql(col, impl))] + ([handled] if handled is not None else [])
    with engine.begin() as c:
        return c.execute(sa.update(table).where(*where).values({column: strategy.sql(col, impl)})).rowcount


def _python_pass(engine, table, strategy, column: str) -> tuple[int, set[int]]:
    """The Python path, one row at a time: (rows changed, ids of the values it refuses)."""
    changed, refused = 0, set()
    with engine.connect() as c:
        ids = [i for (i,) in c.execute(sa.select(table.c.id).order_by(table.c.id))]
    for i in ids:
        with engine.begin() as c:
            try:
                value = c.execute(sa.select(table.c[column]).where(table.c.id == i)).scalar()
                if strategy.done(value):
                    continue
                new = strategy.apply(value)
            except (ValueError, TypeError, sa.exc.DataError):   # DataError: psycopg cannot load the value
                refused.add(i)
                continue
            c.execute(sa.update(table).where(table.c.id == i).values({column: new}))
            changed += 1
    return changed, refused


def _stored(engine, table, column: str) -> dict[int, tuple]:
    """What is stored, as the database holds it (type and text), never through a Python type."""
    col = table.c[column]
    kind = sa.func.typeof(col) if engine.dialect.name == "sqlite" else sa.func.pg_typeof(col).cast(sa.Text)
    text = sa.type_coerce(sa.cast(col, sa.Text), sa.Text)
    with engine.connect() as c:
        return {i: (k, t) for i, k, t in c.execute(sa.select(table.c.id, kind, text).order_by(table.c.id))}


def _agree(engine, table, strategy, sql_col: str, py_col: str) -> None:
    col, impl = table.c[sql_col], impl_for(engine)
    with engine.connect() as c:
        handled = {i: bool(h) for i, h in c.execute(sa.select(table.c.id, strategy.handled_sql(col, impl)))} \
            if strategy.handled_sql(col, impl) is not None else {}
    _sql_pass(engine, table, strategy, sql_col)
    _, refused = _python_pass(engine, table, strategy, py_col)
    # the same values are refused by both paths ...
    assert {i for i, ok in handled.items() if not ok} == refused
    # ... and every value ends up stored alike
    sql_side, py_side = _stored(engine, table, sql_col), _stored(engine, table, py_col)
    assert sql_side == py_side, {i: (sql_side[i], py_side[i]) for i in sql_side if sql_side[i] != py_side[i]}
    # a second pass touches nothing, on either path
    assert _sql_pass(engine, table, strategy, sql_col) == 0
    assert _python_pass(engine, table, strategy, py_col)[0] == 0
    assert _stored(engine, table, sql_col) == sql_side


SQLITE_DATES = ["1987-03-14", "1987-01-01", "14/03/1987", "1987-3-4", "1987-02-29", "1988-02-29", "0000-01-01",
                "19870314", "1987-03-14T00:00:00", "1987-03-14 10:00:00", " 1987-03-14", "1987-03-14\x00x",
                "March 14, 1987", "2011-W01-2", "", "1987-13-01"]
SQLITE_TIMES = ["1987-03-14 10:00:00", "1987-03-14 10:00:00.123", "1987-03-14 10:00:00.123456", "1987-03-14",
                "1987-03-14T10:00:00", "1987-03-14 10:00:00+02:00", "1987-03-14 25:00:00", "1987-03-14 10:00",
                "1987-03-14 10:00:00Z", "1987-03-14 10:00:00.1234567", "1987-02-30 10:00:00", "1987-01-01 00:00:00",
                "1987-01-01 00:00:00.000000", "1987-03-14 10:61:00", "1987-03-14 10:00:00.", "1987-03-14 10:00:00\x00"]


@pytest.mark.parametrize("unit", ["year", "month", "day"])
def test_sqlite_generalize_to_agrees_with_python_on_malformed_dates(tmp_path, unit):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    rows = [(i, v, v, t, t) for i, (v, t) in enumerate(zip(SQLITE_DATES, SQLITE_TIMES), start=1)]
    engine, table = _table(url, "CREATE TABLE edge (id INTEGER PRIMARY KEY, d_sql DATE, d_py DATE, "
                                "t_sql DATETIME, t_py DATETIME)", rows)
    strategy = build({"strategy": "generalize", "to": unit})
    try:
        _agree(engine, table, strategy, "d_sql", "d_py")
        _agree(engine, table, strategy, "t_sql", "t_py")
        stored = {i: t for i, (_k, t) in _stored(engine, table, "d_sql").items()}
        # a value neither path can read is left exactly as it was: no day of birth kept in garbage
        assert stored[3] == "14/03/1987" and stored[13] == "March 14, 1987"
        assert stored[1] == {"year": "1987-01-01", "month": "1987-03-01", "day": "1987-03-14"}[unit]
    finally:
        engine.dispose()


PG_DATES = ["1987-03-14", "infinity", "-infinity", "0044-03-15 BC", "0001-01-01", "9999-12-31", "10000-06-01"]
PG_TIMES = ["1987-03-14 10:00:00.5", "infinity", "-infinity", "0100-06-01 12:00 BC", "0001-01-01 00:00:00",
            "9999-12-31 23:59:59", "12000-01-01 00:00:00"]


def test_pg_generalize_to_agrees_with_python_beyond_pythons_years(pg_url):
    rows = [(i, v, v, t, t) for i, (v, t) in enumerate(zip(PG_DATES, PG_TIMES), start=1)]
    engine, table = _table(pg_url, "CREATE TABLE edge (id INTEGER PRIMARY KEY, d_sql DATE, d_py DATE, "
                                   "t_sql TIMESTAMP, t_py TIMESTAMP)", rows)
    strategy = build({"strategy": "generalize", "to": "year"})
    try:
        _agree(engine, table, strategy, "d_sql", "d_py")
        _agree(engine, table, strategy, "t_sql", "t_py")
        stored = {i: t for i, (_k, t) in _stored(engine, table, "d_sql").items()}
        assert stored[1] == "1987-01-01" and stored[2] == "infinity" and stored[4] == "0044-03-15 BC"
    finally:
        engine.dispose()


NUL_TEXTS = ["alice@example.com", "ab\x00cdef@example.com", "\x00", "x\x00", "\x00@x.com", "deleted user\x00",
             "h_0123456789abcdef0123456789abcdef\x00", "4111111111111111", "al@x.com", "plain text", "",
             "日本\x00語@例え.jp"]


@pytest.mark.parametrize("spec", [
    {"strategy": "mask", "keep_first": 2, "keep_last": 3},
    {"strategy": "mask", "keep_last": 4},
    {"strategy": "redact_email"},
    {"strategy": "generalize", "keep_prefix": 3},
    {"strategy": "constant", "value": "deleted user"},
    {"strategy": "null"},
    {"strategy": "hash", "length": 32},
], ids=lambda s: s["strategy"] + "".join(f"-{k}{v}" for k, v in s.items() if k != "strategy"))
def test_sqlite_text_with_nul_is_handled_alike_and_only_once(tmp_path, spec):
    url = f"sqlite:///{tmp_path / 'edge.db'}"
    rows = [(i, v, v) for i, v in enumerate(NUL_TEXTS, start=1)]
    engine, table = _table(url, "CREATE TABLE edge (id INTEGER PRIMARY KEY, s_sql TEXT, s_py TEXT)", rows)
    strategy = build(spec)
    strategy.bind(KEY)
    try:
        if strategy.sql(table.c.s_sql, impl_for(engine)) is None:
            # Python only (hash): one path, still once only, and NUL text is hashed whole
            changed, refused = _python_pass(engine, table, strategy, "s_py")
            assert refused == set() and changed == len(NUL_TEXTS)
            assert _python_pass(engine, table, strategy, "s_py") == (0, set())
            return
        _agree(engine, table, strategy, "s_sql", "s_py")
    finally:
        engine.dispose()


def test_a_run_never_rewrites_or_marks_a_row_with_a_date_it_cannot_read(sqlite_shop):
    from datetime import datetime

    from tests.shopkit import outcome

    sqlite_shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    sqlite_shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    with sqlite_shop.engine.begin() as c:
        c.exec_driver_sql("UPDATE users SET birth_date = '14/03/1987' WHERE id = 2")
    policy = sqlite_shop.policy("""
        [[rules]]
        name = "closed-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "30d"
        action = "anonymize"
        columns.birth_date = { strategy = "generalize", to = "year" }
        columns.name = { strategy = "constant", value = "former user" }
        mark = "anonymized_at"
        max_fraction = 1.0
        """)
    first = outcome(sqlite_shop.run(policy, now=datetime(2025, 6, 1)), "closed-anonymize")
    assert first.touch == 1
    with sqlite_shop.engine.connect() as c:
        rows = c.exec_driver_sql("SELECT id, birth_date, name, anonymized_at FROM users ORDER BY id").all()
    assert rows[0][1:3] == ("1990-01-01", "former user") and rows[0][3] is not None
    # the unreadable date is left as it was, and the row is neither half-anonymized nor marked done
    assert rows[1][1:] == ("14/03/1987", "User 2", None)
    again = outcome(sqlite_shop.run(policy, now=datetime(2025, 6, 1)), "closed-anonymize")
    assert again.touch == 0
