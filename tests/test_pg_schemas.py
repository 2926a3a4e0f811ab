"""PostgreSQL schemas other than the default: a child there is not deleted silently, a table
of the same name is not mistaken for the rule's, and reports name ``database.schema.table``.
"""

from __future__ import annotations

from datetime import datetime

from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV, outcome

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
