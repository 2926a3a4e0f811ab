"""``where_sql`` is parsed for the database's SQL dialect and what runs is the parser's own SQL.

The job writes ``... AND (<where_sql>) AND NOT (<protected>)``.  A fragment
that the engine reads differently from a checker (SQLite's ``[...]`` and
backtick identifiers, PostgreSQL's dollar quotes and ``E''`` strings) could
close that parenthesis and detach the rule from its holds and floors.  The
expression is therefore parsed as exactly one boolean expression and the SQL
the parser regenerates is executed, never the operator's text.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from retention import commands
from retention.cli import cli
from tests.shopkit import HASH_ENV, HOLDS, outcome

NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _restrict_rule(where_sql: str) -> str:
    return HOLDS + f"""
[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "restrict"
max_fraction = 1.0
where_sql = {json.dumps(where_sql)}
"""


def _three_users(shop) -> None:
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))     # held
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))     # due
    shop.user(3, status="closed", closed_at=datetime(2025, 5, 30))    # not due for another month
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))


def _invoke(policy: str, *args: str):
    return CliRunner().invoke(cli, ["--config", policy, "--now", "2025-06-01T00:00:00Z", *args], env=HASH_ENV)


BREAKOUTS = [
    # each one, read the way the engine reads it, closes the job's parenthesis and ORs in every row
    pytest.param("name <> [ ' ] ) OR (1=1) OR (name = [ ' ]", id="sqlite-brackets"),
    pytest.param("name <> ` ' ` ) OR (1=1) OR (name = ` ' `", id="sqlite-backticks"),
    pytest.param("name <> $$'$$ ) OR (1=1) OR (name = $$'$$", id="pg-dollar-quotes"),
    pytest.param("name <> E'\\'' ) OR (1=1) OR (name = E'\\''", id="pg-escape-string"),
    pytest.param("1=1) OR (1=1", id="unbalanced-close"),
    pytest.param("(status = 'closed'", id="unbalanced-open"),
    pytest.param("status = 'closed' --", id="line-comment"),
    pytest.param("status = 'closed' /* x */", id="block-comment"),
    pytest.param("status = 'closed'; DELETE FROM users", id="second-statement"),
    pytest.param("status = 'closed';", id="trailing-semicolon"),
    pytest.param("status = 'oops", id="unclosed-string"),
]


@pytest.mark.parametrize("where_sql", BREAKOUTS)
def test_a_where_sql_that_could_escape_its_parentheses_is_refused_and_touches_nothing(shop, where_sql):
    _three_users(shop)
    policy = shop.policy(_restrict_rule(where_sql))
    before = shop.dump()
    result = _invoke(policy, "run")
    assert result.exit_code == 2, result.output
    assert "rule 'closed-restrict'" in result.output and "key 'where_sql'" in result.output
    assert "Traceback" not in result.output
    assert shop.dump() == before


@pytest.mark.parametrize("where_sql, says", [
    ("SELECT 1", "one boolean expression"),
    ("status = 'closed' UNION SELECT 1", "one boolean expression"),
    ("DELETE FROM users", "one boolean expression"),
    ("", "empty"),
    ("id IN (SELECT user_id FROM orders FOR UPDATE)", "lock"),
    ("closed_at <= :yesterday", ":yesterday"),
    ("closed_at <= ?", "placeholder"),
    ("closed_at <= :now_minus_3m", "ambiguous"),
    ("(" * 3000 + "1=1" + ")" * 3000, "nested"),
])
def test_what_is_not_one_read_only_boolean_expression_is_refused(shop, where_sql, says):
    _three_users(shop)
    policy = shop.policy(_restrict_rule(where_sql))
    result = _invoke(policy, "check")
    assert result.exit_code == 2, result.output
    assert "rule 'closed-restrict'" in result.output and "key 'where_sql'" in result.output
    assert says in result.output and "Traceback" not in result.output


def test_a_subquery_that_writes_is_refused_on_postgresql(pg_shop):
    _three_users(pg_shop)
    sql = "EXISTS (WITH d AS (DELETE FROM legal_holds RETURNING 1) SELECT 1 FROM d)"
    result = _invoke(pg_shop.policy(_restrict_rule(sql)), "run")
    assert result.exit_code == 2 and "key 'where_sql'" in result.output, result.output
    assert pg_shop.count("legal_holds") == 1


def test_legitimate_expressions_run_with_quotes_parentheses_and_colons_inside_literals(shop):
    _three_users(shop)
    shop.user(4, status="closed", closed_at=datetime(2020, 1, 1), name="O'Brien (a:b)")
    shop.insert("orders", dict(id=1, user_id=2, completed_at=datetime(2020, 1, 1)))
    sql = ("(name <> ')--;(' AND name <> 'it''s' AND name LIKE '%') "
           "AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.user_id = users.id) "
           "AND name <> 'O''Brien (a:b)'")
    report = shop.run(shop.policy(_restrict_rule(sql)), now=NOW)
    out = outcome(report, "closed-restrict")
    assert out.error is None, out.error
    # user 1 is held, 2 has an order, 3 is not due, 4 is excluded by name: nothing to restrict
    assert (out.due, out.touch) == (1, 0)
    assert [r["id"] for r in shop.rows("users") if r["restricted_at"]] == []


def test_what_runs_is_the_regenerated_sql_not_the_operators_text(sqlite_shop):
    _three_users(sqlite_shop)
    policy = sqlite_shop.policy(_restrict_rule("[status] = 'closed' AND `name` IS NOT NULL"))
    report = commands.plan(policy, env=HASH_ENV, now=NOW, show_sql=True)
    out = outcome(report, "closed-restrict")
    assert (out.due, out.protected_total, out.touch) == (2, 1, 1)
    sql = "\n".join(out.statements)
    assert '"status" = \'closed\'' in sql and 'NOT "name" IS NULL' in sql
    assert "[status]" not in sql and "`name`" not in sql


def test_now_minus_with_a_date_cast_works_on_postgresql(pg_shop):
    pg_shop.user(1, birth_date=date(2012, 1, 1))         # a minor
    pg_shop.user(2, birth_date=date(1980, 1, 1))
    pg_shop.user(3, birth_date=date(2007, 6, 1))         # 18 on the day: no longer a minor
    policy = pg_shop.policy("""
    [[rules]]
    name = "minors"
    table = "shop.users"
    clock = "created_at"
    after = "0d"
    where_sql = "birth_date > :now_minus_18y::date AND created_at < :now::timestamp"
    action = "delete"
    max_fraction = 1.0
    """)
    result = _invoke(policy, "run")
    assert result.exit_code == 0, result.output
    assert pg_shop.ids("users") == [2, 3]


def test_now_minus_beyond_the_calendar_is_refused(shop):
    _three_users(shop)
    result = _invoke(shop.policy(_restrict_rule("closed_at <= :now_minus_9999y")), "check")
    assert result.exit_code == 2, result.output
    assert "key 'where_sql'" in result.output and "Traceback" not in result.output


def test_the_dialect_comes_from_the_database_url(tmp_path):
    # PostgreSQL's cast syntax is fine for a PostgreSQL database and refused on SQLite,
    # before any connection is made
    from retention.config import load_config
    from retention.errors import ConfigError
    body = """
version = 1
[databases.shop]
url = "{url}"
[[rules]]
name = "r"
table = "shop.users"
clock = "created_at"
after = "1d"
action = "delete"
where_sql = "name ~ '^x' AND created_at::date < :now"
"""
    pg = tmp_path / "pg.toml"
    pg.write_text(body.format(url="postgresql+psycopg://u@127.0.0.1:1/db"))
    load_config(pg)
    lite = tmp_path / "lite.toml"
    lite.write_text(body.format(url="sqlite:///x.db"))
    with pytest.raises(ConfigError) as e:
        load_config(lite)
    assert re.search(r"rule 'r' key 'where_sql'", str(e.value))


def test_backslashes_mean_what_the_parser_read_even_on_a_server_set_the_old_way(pg_shop):
    # with standard_conforming_strings off, 'a\' would not end the string and the rest would escape
    _three_users(pg_shop)
    dbname = pg_shop.engine.url.database
    with pg_shop.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql(f'ALTER DATABASE "{dbname}" SET standard_conforming_strings = off')
    pg_shop.engine.dispose()
    sql = "name <> 'a\\' AND name <> ') OR (1=1) OR (name = '"
    result = _invoke(pg_shop.policy(_restrict_rule(sql)), "run")
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in pg_shop.rows("users") if r["restricted_at"]] == [2]


# -- whatever is accepted stays inside its parentheses -------------------------------------------

# operands in every quoting form the engines know, the ones that hide a quote from a naive reader
# listed several times over, and an operator that would close the job's parenthesis
_HIDING = ["[ ' ]", "` ' `", "$$'$$", "E'\\''", "'a\\'"]
_OPERANDS = ["name", "'a'", "'it''s'", "[name]", "`name`", '"name"', "1", ":now", "'--'", "')'", "'('",
             "$a$ ) $a$", "x"] + _HIDING * 3
_OPERATORS = [" = ", " <> ", " OR ", " AND ", " || "] + [" ) OR ( "] * 3
_NOISE = ["(", ")", "'", "`", "[", "]", "\\", "--", ";", "$$", "/*"]


@st.composite
def _texts(draw):
    parts = [draw(st.sampled_from(_OPERANDS))]
    for _ in range(draw(st.integers(0, 5))):
        parts += [draw(st.sampled_from(_OPERATORS)), draw(st.sampled_from(_OPERANDS))]
    for _ in range(draw(st.integers(0, 2))):
        parts.insert(draw(st.integers(0, len(parts))), draw(st.sampled_from(_NOISE)))
    return "".join(parts)


@pytest.fixture
def probe(backend):
    """A one-row table on each engine, and the engine's backend name."""
    import sqlalchemy as sa
    engine = sa.create_engine(backend)
    with engine.begin() as c:
        # the odd column name quoted as each engine quotes names (MySQL's "..." is a string);
        # MySQL refuses a name ending in a space, so there ` ' ` names no column and fails to run
        odd = engine.dialect.identifier_preparer.quote_identifier(" '" if engine.dialect.name in ("mysql", "mariadb")
                                                                  else " ' ")
        c.exec_driver_sql(f"CREATE TABLE t (name TEXT, status TEXT, x TEXT, {odd} TEXT)")
        c.exec_driver_sql("INSERT INTO t VALUES ('a', 'closed', 'x', 'q')")
    yield engine, engine.dialect.name
    engine.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_texts())
def test_no_accepted_text_can_or_a_row_in_past_the_parentheses(probe, text):
    # the job ANDs where_sql between other terms; here the term before it is false, so any
    # row coming back would mean the text closed the parenthesis and OR-ed itself in
    import sqlalchemy as sa

    from retention.where_sql import WhereSqlError, compile_where_sql
    engine, name = probe
    try:
        checked = compile_where_sql(text, name)
    except WhereSqlError:
        return
    stmt = sa.text(f"SELECT 1 FROM t WHERE 1 = 0 AND ({checked.sql})").bindparams(
        *(sa.bindparam(p, datetime(2025, 1, 1)) for p in checked.params))
    with engine.connect() as c:
        try:
            rows = c.execute(stmt).all()
        except sa.exc.DBAPIError:
            return          # the engine refused it (a type error, an unknown function): no harm done
        assert rows == [], (text, checked.sql)
