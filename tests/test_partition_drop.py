"""``partitions = "drop" | "detach"``: whole due partitions go in one statement, the rest row by row.

A real PostgreSQL table partitioned by month.  Only partitions whose bound
proves every row past the cutoff, and whose every row is due and protected by
nothing, are detached (and dropped); a row inserted or a hold placed between
the count and the lock keeps the partition; a failure leaves it attached.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from retention import commands, transactions
from retention.errors import ConfigErrors
from retention.privileges import MissingPrivileges
from tests.runkit import audit_rows
from tests.shopkit import HOLDS, outcome

NOW = datetime(2026, 6, 15, tzinfo=UTC)          # a 1y rule's cutoff: 2025-06-15

EVENTS = """
CREATE TABLE events (
    id integer NOT NULL,
    created_at timestamp NOT NULL,
    user_id integer REFERENCES users (id),
    kind text,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE TABLE events_2025_03 PARTITION OF events FOR VALUES FROM ('2025-03-01') TO ('2025-04-01');
CREATE TABLE events_2025_04 PARTITION OF events FOR VALUES FROM ('2025-04-01') TO ('2025-05-01');
CREATE TABLE events_2025_05 PARTITION OF events FOR VALUES FROM ('2025-05-01') TO ('2025-06-01');
CREATE TABLE events_2025_06 PARTITION OF events FOR VALUES FROM ('2025-06-01') TO ('2025-07-01');
CREATE TABLE events_2026_06 PARTITION OF events FOR VALUES FROM ('2026-06-01') TO ('2026-07-01');
"""

ROWS = [
    (1, "2025-03-02", 1), (2, "2025-03-10", 1), (3, "2025-03-20", 3),      # 2025_03: all due
    (4, "2025-04-05", 1), (5, "2025-04-06", 2),                            # 2025_04: user 2 may be held
    # 2025_05: empty, its whole range before the cutoff
    (6, "2025-06-05", 1), (7, "2025-06-20", 1),                            # 2025_06: the cutoff cuts it
    (8, "2026-06-10", 3),                                                  # this month
]


def rule(mode: str = "drop", extra: str = "") -> str:
    return f"""
    [[rules]]
    name = "events-purge"
    table = "shop.events"
    clock = "created_at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0

    [tables."shop.events"]
    partitions = "{mode}"
    """ + extra


def sql(shop, text: str, **params):
    with shop.engine.begin() as conn:
        result = conn.execute(sa.text(text), params)
        return result.all() if result.returns_rows else None


def partitions(shop) -> dict[str, bool]:
    """Tables named events_*, and whether each is still a partition."""
    return dict(sql(shop, "SELECT relname, relispartition FROM pg_class WHERE relname LIKE 'events\\_%' "
                          "AND relkind = 'r' ORDER BY relname"))


def ids(shop, table: str = "events") -> list[int]:
    return [r[0] for r in sql(shop, f"SELECT id FROM {table} ORDER BY id")]


@pytest.fixture
def events(pg_shop):
    with pg_shop.engine.begin() as conn:
        conn.exec_driver_sql(EVENTS)
    for uid in (1, 2, 3):
        pg_shop.user(uid)
    for id_, at, uid in ROWS:
        sql(pg_shop, "INSERT INTO events VALUES (:i, CAST(:at AS timestamp), :u, 'login')", i=id_, at=at, u=uid)
    return pg_shop


def hold(shop, id_: int, user_id: int) -> None:
    sql(shop, "INSERT INTO legal_holds (id, user_id) VALUES (:i, :u)", i=id_, u=user_id)


def taken(out) -> dict[str, tuple[str, int]]:
    return {p.partition: (p.status, p.rows) for p in out.partitions}


def test_the_dry_run_shows_the_partitions_a_run_would_drop_and_their_rows(events):
    hold(events, 1, 2)
    before = events.dump(), partitions(events)
    report = events.run(events.policy(rule() + HOLDS), dry_run=True, now=NOW)
    out = outcome(report, "events-purge")
    assert taken(out) == {"shop.events_2025_03": ("would drop", 3), "shop.events_2025_05": ("would drop", 0)}
    # the guard and touch count rows as before: every due, unprotected row, whichever way it goes
    assert (out.due, out.touch, out.protected_total) == (6, 5, 1)
    assert (events.dump(), partitions(events)) == before
    plan = commands.plan(events.policy(rule() + HOLDS), now=NOW)
    assert outcome(plan, "events-purge").to_dict()["partitions"][0] == {
        "partition": "shop.events_2025_03", "action": "drop", "rows": 3, "status": "would drop", "reason": ""}
    from retention.report.text import render_text
    assert "shop.events_2025_03: would drop (3 rows)" in render_text(plan)


def test_sql_shows_each_partitions_own_transaction(events):
    out = outcome(commands.plan(events.policy(rule("detach")), now=NOW, show_sql=True), "events-purge")
    shown = "\n".join(out.statements)
    assert "LOCK TABLE events_2025_03 IN EXCLUSIVE MODE;" in shown
    assert "ALTER TABLE events DETACH PARTITION events_2025_03;" in shown and "DROP TABLE" not in shown
    assert partitions(events)["events_2025_03"] is True


def test_a_run_drops_the_wholly_due_partitions_and_deletes_the_rest_row_by_row(events):
    hold(events, 1, 2)
    policy = events.policy(rule() + HOLDS)
    report = events.run(policy, now=NOW)
    out = outcome(report, "events-purge")
    assert out.status == "ok" and out.error is None
    assert taken(out) == {"shop.events_2025_03": ("dropped", 3), "shop.events_2025_05": ("dropped", 0)}
    assert out.touch == 5 and out.remaining == 0
    # the held row keeps its partition: the row beside it went row by row, as did the due half of June
    assert partitions(events) == {"events_2025_04": True, "events_2025_06": True, "events_2026_06": True}
    assert ids(events) == [5, 7, 8]
    # the metrics count a dropped partition's rows as deleted rows
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest
    from retention.metrics import from_report, registry
    text = generate_latest(registry(from_report(report, 1.0), last_success=None)).decode()
    deleted = [s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "retention_rows_total" and s.labels["action"] == "delete"]
    assert deleted == [5]
    again = outcome(events.run(policy, now=NOW), "events-purge")
    assert (again.touch, again.partitions) == (0, [])


def test_detach_leaves_the_partition_as_a_table_of_its_own(events):
    out = outcome(events.run(events.policy(rule("detach")), now=NOW), "events-purge")
    assert taken(out) == {"shop.events_2025_03": ("detached", 3), "shop.events_2025_04": ("detached", 2),
                          "shop.events_2025_05": ("detached", 0)}
    assert "left as the table shop.events_2025_03" in out.partitions[0].reason
    assert partitions(events) == {"events_2025_03": False, "events_2025_04": False, "events_2025_05": False,
                                  "events_2025_06": True, "events_2026_06": True}
    assert ids(events, "events_2025_03") == [1, 2, 3] and ids(events) == [7, 8]


def test_the_audit_log_records_each_partition_without_row_values(events):
    policy = events.policy(rule())
    events.run(policy, now=NOW)
    rows = audit_rows(f"sqlite:///{events.tmp_path / 'state.db'}")
    kinds = [r["kind"] for r in rows]
    assert kinds.count("partition-intent") == kinds.count("partition-committed") == 3
    committed = [r["body"] for r in rows if r["kind"] == "partition-committed"]
    assert '"partition":"shop.events_2025_03"' in committed[0] and '"rows":3' in committed[0]
    assert '"status":"dropped"' in committed[0] and "login" not in " ".join(committed)
    ended = next(r["body"] for r in rows if r["kind"] == "rule-ended")
    assert '"shop.events_2025_03":"dropped (3 rows)"' in ended


def test_a_row_inserted_between_the_count_and_the_lock_keeps_the_partition(events):
    def app_inserts(conn, plan, partition):
        if partition.name == "events_2025_03":
            sql(events, "INSERT INTO events VALUES (9, '2025-03-25', 3, 'late')")

    with transactions.observing("partition.locking", app_inserts):
        out = outcome(events.run(events.policy(rule()), now=NOW), "events-purge")
    kept = next(p for p in out.partitions if p.partition == "shop.events_2025_03")
    assert kept.status == "kept" and "changed since it was counted" in kept.reason
    assert partitions(events)["events_2025_03"] is True
    # the run does what it counted (6 rows), no more, whichever of them the batches reached
    assert out.status == "ok" and out.touch == 6
    assert len(ids(events, "events_2025_03")) == 1


def test_a_hold_placed_between_the_count_and_the_lock_keeps_the_partition_and_its_held_rows(events):
    def lawyer_holds_user_3(conn, plan, partition):
        if partition.name == "events_2025_03":
            hold(events, 1, 3)

    with transactions.observing("partition.locking", lawyer_holds_user_3):
        out = outcome(events.run(events.policy(rule() + HOLDS), now=NOW), "events-purge")
    kept = next(p for p in out.partitions if p.partition == "shop.events_2025_03")
    assert kept.status == "kept"
    assert partitions(events)["events_2025_03"] is True
    # the held row stays; its neighbours went row by row
    assert ids(events, "events_2025_03") == [3]
    assert out.status == "ok"


class Crash(BaseException):
    """The process dies mid-transaction (as under SIGKILL): nothing after this point runs."""


def test_a_crash_after_the_detach_leaves_the_partition_attached_with_every_row(events):
    def crash(conn, plan, partition):
        raise Crash()

    with transactions.observing("partition.detached", crash), pytest.raises(Crash):
        events.run(events.policy(rule()), now=NOW)
    assert partitions(events)["events_2025_03"] is True
    assert ids(events, "events_2025_03") == [1, 2, 3]


def test_a_failing_detach_rolls_back_and_the_rows_go_row_by_row(events):
    def fail(conn, plan, partition):
        if partition.name == "events_2025_03":
            conn.exec_driver_sql("SELECT 1 / 0")

    with transactions.observing("partition.detached", fail):
        out = outcome(events.run(events.policy(rule()), now=NOW), "events-purge")
    kept = next(p for p in out.partitions if p.partition == "shop.events_2025_03")
    assert kept.status == "kept" and "DivisionByZero" in kept.reason
    assert out.status == "ok" and out.touch == 6
    assert partitions(events)["events_2025_03"] is True and ids(events, "events_2025_03") == []


NOTES = """
CREATE TABLE event_notes (
    id integer PRIMARY KEY,
    event_id integer NOT NULL,
    event_at timestamp NOT NULL,
    FOREIGN KEY (event_id, event_at) REFERENCES events (id, created_at)
);
INSERT INTO event_notes VALUES (1, 4, '2025-04-05');
"""


def test_a_partition_a_child_row_references_goes_row_by_row_with_its_cascade(events):
    with events.engine.begin() as conn:
        conn.exec_driver_sql(NOTES)
    out = outcome(events.run(events.policy(rule(extra='[tables."shop.event_notes"]\non_parent_delete = "delete"\n')),
                             now=NOW), "events-purge")
    assert out.status == "ok"
    assert taken(out) == {"shop.events_2025_03": ("dropped", 3), "shop.events_2025_05": ("dropped", 0)}
    assert partitions(events)["events_2025_04"] is True
    assert ids(events) == [7, 8] and ids(events, "event_notes") == []
    assert {c.table: c.rows for c in out.cascades} == {"shop.event_notes": 1}


def test_postgresql_refuses_to_detach_a_referenced_partition(events):
    with events.engine.begin() as conn:
        conn.exec_driver_sql(NOTES)
    with pytest.raises(sa.exc.IntegrityError, match="violates foreign key"):
        sql(events, "ALTER TABLE events DETACH PARTITION events_2025_04")


def test_partitions_of_future_data_are_never_taken(events):
    sql(events, "CREATE TABLE events_other PARTITION OF events DEFAULT")
    sql(events, "INSERT INTO events VALUES (10, '2024-01-01', 1, 'old')")     # in the default partition
    sql(events, "CREATE TABLE events_2026_07 PARTITION OF events FOR VALUES FROM ('2026-07-01') TO ('2026-08-01')")
    sql(events, "DELETE FROM events WHERE id = 7")      # June 2025 now holds only a due row
    out = outcome(events.run(events.policy(rule()), dry_run=True, now=NOW), "events-purge")
    # the default partition, next month's (empty), and June 2025's (all due, but its range reaches
    # past the cutoff: a late row of June 20 could still arrive) stay
    assert set(taken(out)) == {"shop.events_2025_03", "shop.events_2025_04", "shop.events_2025_05"}
    assert out.touch == 7


def test_a_login_that_does_not_own_the_table_is_told_how_and_the_run_deletes_row_by_row(events):
    sql(events, "DROP ROLE IF EXISTS retention_job")
    sql(events, "CREATE ROLE retention_job LOGIN; GRANT ALL ON ALL TABLES IN SCHEMA public TO retention_job")
    url = sa.engine.make_url(events.url).set(username="retention_job")
    try:
        policy = events.policy(rule().replace("[[rules]]", "[[rules]]"))
        text = open(policy).read().replace(events.url, url.render_as_string(hide_password=False))
        open(policy, "w").write(text)
        with pytest.raises(MissingPrivileges) as e:
            commands.check(policy, env={})
        owner = sql(events, "SELECT current_user")[0][0]
        assert f'GRANT {owner} TO retention_job;' in str(e.value)
        assert "partitions" in str(e.value)
        out = outcome(events.run(policy, now=NOW), "events-purge")
        assert out.status == "ok" and out.touch == 6
        assert all(p.status == "kept" and "InsufficientPrivilege" in p.reason for p in out.partitions)
        assert set(partitions(events)) == {"events_2025_03", "events_2025_04", "events_2025_05",
                                           "events_2025_06", "events_2026_06"}
        assert ids(events) == [7, 8]
    finally:
        events.engine.dispose()
        sql(events, "REASSIGN OWNED BY retention_job TO CURRENT_USER; DROP OWNED BY retention_job; "
                    "DROP ROLE retention_job")


def test_the_readme_example_drops_the_due_months(events):
    import re
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, flags=re.S) if 'partitions = "drop"' in b]
    out = outcome(events.run(events.policy(example), now=NOW), "events-purge")
    assert out.status == "ok" and [p.status for p in out.partitions] == ["dropped"] * 3
    assert ids(events) == [7, 8]


def test_partitions_on_a_table_that_is_not_partitioned_is_refused_naming_the_key(pg_shop):
    policy = pg_shop.policy("""
    [tables."shop.logs"]
    partitions = "drop"
    """)
    with pytest.raises(ConfigErrors) as e:
        commands.plan(policy, now=NOW)
    assert "[tables.\"shop.logs\"]" in str(e.value) and "partitions" in str(e.value)
    assert "not one" in str(e.value)


def test_partitions_on_sqlite_is_refused_naming_file_table_and_key(sqlite_shop):
    policy = sqlite_shop.policy("""
    [tables."shop.logs"]
    partitions = "detach"
    """)
    with pytest.raises(ConfigErrors) as e:
        commands.plan(policy, now=NOW)
    message = str(e.value)
    assert policy in message and "[tables.\"shop.logs\"]" in message and "partitions" in message
    assert "PostgreSQL" in message


def test_a_simulation_takes_the_partitions_and_rolls_everything_back(events):
    before = events.dump(), partitions(events)
    report = events.run(events.policy(rule()), now=NOW, simulate=True)
    out = outcome(report, "events-purge")
    assert report.simulated and taken(out)["shop.events_2025_03"] == ("dropped", 3) and out.touch == 6
    assert (events.dump(), partitions(events)) == before


def test_a_tripped_guard_takes_no_partition(events):
    policy = events.policy(rule().replace("max_fraction = 1.0", "max_fraction = 1.0\nmax_rows = 2"))
    out = outcome(events.run(policy, now=NOW), "events-purge")
    assert out.status == "guard_tripped" and out.partitions == []
    assert len(partitions(events)) == 5 and len(ids(events)) == 8


def test_partitions_on_mariadb_is_refused_naming_the_table_and_key(mariadb_url, tmp_path):
    from tests.shopkit import Shop
    shop = Shop(mariadb_url, tmp_path)
    try:
        policy = shop.policy("""
        [tables."shop.logs"]
        partitions = "drop"
        """)
        with pytest.raises(ConfigErrors) as e:
            commands.plan(policy, now=NOW)
        assert "[tables.\"shop.logs\"]" in str(e.value) and "key 'partitions'" in str(e.value)
        assert "is on mariadb" in str(e.value) and policy in str(e.value)
    finally:
        shop.close()
