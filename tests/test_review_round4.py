"""Review round 4: hostile or unusual schemas, policy files and environments.

Each test was written to prove a defect before its fix; all are fixed and the
tests guard against a regression.  Only ``tests/shopkit.py`` fixtures are used.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention import commands
from retention.cli import cli
from retention.report import render
from tests.shopkit import HASH_ENV, HOLDS, LOGS_PURGE, outcome

NOW = datetime(2025, 6, 1, 12, 0)

CLOSED_USERS_DELETE = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0
"""


def _invoke(policy: str, *args: str):
    return CliRunner().invoke(cli, ["--config", policy, *args], env=HASH_ENV)


# -- PostgreSQL schemas other than the default ---------------------------------------------------

def test_pg_child_in_another_schema_is_not_deleted_silently_by_on_delete_cascade(pg_shop):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SCHEMA billing")
        c.exec_driver_sql("CREATE TABLE billing.invoices (id int PRIMARY KEY, "
                          "user_id int NOT NULL REFERENCES public.users(id) ON DELETE CASCADE)")
    pg_shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    pg_shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("INSERT INTO billing.invoices VALUES (10, 1)")
    report = pg_shop.run(pg_shop.policy(CLOSED_USERS_DELETE), now=NOW)
    out = outcome(report, "closed-users")
    with pg_shop.engine.connect() as c:
        invoices = c.exec_driver_sql("SELECT count(*) FROM billing.invoices").scalar()
    # default on_parent_delete is block: user 1 stays with its invoice (or the run refuses);
    # at the very least a deleted invoice must be counted as a cascade
    assert invoices == 1 or any(c.rows for c in out.cascades), (invoices, out)


def test_pg_same_table_name_in_another_schema_is_not_mistaken_for_the_rules_table(pg_shop):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SCHEMA audit")
        for schema in ("public", "audit"):
            c.exec_driver_sql(f"CREATE TABLE {schema}.events (id int PRIMARY KEY, created_at timestamp NOT NULL)")
            c.exec_driver_sql(f"INSERT INTO {schema}.events VALUES (1, '2020-01-01'), (2, '2020-01-02')")
        # a table created after public.events refers to audit.events: reflecting it brings audit.events in
        c.exec_driver_sql("CREATE TABLE public.event_refs (id int PRIMARY KEY, "
                          "event_id int REFERENCES audit.events(id))")
    policy = pg_shop.policy("""
[[rules]]
name = "events-purge"
table = "shop.events"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
""")
    pg_shop.run(policy, now=NOW)
    with pg_shop.engine.connect() as c:
        public = c.exec_driver_sql("SELECT count(*) FROM public.events").scalar()
        audit = c.exec_driver_sql("SELECT count(*) FROM audit.events").scalar()
    assert (public, audit) == (0, 2)


def test_pg_a_table_in_another_schema_is_named_database_schema_table(pg_shop):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SCHEMA billing")
        c.exec_driver_sql("CREATE TABLE billing.invoices (id int PRIMARY KEY, created_at timestamp NOT NULL)")
        c.exec_driver_sql("INSERT INTO billing.invoices VALUES (1, '2010-01-01'), (2, '2025-01-01')")
    policy = pg_shop.policy("""
[[rules]]
name = "invoices"
table = "shop.billing.invoices"
clock = "created_at"
after = "10y"
action = "delete"
max_fraction = 1.0
""")
    assert _invoke(policy, "check").exit_code == 0
    out = outcome(pg_shop.run(policy, now=NOW), "invoices")
    assert out.touch == 1 and out.table == "shop.billing.invoices"
    with pg_shop.engine.connect() as c:
        assert c.exec_driver_sql("SELECT id FROM billing.invoices").scalars().all() == [2]


# -- holds far from the subject ----------------------------------------------------------------

def _chain(shop, depth: int) -> sa.MetaData:
    """users <- lvl1 <- lvl2 <- ... <- lvl{depth}, each with a created_at clock."""
    md = sa.MetaData()
    sa.Table("users", md, autoload_with=shop.engine)
    prev = "users"
    for i in range(1, depth + 1):
        sa.Table(f"lvl{i}", md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                 sa.Column("parent_id", sa.Integer, sa.ForeignKey(f"{prev}.id"), nullable=False),
                 sa.Column("created_at", sa.DateTime, nullable=False))
        prev = f"lvl{i}"
    md.create_all(shop.engine)
    return md


def test_hold_protects_a_row_five_foreign_keys_from_its_subject(shop):
    md = _chain(shop, 5)
    shop.user(1)
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    with shop.engine.begin() as c:
        for i in range(1, 6):
            c.execute(md.tables[f"lvl{i}"].insert(), [dict(id=1, parent_id=1, created_at=datetime(2020, 1, 1))])
    policy = shop.policy(HOLDS + """
[[rules]]
name = "lvl5-purge"
table = "shop.lvl5"
clock = "created_at"
after = "1d"
action = "delete"
max_fraction = 1.0
""")
    shop.run(policy, now=NOW)
    with shop.engine.connect() as c:
        assert c.execute(sa.select(sa.func.count()).select_from(md.tables["lvl5"])).scalar() == 1


# -- deep cascades on SQLite ---------------------------------------------------------------------

