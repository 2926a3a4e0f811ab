"""Tables with multi-column primary keys, and multi-column foreign keys, on every engine.

Keyset batches walk the key tuple in order (``(a, b) > (:a, :b)``, never
OFFSET), so rows sharing the first key column are neither skipped nor done
twice; a multi-column foreign key cascades (delete, detach) or blocks like a
single-column one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from retention.errors import ConfigError
from tests.shopkit import HOLDS, cascades, outcome, protected

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OLD, RECENT = datetime(2020, 1, 1), datetime(2026, 5, 30)


def composite_schema(shop, *, with_rowid: bool = True) -> sa.MetaData:
    """``with_rowid=False``: on SQLite a WITHOUT ROWID table, whose batches walk its key (over a rowid
    table they walk rowid ranges, as PostgreSQL's walk pages)."""
    md = sa.MetaData()
    sa.Table("shipments", md,
             sa.Column("region", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")),
             sa.Column("sent_at", sa.DateTime, nullable=False),
             sa.Column("recipient", sa.String(80)),
             **({} if with_rowid else {"sqlite_with_rowid": False}))
    sa.Table("parcels", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("shipment_region", sa.Integer),
             sa.Column("shipment_id", sa.Integer),
             sa.Column("weight", sa.Integer),
             sa.ForeignKeyConstraint(["shipment_region", "shipment_id"], ["shipments.region", "shipments.id"]))
    sa.Table("users", md, autoload_with=shop.engine)
    md.create_all(shop.engine, tables=[md.tables["shipments"], md.tables["parcels"]])
    return md


def fill(shop, md, rows: list[tuple[int, int, datetime, int | None]]) -> None:
    with shop.engine.begin() as conn:
        conn.execute(md.tables["shipments"].insert(), [
            dict(region=r, id=i, sent_at=at, user_id=u, recipient=f"r{r}-{i}") for r, i, at, u in rows])


def keys(shop, md, table: str = "shipments") -> list[tuple]:
    t = md.tables[table]
    with shop.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(*t.primary_key.columns).order_by(*t.primary_key.columns))]


SHIPMENTS_PURGE = """
[[rules]]
name = "shipments-purge"
table = "shop.shipments"
clock = "sent_at"
after = "1y"
action = "delete"
max_fraction = 1.0
"""


def test_batches_walk_the_key_tuple_without_skipping_rows_that_share_a_first_column(shop):
    md = composite_schema(shop, with_rowid=False)
    # many rows per region: a batch boundary falls inside a region, where comparing the
    # first column alone would skip or repeat rows
    rows = [(r, i, OLD if (r + i) % 3 else RECENT, None) for r in (1, 2, 3) for i in range(1, 8)]
    fill(shop, md, rows)
    # (batches of exactly 2: time never shrinks them here)
    policy = shop.policy(SHIPMENTS_PURGE, settings="batch_size = 2\nmax_batch_seconds = 1000")
    report = shop.run(policy, now=NOW)
    out = outcome(report, "shipments-purge")
    due = [(r, i) for r, i, at, _u in rows if at == OLD]
    assert out.status == "ok" and out.touch == len(due) and out.batches == (len(due) + 1) // 2
    assert keys(shop, md) == sorted((r, i) for r, i, at, _u in rows if at == RECENT)


@pytest.mark.parametrize("with_rowid", [True, False])
def test_the_batch_statements_compare_row_values_and_never_use_offset(shop, with_rowid):
    md = composite_schema(shop, with_rowid=with_rowid)
    fill(shop, md, [(1, 1, OLD, None)])
    report = shop.run(shop.policy(SHIPMENTS_PURGE), dry_run=True, now=NOW, show_sql=True)
    sql = "\n".join(outcome(report, "shipments-purge").statements)
    assert "OFFSET" not in sql.upper()
    if shop.engine.dialect.name == "sqlite" and with_rowid:
        # batches walk rowid ranges there: no key is compared at all
        assert "shipments.rowid >=" in sql and "(shipments.region, shipments.id) >" not in sql
        return
    if shop.engine.dialect.name in ("mysql", "mariadb"):
        # no index serves a row-value comparison there: the bound is spelled out column by column
        assert "(shipments.region, shipments.id) <" not in sql and "(shipments.region, shipments.id) >" not in sql
        assert "shipments.region <=" in sql and "shipments.id <=" in sql
    elif shop.engine.dialect.name == "postgresql":
        # batches walk the table's pages there, whatever the key: no key is compared at all
        assert "shipments.ctid >=" in sql and "(shipments.region, shipments.id) >" not in sql
    else:
        assert "(shipments.region, shipments.id) >" in sql or "(shipments.region, shipments.id) <=" in sql


