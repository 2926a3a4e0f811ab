"""Clock values compared at the right instant: stored text timestamps on SQLite, time zones
on PostgreSQL, sub-day durations across a DST change, and moments past the calendar's ends.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from retention import commands
from retention.cli import cli
from retention.errors import ConfigError
from tests.shopkit import FLOOR_ORDERS, HASH_ENV, LOGS_PURGE, Shop, outcome

UTC = timezone.utc
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def test_sqlite_timestamps_with_an_offset_are_refused_before_a_floor_can_release_early(tmp_path):
    # SQLite compares timestamps as text: '2023-06-15 10:00:00-05:00' (15:00 UTC) sorts before the
    # cutoff '2023-06-15 13:00:00.000000', so the floor would release the order hours early
    shop = Shop(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    shop.user(1)
    with shop.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO orders (id, user_id, completed_at, total) "
                             "VALUES (1, 1, '2023-06-15 10:00:00-05:00', 1)")
    before = shop.dump()
    with pytest.raises(ConfigError) as e:
        shop.run(shop.policy(FLOOR_ORDERS), now=datetime(2026, 6, 15, 13, 0, tzinfo=UTC))
    message = str(e.value)
    assert "floor 'ecommerce-law-3y'" in message and "rule 'orders-purge'" in message
    assert "key 'clock'" in message and "orders.completed_at holds 1 value" in message
    assert "10:00:00-05:00" not in message                       # the value itself is not shown
    assert shop.dump() == before
    shop.close()


def test_sqlite_iso_t_separator_timestamps_are_refused_not_left_undue(tmp_path):
    # '2026-06-14T10:00:00' sorts after '2026-06-14 12:00:00.000000' ('T' > ' '): never due on its day
    shop = Shop(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    with shop.engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO logs (id, user_id, ip, created_at) "
                             "VALUES (1, NULL, '10.0.0.1', '2026-06-14T10:00:00'), "
                             "(2, NULL, '10.0.0.1', '2026-06-14 10:00:00'), "
                             "(3, NULL, '10.0.0.1', '2026-06-14 10:00:00.250000')")
    policy = shop.policy("""
        [[rules]]
        name = "logs-1d"
        table = "shop.logs"
        clock = "created_at"
        after = "1d"
        action = "delete"
        max_fraction = 1.0
        """)
    with pytest.raises(ConfigError) as e:
        commands.check(policy, env=HASH_ENV)
    assert "rule 'logs-1d'" in str(e.value) and "holds 1 value" in str(e.value)
    with shop.engine.begin() as conn:                             # once rewritten, the rule runs
        conn.exec_driver_sql("UPDATE logs SET created_at = '2026-06-14 10:00:00' WHERE id = 1")
    out = outcome(shop.run(policy, now=NOW), "logs-1d")
    assert (out.due, out.touch) == (3, 3)
    shop.close()


@pytest.mark.postgresql
def test_where_sql_cutoff_on_a_timestamptz_column_uses_the_right_instant(pg_url, tmp_path):
    shop = Shop(pg_url, tmp_path)
    md = sa.MetaData()
    events = sa.Table("events", md,
                      sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                      sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))
    md.create_all(shop.engine)
    with shop.engine.connect() as conn:
        session_tz = conn.exec_driver_sql("SHOW TimeZone").scalar()
    if session_tz in ("Asia/Shanghai", "PRC"):
        pytest.skip("the server's own time zone hides the difference")
    with shop.engine.begin() as conn:
        conn.execute(events.insert(), [
            dict(id=1, created_at=datetime(2026, 6, 14, 16, 0, tzinfo=UTC)),   # 20h old: keep
            dict(id=2, created_at=datetime(2026, 6, 14, 11, 0, tzinfo=UTC)),   # 25h old: delete
        ])
    policy = shop.policy("""
        [[rules]]
        name = "events-1d"
        table = "shop.events"
        clock = "created_at"
        after = "0d"
        where_sql = "created_at <= :now_minus_1d"
        action = "delete"
        max_fraction = 1.0
        """, settings='timezone = "Asia/Shanghai"')
    shop.run(policy, now=NOW)
    with shop.engine.connect() as conn:
        left = [r[0] for r in conn.execute(sa.select(events.c.id).order_by(events.c.id))]
    assert left == [1]
    shop.close()


def test_sub_day_durations_are_elapsed_time_across_dst(tmp_path):
    shop = Shop(f"sqlite:///{tmp_path / 'app.db'}", tmp_path)
    # Europe/Paris springs forward at 2026-03-29 02:00 CET -> 03:00 CEST
    # now = 12:00 CEST = 10:00 UTC; the log at 23:30 CET = 22:30 UTC is 11.5 hours old
    shop.insert("logs", dict(id=1, user_id=None, ip="10.0.0.1", created_at=datetime(2026, 3, 28, 23, 30)))
    policy = shop.policy("""
        [[rules]]
        name = "logs-12h"
        table = "shop.logs"
        clock = "created_at"
        after = "12h"
        action = "delete"
        max_fraction = 1.0
        """, settings='timezone = "Europe/Paris"')
    out = outcome(shop.run(policy, now=datetime(2026, 3, 29, 10, 0, tzinfo=UTC)), "logs-12h")
    assert out.touch == 0
    assert shop.ids("logs") == [1]
    shop.close()


def _invoke(policy: str, *args: str):
    return CliRunner().invoke(cli, ["--config", policy, *args], env=HASH_ENV)


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
