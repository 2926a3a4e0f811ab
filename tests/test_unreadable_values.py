"""Stored values the job cannot read or a strategy cannot handle.

One such row never fails the rule, blocks the table or prints its value: it
is counted (``unreadable_clocks``, or ``not_done`` with reason ``unreadable`` /
``refused``) and every other row is processed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV, LOGS_PURGE, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)

ANONYMIZE = """
    [[rules]]
    name = "closed-anonymize"
    table = "shop.users"
    clock = "closed_at"
    after = "1d"
    action = "anonymize"
    max_fraction = 1.0
    columns.email = "hash"
    columns.birth_date = { strategy = "generalize", to = "year" }
    columns.last_ip = { strategy = "generalize", ipv4_prefix = 16 }
    mark = "anonymized_at"
"""


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def not_done(out) -> dict[str, int]:
    return {n.reason: n.rows for n in out.not_done}


def invoke(policy: str, *args: str):
    return CliRunner().invoke(cli, ["--config", policy, *args, "--format", "json", "--now", NOW.isoformat()],
                              env=HASH_ENV)


def test_pg_infinite_and_bc_clocks_do_not_fail_the_rule(pg_shop):
    shop = pg_shop
    shop.insert("logs", dict(id=1, user_id=None, ip="10.1.2.3", created_at=OLD))
    with shop.engine.begin() as c:
        c.exec_driver_sql("INSERT INTO logs (id, ip, created_at) VALUES "
                          "(2, '10.1.2.3', '-infinity'), (3, '10.1.2.3', '0044-03-15 BC'), "
                          "(4, '10.1.2.3', 'infinity')")
    policy = shop.policy(LOGS_PURGE)
    plan = outcome(shop.run(policy, dry_run=True, now=NOW), "logs-purge")
    assert (plan.status, plan.due, plan.touch, plan.unreadable_clocks) == ("ok", 3, 3, 2)
    assert plan.oldest_clock is not None and plan.oldest_clock.year == 2020
    out = outcome(shop.run(policy, now=NOW), "logs-purge")
    # -infinity and 44 BC are as due as a clock can be; infinity never is
    assert (out.status, out.touch, out.unreadable_clocks) == ("ok", 3, 2)
    with shop.engine.connect() as c:
        assert c.exec_driver_sql("SELECT id FROM logs").scalars().all() == [4]
    result = invoke(policy, "plan")
    assert result.exit_code == 0 and json.loads(result.stdout)["rules"][0]["unreadable_clocks"] == 0


def test_a_value_a_strategy_cannot_handle_leaves_the_rest_of_the_table_processed(shop):
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD, last_ip="not-an-ip-garbage" if i == 2 else "10.1.2.3")
    policy = shop.policy(ANONYMIZE)
    plan = outcome(shop.run(policy, dry_run=True, now=NOW), "closed-anonymize")
    assert (plan.status, plan.touch, plan.remaining, not_done(plan)) == ("incomplete", 2, 1, {"refused": 1})
    assert adds_up(plan)
    out = outcome(shop.run(policy, now=NOW), "closed-anonymize")
    assert (out.status, out.touch, out.remaining, not_done(out)) == ("incomplete", 2, 1, {"refused": 1})
    assert adds_up(out) and out.error is None
    users = shop.rows("users")
    assert [u["anonymized_at"] is not None for u in users] == [True, False, True]
    assert users[1]["email"] == "user2@example.com"
    result = invoke(policy, "run")
    assert result.exit_code == 1
    assert "garbage" not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_a_stored_value_python_cannot_read_is_counted_never_shown(shop):
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
    bad = {"sqlite": "'not-a-date-garbage'", "postgresql": "'-infinity'"}.get(shop.engine.dialect.name, "'0000-00-00'")
    with shop.engine.begin() as c:
        if shop.engine.dialect.name in ("mysql", "mariadb"):
            # a zero date, which a permissive sql_mode lets an application write
            c.exec_driver_sql("SET SESSION sql_mode = ''")
        c.exec_driver_sql(f"UPDATE users SET birth_date = {bad} WHERE id = 2")
    policy = shop.policy(ANONYMIZE + """
        [[rules]]
        name = "logs-purge"
        table = "shop.logs"
        clock = "created_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0
        """)
    shop.insert("logs", dict(id=1, user_id=None, ip="10.1.2.3", created_at=OLD))
    result = invoke(policy, "run")
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "garbage" not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    rule, later = report["rules"]
    assert (rule["status"], rule["touch"], rule["not_done_total"]) == ("incomplete", 2, 1)
    assert rule["not_done"][0]["reason"] == "unreadable"
    # later rules still run
    assert later["status"] == "ok" and shop.ids("logs") == []
    with shop.engine.connect() as c:
        done = c.exec_driver_sql("SELECT id FROM users WHERE anonymized_at IS NOT NULL ORDER BY id").scalars()
        assert done.all() == [1, 3]


def test_a_tripped_guard_keeps_the_rows_not_done_in_remaining(shop):
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD, last_ip="not-an-ip-garbage" if i == 2 else "10.1.2.3")
    out = outcome(shop.run(shop.policy(ANONYMIZE.replace("max_fraction = 1.0", "max_rows = 1")), now=NOW),
                  "closed-anonymize")
    assert (out.status, out.touch, out.remaining) == ("guard_tripped", 0, 3) and adds_up(out)
    assert shop.count("users", shop.t("users").c.anonymized_at.is_not(None)) == 0


def test_mariadb_zero_date_clocks_do_not_fail_the_rule(mariadb_url, tmp_path):
    from tests.shopkit import Shop
    shop = Shop(mariadb_url, tmp_path)
    try:
        shop.insert("logs", dict(id=1, user_id=None, ip="10.1.2.3", created_at=OLD))
        with shop.engine.begin() as c:
            # what a permissive sql_mode lets an application store; PyMySQL hands these back as text
            c.exec_driver_sql("SET SESSION sql_mode = ''")
            c.exec_driver_sql("INSERT INTO logs (id, ip, created_at) VALUES "
                              "(2, '10.1.2.3', '0000-00-00 00:00:00'), (3, '10.1.2.3', '2019-00-10 00:00:00')")
        policy = shop.policy(LOGS_PURGE)
        plan = outcome(shop.run(policy, dry_run=True, now=NOW), "logs-purge")
        assert (plan.status, plan.due, plan.touch, plan.unreadable_clocks) == ("ok", 3, 3, 2)
        assert plan.oldest_clock is not None and plan.oldest_clock.year == 2020
        out = outcome(shop.run(policy, now=NOW), "logs-purge")
        assert (out.status, out.touch, out.unreadable_clocks) == ("ok", 3, 2) and shop.ids("logs") == []
    finally:
        shop.close()


def test_sqlite_days_and_times_that_do_not_exist_are_unreadable_clocks(sqlite_shop):
    """SQLite's date() keeps Feb 30 as written; Python cannot read it, nor hour 24."""
    shop = sqlite_shop
    with shop.engine.begin() as c:
        c.exec_driver_sql("INSERT INTO logs (id, ip, created_at) VALUES (1, '10.1.2.3', '2018-02-30 00:00:00'), "
                          "(2, '10.1.2.3', '2018-02-27 24:00:00'), (3, '10.1.2.3', '2018-02-28 23:59:59.999999'), "
                          "(4, '10.1.2.3', '2018-03-01')")
    policy = shop.policy(LOGS_PURGE)
    plan = outcome(shop.run(policy, dry_run=True, now=NOW), "logs-purge")
    assert (plan.status, plan.due, plan.touch, plan.unreadable_clocks) == ("ok", 4, 4, 2)
    # the last microsecond of a day is that day's, not rounded into the next
    assert plan.oldest_clock == datetime(2018, 2, 28, 23, 59, 59, 999999, tzinfo=plan.oldest_clock.tzinfo)
    out = outcome(shop.run(policy, now=NOW), "logs-purge")
    assert (out.status, out.touch) == ("ok", 4) and shop.ids("logs") == []