def test_anonymize_in_python_updates_each_row_by_its_whole_key(shop):
    md = composite_schema(shop)
    rows = [(r, i, OLD, None) for r in (1, 2) for i in (1, 2, 3)] + [(3, 1, RECENT, None)]
    fill(shop, md, rows)
    policy = shop.policy("""
    [[rules]]
    name = "shipments-anon"
    table = "shop.shipments"
    clock = "sent_at"
    after = "1y"
    action = "anonymize"
    max_fraction = 1.0
    columns = { recipient = { strategy = "hash", length = 12 } }
    """, settings="batch_size = 4")
    report = shop.run(policy, now=NOW, force_python=True)
    assert outcome(report, "shipments-anon").touch == 6
    with shop.engine.connect() as conn:
        got = dict(((r, i), v) for r, i, v in conn.execute(sa.text("SELECT region, id, recipient FROM shipments")))
    assert got[(3, 1)] == "r3-1"
    hashed = [v for k, v in got.items() if k != (3, 1)]
    # every row got its own value's hash: an update keyed by one column would have spread one
    assert all(v.startswith("h_") for v in hashed) and len(set(hashed)) == 6
    assert outcome(shop.run(policy, now=NOW, force_python=True), "shipments-anon").touch == 0


def test_a_multi_column_foreign_key_cascades_a_delete_and_counts_each_row_once(shop):
    md = composite_schema(shop)
    fill(shop, md, [(1, 1, OLD, None), (1, 2, OLD, None), (2, 1, RECENT, None)])
    with shop.engine.begin() as conn:
        conn.execute(md.tables["parcels"].insert(), [
            dict(id=1, shipment_region=1, shipment_id=1, weight=1),
            dict(id=2, shipment_region=1, shipment_id=1, weight=2),
            # same id, other region: reached by neither column alone
            dict(id=3, shipment_region=2, shipment_id=1, weight=3),
            dict(id=4, shipment_region=1, shipment_id=2, weight=4)])
    policy = shop.policy(SHIPMENTS_PURGE + """
    [tables."shop.parcels"]
    on_parent_delete = "delete"
    """)
    plan = outcome(shop.run(policy, dry_run=True, now=NOW, show_sql=True), "shipments-purge")
    assert plan.touch == 2 and cascades(plan) == {"shop.parcels:delete": 3}
    assert any(s.startswith("DELETE FROM parcels") for s in plan.statements)
    run = outcome(shop.run(policy, now=NOW), "shipments-purge")
    assert run.touch == 2 and cascades(run) == {"shop.parcels:delete": 3}
    assert keys(shop, md) == [(2, 1)] and keys(shop, md, "parcels") == [(3,)]


def test_a_multi_column_foreign_key_detaches_by_setting_all_its_columns_null(shop):
    md = composite_schema(shop)
    fill(shop, md, [(1, 1, OLD, None), (2, 1, RECENT, None)])
    with shop.engine.begin() as conn:
        conn.execute(md.tables["parcels"].insert(), [
            dict(id=1, shipment_region=1, shipment_id=1, weight=1),
            dict(id=2, shipment_region=2, shipment_id=1, weight=2)])
    policy = shop.policy(SHIPMENTS_PURGE + """
    [tables."shop.parcels"]
    on_parent_delete = { shipment_id = "detach" }
    """)
    out = outcome(shop.run(policy, now=NOW), "shipments-purge")
    assert out.touch == 1 and cascades(out) == {"shop.parcels:detach": 1}
    with shop.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT id, shipment_region, shipment_id FROM parcels ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, None, None), (2, 2, 1)]


def test_a_multi_column_foreign_key_blocks_its_parent_by_default(shop):
    md = composite_schema(shop)
    fill(shop, md, [(1, 1, OLD, None), (1, 2, OLD, None)])
    with shop.engine.begin() as conn:
        conn.execute(md.tables["parcels"].insert(), [dict(id=1, shipment_region=1, shipment_id=2, weight=1)])
    out = outcome(shop.run(shop.policy(SHIPMENTS_PURGE), now=NOW), "shipments-purge")
    assert protected(out) == {"children:shop.parcels": 1} and out.touch == 1
    assert keys(shop, md) == [(1, 2)]


