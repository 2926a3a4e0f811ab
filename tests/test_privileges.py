"""``retention check`` verifies the login can do what each rule needs, and lists every missing grant.

On PostgreSQL a real least-privilege role is created and granted part of what
the policy needs; ``check`` run as that role must list exactly the missing
grants (exit 1: a runtime failure, not an invalid file), the statements it
prints must be the ones that fix it, and then ``check`` is OK and ``run``
works as that role.  On SQLite there are no grants: the file must be writable.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from retention import commands
from retention.cli import cli
from retention.privileges import MissingPrivileges, needs
from retention.plan import build_plans
from tests.shopkit import HASH_ENV, outcome

NOW = datetime(2025, 6, 1, 12, 0)

POLICY = """
[[rules]]
name = "closed-users"
table = "shop.users"
clock = "closed_at"
after = "30d"
action = "delete"
where = { status = "closed" }
max_fraction = 1.0

[[rules]]
name = "logs-purge"
table = "shop.logs"
clock = "created_at"
after = "1y"
action = "delete"
max_fraction = 1.0

[[rules]]
name = "inactive-anonymize"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "anonymize"
where = { status = "inactive" }
columns.email = "hash"
columns.name = { strategy = "constant", value = "former user" }
mark = "anonymized_at"
max_fraction = 1.0

[[rules]]
name = "inactive-restrict"
table = "shop.users"
clock = "created_at"
after = "1y"
action = "restrict"
where = { status = "inactive" }
max_fraction = 1.0

[tables."shop.addresses"]
on_parent_delete = "delete"
[tables."shop.logs"]
on_parent_delete = "detach"

[[holds]]
name = "litigation"
table = "shop.legal.holds"
subject = "customer"
subject_column = "user_id"
active_where = { released_at = { is_null = true } }
"""


def _scenario(shop) -> None:
    with shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SCHEMA legal")
        c.exec_driver_sql("CREATE TABLE legal.holds (id INTEGER PRIMARY KEY, "
                          "user_id INTEGER NOT NULL REFERENCES users(id), released_at TIMESTAMP)")
    shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(2, status="closed", closed_at=datetime(2020, 1, 1))
    shop.user(3, status="inactive")
    shop.insert("addresses", dict(id=1, user_id=1, line1="1 Main St"))
    shop.insert("logs", dict(id=1, user_id=1, ip="10.0.0.1", created_at=datetime(2025, 5, 1)),
                dict(id=2, user_id=None, ip="10.0.0.2", created_at=datetime(2020, 1, 1)))
    with shop.engine.begin() as c:
        c.exec_driver_sql("INSERT INTO legal.holds VALUES (1, 2, NULL)")


@pytest.fixture
def job_role(pg_shop):
    """A login role of its own (roles are server-wide), dropped with everything granted to it."""
    role = f"retention_job_{uuid.uuid4().hex[:8]}"
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        c.exec_driver_sql("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    yield role
    pg_shop.engine.dispose()
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql(f"DROP OWNED BY {role}")
        c.exec_driver_sql(f"DROP ROLE {role}")


def _as(shop, role: str, tmp_path) -> str:
    url = make_url(shop.url).set(username=role).render_as_string(hide_password=False)
    path = tmp_path / "job.toml"
    path.write_text(open(shop.policy(POLICY)).read().replace(shop.url, url))
    return str(path)


def test_check_lists_exactly_the_missing_grants_and_they_are_enough(pg_shop, job_role, tmp_path):
    _scenario(pg_shop)
    r = job_role
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {r}")
        c.exec_driver_sql(f"GRANT SELECT ON users, addresses, logs TO {r}")
        c.exec_driver_sql(f"GRANT UPDATE (email) ON users TO {r}")     # a column-level grant counts
        c.exec_driver_sql(f"GRANT DELETE ON logs TO {r}")
    policy = _as(pg_shop, r, tmp_path)

    with pytest.raises(MissingPrivileges) as e:
        commands.check(policy, env=HASH_ENV)
    assert [m.statement for m in e.value.missing] == [
        f"GRANT USAGE ON SCHEMA legal TO {r};",
        f"GRANT SELECT ON legal.holds TO {r};",
        f"GRANT SELECT ON public.legal_holds TO {r};",     # a blocking child of users
        f"GRANT SELECT ON public.orders TO {r};",          # likewise
        f"GRANT UPDATE (id) ON public.addresses TO {r};",  # cascade rows are locked FOR UPDATE
        f"GRANT UPDATE (user_id) ON public.logs TO {r};",  # detached by the users delete
        f"GRANT UPDATE (anonymized_at, name, restricted_at) ON public.users TO {r};",
        f"GRANT DELETE ON public.addresses TO {r};",       # deleted by the users delete's cascade
        f"GRANT DELETE ON public.users TO {r};",
    ]
    why = {m.statement: " ".join(m.why) for m in e.value.missing}
    assert "rule 'closed-users'" in why[f"GRANT DELETE ON public.addresses TO {r};"]

    # the CLI says the same, all at once, and exits 1: the file is valid, the login lacks grants
    result = CliRunner().invoke(cli, ["--config", policy, "check"], env=HASH_ENV)
    assert result.exit_code == 1, result.output
    assert all(m.statement in result.output for m in e.value.missing)

    with pg_shop.engine.begin() as c:
        for m in e.value.missing:
            c.exec_driver_sql(m.statement)
    assert commands.check(policy, env=HASH_ENV).rules == 4

    report = commands.run(policy, now=NOW, env=HASH_ENV)
    assert report.exit_code == 0, [(o.rule, o.error) for o in report.rules]
    assert outcome(report, "closed-users").touch == 1                  # user 2 is held
    assert pg_shop.ids("users") == [2, 3] and pg_shop.ids("addresses") == []
    assert pg_shop.ids("logs") == [1] and pg_shop.rows("logs")[0]["user_id"] is None
    user3 = pg_shop.rows("users")[1]
    assert user3["name"] == "former user" and user3["restricted_at"] is not None


def test_lock_for_update_needs_update_on_one_column(pg_shop, job_role, tmp_path):
    # a delete with children locks its batch: on PostgreSQL FOR UPDATE needs UPDATE on some column
    r = job_role
    pg_shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {r}")
        c.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {r}")
        c.exec_driver_sql(f"GRANT DELETE ON users TO {r}")
    url = make_url(pg_shop.url).set(username=r).render_as_string(hide_password=False)
    path = tmp_path / "lock.toml"
    path.write_text(open(pg_shop.policy(POLICY.split("[[rules]]\nname = \"logs-purge\"")[0])).read()
                    .replace(pg_shop.url, url))
    with pytest.raises(MissingPrivileges) as e:
        commands.check(str(path), env=HASH_ENV)
    assert [m.statement for m in e.value.missing] == [f"GRANT UPDATE (id) ON public.users TO {r};"]
    assert "FOR UPDATE" in e.value.missing[0].why[0]


def test_needs_follow_the_plans_not_the_policy_text(sqlite_shop):
    # the needs are read off the built plans: a floor on a detached child is read through the
    # cascade's protection, a detach is an UPDATE of the foreign-key column only, a block is a read
    body = POLICY.replace('table = "shop.legal.holds"', 'table = "shop.legal_holds"') + """
