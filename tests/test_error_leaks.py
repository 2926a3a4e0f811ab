"""Database errors never carry a row value into the report or the log.

A trigger may raise any message under any SQLSTATE (``RAISE EXCEPTION ...
USING ERRCODE = '23514'``), with DETAIL and HINT of its choosing; the
database's own errors quote rows in DETAIL (``Failing row contains (...)``)
and values in data errors (class 22).  Whatever the code, the e-mail address
the trigger or the row holds must not appear anywhere the job writes.
"""

from __future__ import annotations

import io
from datetime import datetime

import pytest
import structlog

from retention.log import configure_logging
from retention.report import FORMATS, render
from tests.shopkit import outcome

NOW = datetime(2025, 6, 1, 12, 0)
EMAIL = "leaky.person@example.com"

CLOSED_USERS_DELETE = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
max_fraction = 1.0
"""

ANONYMIZE_NAME = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "anonymize"
columns.name = { strategy = "constant", value = "nobody" }
max_fraction = 1.0
"""


@pytest.fixture(autouse=True)
def _reset_structlog():
    yield
    structlog.reset_defaults()


def _run_and_collect(shop, policy_body: str) -> tuple[str, str]:
    """Run the policy; return the error of its rule and everything the job wrote (reports, logs)."""
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    report = shop.run(shop.policy(policy_body), now=NOW)
    out = outcome(report, "closed-users")
    assert out.status == "failed" and out.error, out
    written = "\n".join(render(report, fmt) for fmt in FORMATS) + stream.getvalue()
    return out.error, written


@pytest.mark.parametrize("sqlstate", ["23514", "23505", "23503", "23502", "22023", "22P02", "42501",
                                      "40001", "55P03", "57014", "XX000", "P0001", "P0004"])
def test_pg_trigger_raising_a_row_value_under_any_sqlstate_shows_no_value(pg_shop, sqlstate):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql(f"""CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN RAISE EXCEPTION 'will not delete %%', OLD.email
                  USING ERRCODE = '{sqlstate}', DETAIL = 'row ' || OLD.email, HINT = OLD.email;
            END $f$""")
        c.exec_driver_sql("CREATE TRIGGER users_refuse BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION refuse()")
    pg_shop.user(1, email=EMAIL, status="closed", closed_at=datetime(2020, 1, 1))
    error, written = _run_and_collect(pg_shop, CLOSED_USERS_DELETE)
    assert sqlstate in error                       # the operator still learns what kind of error it was
    assert "leaky.person" not in written and "example.com" not in written


def test_pg_data_error_inside_a_trigger_shows_no_value(pg_shop):
    # the database's own class-22 message, raised inside a trigger, quotes the value it choked on
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("""CREATE FUNCTION check_it() RETURNS trigger LANGUAGE plpgsql AS $f$
            BEGIN PERFORM OLD.email::integer; RETURN OLD; END $f$""")
        c.exec_driver_sql("CREATE TRIGGER users_check BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION check_it()")
    pg_shop.user(1, email=EMAIL, status="closed", closed_at=datetime(2020, 1, 1))
    error, written = _run_and_collect(pg_shop, CLOSED_USERS_DELETE)
    assert "22P02" in error and "leaky.person" not in written


def test_check_violation_shows_the_constraint_not_the_failing_row(shop):
    # "Failing row contains (1, leaky.person@example.com, ...)" is DETAIL: never shown
    shop.user(1, email=EMAIL, status="closed", closed_at=datetime(2020, 1, 1))
    error, written = _run_and_collect(shop, ANONYMIZE_NAME)
    assert "users_name_not_nobody" in error or "check constraint" in error.lower()
    assert "leaky.person" not in written


def test_sqlite_trigger_raise_with_a_row_value_shows_no_value(sqlite_shop):
    # SQLite >= 3.43 takes an expression here ('... ' || OLD.email); older ones a literal only
    with sqlite_shop.engine.begin() as c:
        c.exec_driver_sql(f"""CREATE TRIGGER users_refuse BEFORE DELETE ON users
            BEGIN SELECT RAISE(ABORT, 'will not delete {EMAIL}'); END""")
    sqlite_shop.user(1, email=EMAIL, status="closed", closed_at=datetime(2020, 1, 1))
    error, written = _run_and_collect(sqlite_shop, CLOSED_USERS_DELETE)
    assert "IntegrityError" in error and "leaky.person" not in written