def test_detaching_a_multi_column_key_with_a_not_null_column_is_refused(shop):
    md = sa.MetaData()
    sa.Table("shipments", md,
             sa.Column("region", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("sent_at", sa.DateTime, nullable=False))
    sa.Table("parcels", md,
             sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
             sa.Column("shipment_region", sa.Integer, nullable=False),
             sa.Column("shipment_id", sa.Integer),
             sa.ForeignKeyConstraint(["shipment_region", "shipment_id"], ["shipments.region", "shipments.id"]))
    md.create_all(shop.engine)
    policy = shop.policy(SHIPMENTS_PURGE + """
    [tables."shop.parcels"]
    on_parent_delete = "detach"
    """)
    with pytest.raises(ConfigError) as e:
        shop.run(policy, dry_run=True, now=NOW)
    assert "NOT NULL" in str(e.value) and "on_parent_delete" in str(e.value)


def test_a_hold_protects_rows_of_a_composite_key_table_and_their_cascade(shop):
    md = composite_schema(shop)
    for uid in (1, 2):
        shop.user(uid)
    shop.insert("legal_holds", dict(id=1, user_id=1, released_at=None))
    fill(shop, md, [(1, 1, OLD, 1), (1, 2, OLD, 2)])
    with shop.engine.begin() as conn:
        conn.execute(md.tables["parcels"].insert(), [
            dict(id=1, shipment_region=1, shipment_id=1, weight=1),
            dict(id=2, shipment_region=1, shipment_id=2, weight=1)])
    policy = shop.policy(HOLDS + SHIPMENTS_PURGE + """
    [tables."shop.parcels"]
    on_parent_delete = "delete"
    """)
    out = outcome(shop.run(policy, now=NOW), "shipments-purge")
    assert protected(out) == {"hold:litigation": 1} and out.touch == 1
    assert keys(shop, md) == [(1, 1)] and keys(shop, md, "parcels") == [(1,)]
    assert shop.dangling() == []


def test_a_clock_follows_a_multi_column_foreign_key(shop):
    md = composite_schema(shop)
    fill(shop, md, [(1, 1, OLD, None), (2, 1, RECENT, None)])
    with shop.engine.begin() as conn:
        conn.execute(md.tables["parcels"].insert(), [
            dict(id=1, shipment_region=1, shipment_id=1, weight=1),
            dict(id=2, shipment_region=2, shipment_id=1, weight=2)])
    policy = shop.policy("""
    [[rules]]
    name = "parcels-purge"
    table = "shop.parcels"
    clock = "shipment.sent_at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0
    """)
    assert outcome(shop.run(policy, now=NOW), "parcels-purge").touch == 1
    assert keys(shop, md, "parcels") == [(2,)]


def test_a_batch_of_composite_keys_stays_within_the_engines_parameter_limit(pg_shop):
    """Each locked key binds one parameter per column: 22,000 three-column keys would be 66,000,
    beyond the 65,535 parameters a PostgreSQL statement can carry."""
    n = 22_000
    with pg_shop.engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE readings (site integer, sensor integer, seq integer, "
                             "taken_at timestamp NOT NULL, PRIMARY KEY (site, sensor, seq))")
        conn.exec_driver_sql("CREATE TABLE flags (id integer PRIMARY KEY, site integer, sensor integer, seq integer, "
                             "FOREIGN KEY (site, sensor, seq) REFERENCES readings)")
        conn.exec_driver_sql(f"INSERT INTO readings SELECT mod(i, 5), mod(i, 11), i, '2020-01-01' FROM generate_series(1, {n}) i")
        conn.exec_driver_sql("INSERT INTO flags VALUES (1, 1, 1, 1)")
    policy = pg_shop.policy("""
    [[rules]]
    name = "readings-purge"
    table = "shop.readings"
    clock = "taken_at"
    after = "1y"
    action = "delete"
    max_fraction = 1.0

    [tables."shop.flags"]
    on_parent_delete = "delete"
    """, settings="batch_size = 30000")
    out = outcome(pg_shop.run(policy, now=NOW), "readings-purge")
    assert out.status == "ok", out.error
    assert out.touch == n and cascades(out) == {"shop.flags:delete": 1}