[[floors]]
name = "logs-1y"
table = "shop.logs"
clock = "created_at"
keep = "1y"
"""
    with commands.open_session(sqlite_shop.policy(body), env=HASH_ENV) as s:
        found = needs(build_plans(s.binding, s.ctx))
    closed = {(n.kind, n.table, n.columns) for n in found if "'closed-users'" in n.why}
    assert ("UPDATE", "logs", ("user_id",)) in closed
    assert ("DELETE", "addresses", ()) in closed and ("DELETE", "users", ()) in closed
    assert any(k == "SELECT" and t == "logs" and "created_at" in cols for k, t, cols in closed)  # the floor's clock
    assert any(k == "SELECT" and t == "orders" for k, t, _ in closed)                            # a blocking child
    assert not any(k in ("DELETE", "UPDATE") and t == "orders" for k, t, _ in closed)


def test_sqlite_has_no_grants_but_a_read_only_file_is_reported(sqlite_shop, tmp_path):
    sqlite_shop.user(1, status="closed", closed_at=datetime(2020, 1, 1))
    body = POLICY.replace('table = "shop.legal.holds"', 'table = "shop.legal_holds"')
    ok = commands.check(sqlite_shop.policy(body), env=HASH_ENV)
    assert any("SQLite has no grants" in n for n in ok.privilege_notes)

    read_only = f"sqlite:///file:{tmp_path / 'app.db'}?mode=ro&uri=true"
    path = tmp_path / "ro.toml"
    path.write_text(open(sqlite_shop.policy(body)).read().replace(sqlite_shop.url, read_only))
    result = CliRunner().invoke(cli, ["--config", str(path), "check"], env=HASH_ENV)
    assert result.exit_code == 1, result.output
    assert "writable" in result.output


def test_the_readme_role_is_enough_for_the_demo_policy(pg_url, tmp_path):
    import re
    from pathlib import Path

    from retention.demo import create_demo

    root = Path(__file__).resolve().parent.parent
    (sql,) = [b for b in re.findall(r"```sql\n(.*?)```", (root / "README.md").read_text(), flags=re.S)
              if "CREATE ROLE retention_job" in b]
    role = f"retention_job_{uuid.uuid4().hex[:8]}"
    database = make_url(pg_url).database
    create_demo(pg_url, now=NOW, scale=0.05)
    engine = sa.create_engine(pg_url)
    try:
        with engine.begin() as c:
            c.exec_driver_sql("REVOKE ALL ON SCHEMA public FROM PUBLIC")
            for statement in sql.replace("retention_job", role).replace(" PASSWORD '...'", "") \
                    .replace("ON DATABASE shop", f"ON DATABASE {database}").split(";"):
                if statement.strip():
                    c.exec_driver_sql(statement)
        url = make_url(pg_url).set(username=role).render_as_string(hide_password=False)
        env = {"SHOP_DATABASE_URL": url, "RETENTION_HASH_KEY": "k"}
        result = commands.check(str(root / "policies.toml"), env=env)
        assert result.rules > 0
        report = commands.run(str(root / "policies.toml"), now=NOW, env=env)
        assert report.exit_code == 0, ([(o.rule, o.error) for o in report.rules if o.error], report.errors, [r.get("error") for r in report.requests])
    finally:
        with engine.begin() as c:
            c.exec_driver_sql(f"DROP OWNED BY {role}")
            c.exec_driver_sql(f"DROP ROLE {role}")
        engine.dispose()