def test_sqlite_delete_cascading_five_levels_runs(sqlite_shop):
    md = _chain(sqlite_shop, 5)
    for i in (1, 2):
        sqlite_shop.user(i, status="closed", closed_at=datetime(2020, 1, 1))
    with sqlite_shop.engine.begin() as c:
        for lvl in range(1, 6):
            c.execute(md.tables[f"lvl{lvl}"].insert(),
                      [dict(id=i, parent_id=i, created_at=datetime(2020, 1, 1)) for i in (1, 2)])
    tables = "".join(f'[tables."shop.lvl{i}"]\non_parent_delete = "delete"\n' for i in range(1, 6))
    policy = sqlite_shop.policy(tables + CLOSED_USERS_DELETE)
    commands.check(policy, env=HASH_ENV)
    out = outcome(sqlite_shop.run(policy, now=NOW), "closed-users")
    assert out.error is None and out.touch == 2, out.error
    assert sum(c.rows for c in out.cascades) == 10


# -- where_sql -------------------------------------------------------------------------------------

@pytest.mark.parametrize("quote", ["$$'$$", "E'\\''"], ids=["dollar", "escape-string"])
def test_pg_where_sql_cannot_break_out_of_its_parentheses_through_pg_quoting(pg_shop, quote):
    pg_shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))     # held
    pg_shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))     # due
    pg_shop.user(3, status="active", closed_at=None)                     # never due
    pg_shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    where_sql = f"name <> {quote} ) OR (1=1) OR (name = {quote}"
    policy = pg_shop.policy(HOLDS + f"""
[[rules]]
name = "closed-restrict"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "restrict"
max_fraction = 1.0
where_sql = {json.dumps(where_sql)}
""")
    try:
        pg_shop.run(policy, now=NOW)
    except Exception:
        pass            # refusing the fragment is a fix too
    restricted = {r["id"] for r in pg_shop.rows("users") if r["restricted_at"] is not None}
    assert restricted <= {2}, restricted


# -- what reaches the report -----------------------------------------------------------------------

def test_pg_trigger_message_with_row_values_stays_out_of_report_and_logs(pg_shop):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("""CREATE FUNCTION keep_logs() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN RAISE EXCEPTION 'refusing to delete the log of %%', OLD.ip; END $f$""")
        c.exec_driver_sql("CREATE TRIGGER logs_keep BEFORE DELETE ON logs FOR EACH ROW EXECUTE FUNCTION keep_logs()")
    pg_shop.user(1)
    pg_shop.insert("logs", dict(id=1, user_id=1, ip="203.0.113.77", created_at=datetime(2020, 1, 1)))
    result = _invoke(pg_shop.policy(LOGS_PURGE), "--now", "2025-06-01T00:00:00Z", "run")
    assert result.exit_code == 1 and "FAILED" in result.output
    assert "203.0.113.77" not in result.output


def test_text_report_neutralises_terminal_control_characters(sqlite_shop):
    basis = "kept 1 day\\u001b[1A\\u001b[2K\\u001b[32mall ok\\u0007"
    policy = sqlite_shop.policy(LOGS_PURGE.replace("max_fraction", f'basis = "{basis}"\nmax_fraction'))
    text = render(sqlite_shop.run(policy, now=NOW, dry_run=True), "text")
    assert "\x1b" not in text and "\x07" not in text


# -- clock arithmetic at the edges -------------------------------------------------------------------

# past the calendar's ends cutoffs clamp (nothing due, everything protected): no traceback
@pytest.mark.parametrize("now, extra", [
    ("0001-01-01T00:00:00Z", ""),
    ("9999-12-31T00:00:00Z", ""),
    ("2025-06-01T00:00:00Z",
     '[[floors]]\nname = "keep-forever"\ntable = "shop.logs"\nclock = "created_at"\nkeep = "5000y"\n'),
], ids=["year-1", "year-9999", "keep-5000y"])
def test_out_of_range_moments_are_reported_not_tracebacks(sqlite_shop, now, extra):
    policy = sqlite_shop.policy(LOGS_PURGE + extra)
    for verb in ("check", "plan"):
        result = _invoke(policy, "--now", now, verb)
        assert result.exception is None or isinstance(result.exception, SystemExit), (verb, repr(result.exception))
        assert result.exit_code in (0, 2), (verb, result.exit_code)


# -- policy file encoding ------------------------------------------------------------------------------

def test_policy_file_with_a_utf8_bom_and_crlf_loads(sqlite_shop):
    path = Path(sqlite_shop.policy(LOGS_PURGE))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    result = _invoke(str(path), "check")
    assert result.exit_code == 0, result.output


def test_a_delete_cascading_eight_levels_with_a_hold_runs_and_honours_the_hold(shop):
    # protection looks through the whole cascade in flat subqueries: no parser depth limit in sight
    _chain(shop, 8)
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    with shop.engine.begin() as c:
        for uid in (1, 2):
            for level in range(1, 9):
                parent = uid if level == 1 else uid * 100 + level - 1
                c.exec_driver_sql(f"INSERT INTO lvl{level} (id, parent_id, created_at) "
                                  f"VALUES ({uid * 100 + level}, {parent}, '2020-01-01 00:00:00')")
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    tables = "".join(f'[tables."shop.lvl{i}"]\non_parent_delete = "delete"\n' for i in range(1, 9))
    policy = shop.policy(HOLDS + tables + """
[tables."shop.legal_holds"]
on_parent_delete = "block"

[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "1d"
action = "delete"
max_fraction = 1.0
""")
    dry = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-users")
    out = outcome(shop.run(policy, now=NOW), "closed-users")
    assert (out.status, out.touch, out.cascaded_total) == ("ok", 1, 8)
    assert [(p.kind, p.name, p.rows) for p in out.protected] == [("hold", "litigation", 1)]
    assert (dry.touch, dry.cascaded_total) == (out.touch, out.cascaded_total)
    assert shop.ids("users") == [1] and shop.dangling() == []
