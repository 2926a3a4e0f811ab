"""Triggers and rules that change what a statement does.

A BEFORE trigger that returns NULL (PostgreSQL) or ``RAISE(IGNORE)`` (SQLite)
cancels the delete or update of its row; a PostgreSQL ``DO INSTEAD`` rule turns
a delete into a soft delete.  The database then reports fewer rows changed than
the batch selected: the run counts the difference under ``not_done`` (part of
``remaining``), the rule is ``incomplete`` (exit 1), and the report never says a
row is gone that is still there.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention.cli import cli
from tests.shopkit import HASH_ENV, LOGS_PURGE, cascades, outcome

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)
OLD = datetime(2020, 1, 1)


def cancel(shop, table: str, event: str, ids: tuple[int, ...]) -> None:
    """A trigger that silently cancels ``event`` (DELETE or UPDATE) on the rows ``ids``."""
    listed = ", ".join(str(i) for i in ids)
    if shop.engine.dialect.name in ("mysql", "mariadb"):
        if event == "DELETE":
            pytest.skip("MariaDB/MySQL cannot cancel a row's delete and let the statement go on: a BEFORE "
                        "DELETE trigger can only SIGNAL, which fails the whole statement (the batch rolls back)")
        # no way to skip the row either, but a BEFORE UPDATE trigger can put every value back:
        # the row is matched yet unchanged, which the job must not count as done
        back = "; ".join(f"SET NEW.`{c.name}` = OLD.`{c.name}`" for c in shop.t(table).columns)
        with shop.engine.begin() as c:
            c.exec_driver_sql(f"CREATE TRIGGER keep_{table} BEFORE UPDATE ON {table} FOR EACH ROW "
                              f"BEGIN IF OLD.id IN ({listed}) THEN {back}; END IF; END")
        return
    with shop.engine.begin() as c:
        if shop.engine.dialect.name == "sqlite":
            c.exec_driver_sql(f"CREATE TRIGGER keep_{table} BEFORE {event} ON {table} "
                              f"WHEN OLD.id IN ({listed}) BEGIN SELECT RAISE(IGNORE); END")
        else:
            keep = "OLD" if event == "DELETE" else "NEW"
            c.exec_driver_sql(f"CREATE FUNCTION keep_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ "
                              f"BEGIN IF OLD.id IN ({listed}) THEN RETURN NULL; END IF; RETURN {keep}; END $$")
            c.exec_driver_sql(f"CREATE TRIGGER keep_{table} BEFORE {event} ON {table} "
                              f"FOR EACH ROW EXECUTE FUNCTION keep_{table}()")


def adds_up(out) -> bool:
    return out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def not_done(out) -> dict[str, int]:
    return {n.reason: n.rows for n in out.not_done}


def logs(shop, n: int = 4) -> None:
    shop.insert("logs", *[dict(id=i, user_id=None, ip="10.1.2.3", created_at=OLD) for i in range(1, n + 1)])


def test_a_cancelled_delete_is_reported_not_done_and_the_batches_move_on(shop):
    logs(shop, 5)
    cancel(shop, "logs", "DELETE", (2, 4))
    policy = shop.policy(LOGS_PURGE, settings="batch_size = 2")
    report = shop.run(policy, now=NOW)
    out = outcome(report, "logs-purge")
    assert shop.ids("logs") == [2, 4]
    assert (out.status, out.touch, out.remaining, not_done(out)) == ("incomplete", 3, 2, {"cancelled": 2})
    assert adds_up(out) and report.exit_code == 1
    # the next run meets the same trigger, says so again and ends (no endless loop over the kept rows)
    again = outcome(shop.run(policy, now=NOW), "logs-purge")
    assert (again.status, again.touch, not_done(again)) == ("incomplete", 0, {"cancelled": 2})


def test_a_cancelled_parent_keeps_its_cascaded_children(shop):
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
        shop.insert("addresses", dict(id=i, user_id=i, line1="street"))
    cancel(shop, "users", "DELETE", (2,))
    policy = shop.policy("""
        [[rules]]
        name = "closed-users"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0

        [tables."shop.addresses"]
        on_parent_delete = "delete"
        """)
    out = outcome(shop.run(policy, now=NOW), "closed-users")
    # user 2 stays, and so does its address: nothing is left half done
    assert shop.ids("users") == [2] and shop.ids("addresses") == [2]
    assert (out.status, out.touch, not_done(out)) == ("incomplete", 2, {"cancelled": 1})
    assert cascades(out) == {"shop.addresses:delete": 2} and adds_up(out)
    assert shop.dangling() == []


def test_a_cancelled_restrict_is_reported_not_done(shop):
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
    cancel(shop, "users", "UPDATE", (3,))
    out = outcome(shop.run(shop.policy("""
        [[rules]]
        name = "closed-restrict"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "restrict"
        max_fraction = 1.0
        """), now=NOW), "closed-restrict")
    assert [u["restricted_at"] is not None for u in shop.rows("users")] == [True, True, False]
    assert (out.status, out.touch, not_done(out)) == ("incomplete", 2, {"cancelled": 1}) and adds_up(out)


def test_a_cancelled_anonymization_is_reported_not_done_on_both_paths(shop):
    for i in (1, 2, 3):
        shop.user(i, status="closed", closed_at=OLD)
    cancel(shop, "users", "UPDATE", (1,))
    policy = shop.policy("""
        [[rules]]
        name = "closed-anonymize"
        table = "shop.users"
        clock = "closed_at"
        after = "1d"
        action = "anonymize"
        max_fraction = 1.0
        columns.name = { strategy = "constant", value = "deleted user" }
        mark = "anonymized_at"
        """)
    for force_python in (False, True):
        out = outcome(shop.run(policy, now=NOW, force_python=force_python), "closed-anonymize")
        assert (out.status, not_done(out)) == ("incomplete", {"cancelled": 1}), force_python
        assert adds_up(out)
    assert [u["name"] for u in shop.rows("users")] == ["User 1", "deleted user", "deleted user"]


def test_the_cli_exits_1_and_the_json_report_says_why(shop):
    logs(shop, 2)
    cancel(shop, "logs", "DELETE", (1,))
    result = CliRunner().invoke(cli, ["--config", shop.policy(LOGS_PURGE), "run", "--format", "json",
                                      "--now", NOW.isoformat()], env=HASH_ENV)
    assert result.exit_code == 1, result.output
    import json
    rule = json.loads(result.stdout)["rules"][0]
    assert rule["status"] == "incomplete" and rule["not_done_total"] == 1 and rule["remaining"] == 1
    assert rule["not_done"][0]["reason"] == "cancelled" and "trigger" in rule["not_done"][0]["detail"]
    for fmt in ("text", "markdown"):
        shown = CliRunner().invoke(cli, ["--config", shop.policy(LOGS_PURGE), "run", "--format", fmt,
                                         "--now", NOW.isoformat()], env=HASH_ENV)
        assert shown.exit_code == 1 and "INCOMPLETE" in shown.stdout, shown.stdout
        assert "not done" in shown.stdout and "cancelled 1" in shown.stdout, shown.stdout


def test_pg_soft_delete_rule_reports_every_row_not_done(pg_shop):
    shop = pg_shop
    with shop.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE logs ADD COLUMN deleted_at timestamp")
        c.exec_driver_sql("CREATE RULE soft_delete AS ON DELETE TO logs DO INSTEAD "
                          "UPDATE logs SET deleted_at = now() WHERE id = OLD.id")
    logs(shop, 3)
    report = shop.run(shop.policy(LOGS_PURGE), now=NOW)
    out = outcome(report, "logs-purge")
    assert shop.ids("logs") == [1, 2, 3]
    assert (out.status, out.touch, not_done(out)) == ("incomplete", 0, {"cancelled": 3})
    assert adds_up(out) and report.exit_code == 1


def test_pg_soft_delete_that_takes_rows_out_of_the_rule_is_reported_as_changed(pg_shop):
    shop = pg_shop
    with shop.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE logs ADD COLUMN deleted_at timestamp")
        c.exec_driver_sql("CREATE RULE soft_delete AS ON DELETE TO logs DO INSTEAD "
                          "UPDATE logs SET deleted_at = now() WHERE id = OLD.id")
    logs(shop, 3)
    out = outcome(shop.run(shop.policy(LOGS_PURGE.replace(
        'action = "delete"', 'action = "delete"\nwhere = { deleted_at = { is_null = true } }')), now=NOW),
        "logs-purge")
    # still there, though no longer matching the rule: not done all the same, never "touched"
    assert shop.ids("logs") == [1, 2, 3]
    assert (out.status, out.touch, not_done(out)) == ("incomplete", 0, {"changed": 3}) and adds_up(out)


def test_without_triggers_the_common_path_reads_nothing_more(shop):
    logs(shop, 3)
    statements = []

    def record(conn, cursor, statement, *_):
        statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", record)
    try:
        out = outcome(shop.run(shop.policy(LOGS_PURGE), now=NOW), "logs-purge")
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", record)
    assert (out.status, out.touch, out.not_done) == ("ok", 3, [])
    # (the job's own state store, a database of its own, is not the application's: leave it out)
    deletes = [i for i, s in enumerate(statements) if s.lstrip().upper().startswith("DELETE") and "retention_" not in s]
    assert len(deletes) == 1
    # the batch's delete is the last statement against the logs table: no look again
    assert not any("logs" in s for s in statements[deletes[0] + 1:])


def test_mariadb_a_trigger_refusing_a_delete_fails_the_rule_and_keeps_its_batch_whole(mariadb_url, tmp_path):
    # what MariaDB has in place of a silent cancel: SIGNAL fails the statement, so the
    # batch rolls back whole, the batches before it stay done and the message is never shown
    from tests.shopkit import Shop
    shop = Shop(mariadb_url, tmp_path)
    try:
        logs(shop, 5)
        with shop.engine.begin() as c:
            c.exec_driver_sql("CREATE TRIGGER keep_logs BEFORE DELETE ON logs FOR EACH ROW BEGIN "
                              "IF OLD.id = 4 THEN SIGNAL SQLSTATE '45000' "
                              "SET MESSAGE_TEXT = 'row of secret@example.com is kept'; END IF; END")
        report = shop.run(shop.policy(LOGS_PURGE, settings="batch_size = 2"), now=NOW)
        out = outcome(report, "logs-purge")
        assert shop.ids("logs") == [3, 4, 5]
        assert (out.status, out.touch, report.exit_code) == ("failed", 2, 1)
        assert "secret" not in out.error and "trigger" in out.error
    finally:
        shop.close()
