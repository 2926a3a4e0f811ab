"""Partitioned tables on MariaDB (MySQL alike): one table to the job, whatever its partitions.

InnoDB's partitioned tables can have no foreign keys, and their primary key
must contain the partitioning column; holds reach their rows through a
``subject_path``.  A rule deletes and anonymizes them like any table's rows,
batch by batch over the two-column key, and ``check`` and reflection see one
table, never its partitions.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from retention import commands
from retention.schema import Catalog
from tests.shopkit import HASH_ENV, HOLDS, Shop, outcome, protected

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=timezone.utc)

POLICY = HOLDS + """
[[rules]]
name = "page-views-1y"
table = "shop.events"
clock = "happened_at"
after = "1y"
action = "delete"
where = { kind = "page" }
max_fraction = 1.0

[[rules]]
name = "login-ips-90d"
table = "shop.events"
clock = "happened_at"
after = "90d"
action = "anonymize"
where = { kind = "login" }
columns.ip = { strategy = "generalize", ipv4_prefix = 16 }
max_fraction = 1.0

[tables."shop.events"]
subject_path = ["user_id -> users.id"]
"""

EVENTS = """
CREATE TABLE events (
    id integer NOT NULL,
    happened_at datetime NOT NULL,
    user_id integer NOT NULL,
    kind varchar(10) NOT NULL,
    ip varchar(45),
    PRIMARY KEY (id, happened_at)
) ENGINE=InnoDB
PARTITION BY RANGE COLUMNS (happened_at) (
    PARTITION p2023 VALUES LESS THAN ('2024-01-01'),
    PARTITION p2024 VALUES LESS THAN ('2025-01-01'),
    PARTITION p2025 VALUES LESS THAN ('2026-01-01'),
    PARTITION pmax VALUES LESS THAN (MAXVALUE)
)
"""


@pytest.fixture(params=["mariadb", "mysql"])
def shop(request, mariadb_url, tmp_path):
    url = mariadb_url if request.param == "mariadb" else \
        make_url(mariadb_url).set(drivername="mysql+pymysql").render_as_string(hide_password=False)
    s = Shop(url, tmp_path)
    with s.engine.begin() as conn:
        conn.exec_driver_sql(EVENTS)
    s.user(1)
    s.user(2)
    s.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    rows = []
    for i, (when, user, kind) in enumerate([
            ("2023-03-01", 1, "page"), ("2023-03-02", 2, "page"), ("2024-07-01", 2, "page"),
            ("2025-06-01", 2, "page"), ("2025-12-31 23:59:59", 2, "page"), ("2026-06-01", 2, "page"),
            ("2023-05-05", 1, "login"), ("2024-02-02", 2, "login"), ("2026-01-10", 2, "login"),
            ("2026-06-10", 2, "login")], start=1):
        rows.append(f"({i}, '{when}', {user}, '{kind}', '10.{i}.3.4')")
    with s.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events (id, happened_at, user_id, kind, ip) VALUES " + ", ".join(rows))
    yield s
    s.close()


def _events(shop) -> dict[int, str]:
    with shop.engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT id, ip FROM events ORDER BY id").all())


def test_reflection_and_check_see_one_table(shop):
    engine = sa.create_engine(shop.url)
    try:
        keys = set(Catalog({"shop": engine}).tables)
    finally:
        engine.dispose()
    assert "shop.events" in keys and not any("p2023" in k or "#" in k for k in keys)
    result = commands.check(shop.policy(POLICY), env=HASH_ENV)
    assert result.rules == 2 and "shop.events" in result.tables


def test_delete_and_anonymize_a_range_partitioned_table(shop):
    policy = shop.policy(POLICY, settings="batch_size = 2")
    dry = shop.run(policy, dry_run=True, now=NOW)
    pages, logins = outcome(dry, "page-views-1y"), outcome(dry, "login-ips-90d")
    # due: page views before 2025-06-15 (1, 2, 3, 4 are before; 1 is held); logins before 2026-03-17
    assert (pages.due, pages.touch, protected(pages)) == (4, 3, {"hold:litigation": 1})
    assert (logins.due, logins.touch, protected(logins)) == (3, 2, {"hold:litigation": 1})
    assert len(_events(shop)) == 10

    report = shop.run(policy, now=NOW)
    assert report.exit_code == 0
    assert outcome(report, "page-views-1y").touch == 3 and outcome(report, "login-ips-90d").touch == 2
    events = _events(shop)
    assert sorted(events) == [1, 5, 6, 7, 8, 9, 10]          # across three partitions; the held row stays
    assert (events[7], events[8], events[9], events[10]) == ("10.7.3.4", "10.8.0.0", "10.9.0.0", "10.10.3.4")
    again = shop.run(policy, now=NOW)
    assert [o.touch for o in again.rules] == [0, 0]
    assert _events(shop) == events


def test_a_batch_range_over_a_composite_key_is_an_index_range(shop):
    # MySQL and MariaDB scan the whole table for a row-value comparison, (id, t) > (5, '...'):
    # every batch of a composite key did, and batches shrank to one row under the time target
    from types import SimpleNamespace

    from retention.dialects import impl_for
    from retention.execute.keys import _range

    with shop.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events (id, happened_at, user_id, kind, ip) SELECT seq, "
                             "'2024-03-01' + INTERVAL seq MINUTE, 2, 'page', NULL FROM seq_100_to_5000")
        conn.exec_driver_sql("ANALYZE TABLE events")
    events = sa.Table("events", sa.MetaData(), autoload_with=shop.engine)
    plan = SimpleNamespace(composite=True, pk_columns=tuple(events.primary_key.columns),
                           pk=sa.tuple_(*events.primary_key.columns), impl=impl_for(shop.engine))
    lo, hi = (2000, datetime(2024, 3, 2, 9, 20)), (2100, datetime(2024, 3, 2, 11, 0))
    query = sa.select(events.c.id).where(_range(plan, lo, hi))
    with shop.engine.connect() as conn:
        ids = sorted(conn.execute(query).scalars())
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        explained = conn.exec_driver_sql("EXPLAIN " + sql).mappings().all()
    assert ids == list(range(2001, 2101))
    assert [(e["type"], e["key"]) for e in explained] == [("range", "PRIMARY")]
