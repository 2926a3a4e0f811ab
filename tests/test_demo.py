"""The demo shop (retention/demo.py) and the root policies.toml written against it.

The demo is what a new operator first points the job at, so these tests check
that it is reproducible, holds every population the policy acts on, keeps its
own schema rules (real foreign keys, ``id`` keys, naive UTC timestamps), and
that policies.toml names only tables and columns that exist in it.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from retention import demo
from retention.demo import METADATA, SCHEMA_TABLES, create_demo, describe_demo
from retention.durations import subtract_months

NOW = datetime(2026, 3, 15, 9, 30)
ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "policies.toml"


def dump(url: str) -> dict[str, list[tuple]]:
    """Every row of every demo table, ordered by id, in an engine-neutral form."""

    def norm(value):
        if isinstance(value, (Decimal, float)):
            return str(Decimal(str(value)).quantize(Decimal("0.01")))
        return value

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(norm(v) for v in row)
                             for row in conn.execute(sa.select(t).order_by(t.c.id))]
                    for t in METADATA.sorted_tables}
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The full-size demo (scale 1) on SQLite, built once for the module."""
    url = f"sqlite:///{tmp_path_factory.mktemp('demo') / 'shop.db'}"
    counts = create_demo(url, now=NOW)
    engine = sa.create_engine(url)
    yield engine, counts
    engine.dispose()


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def rows(engine, sql: str, **params) -> list:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


# --- the build ----------------------------------------------------------------

def test_counts_are_the_real_row_counts_and_the_advertised_sizes(shop):
    engine, counts = shop
    assert set(counts) == set(SCHEMA_TABLES)
    for name, n in counts.items():
        assert scalar(engine, f"SELECT count(*) FROM {name}") == n, name
    assert counts["users"] == 2000
    assert counts["merchants"] == 60
    assert counts["orders"] == 8000
    assert counts["access_logs"] == 30000
    assert counts["access_logs"] == max(counts.values())
    assert counts["order_items"] >= counts["orders"]
    assert 0 < counts["legal_holds"] < 10


def test_same_seed_and_now_give_identical_content_whatever_the_clock(tmp_path):
    # Building under two different frozen clocks proves nothing reads the
    # wall clock: only the `now` argument matters.
    with freeze_time("2030-01-01"):
        create_demo(f"sqlite:///{tmp_path / 'a.db'}", now=NOW, seed=11, scale=0.2)
    with freeze_time("2031-07-19 13:00"):
        create_demo(f"sqlite:///{tmp_path / 'b.db'}", now=NOW, seed=11, scale=0.2)
    create_demo(f"sqlite:///{tmp_path / 'c.db'}", now=NOW, seed=12, scale=0.2)
    a, b, c = (dump(f"sqlite:///{tmp_path / n}.db") for n in "abc")
    assert a == b
    assert a["users"] != c["users"]


def test_rebuilding_replaces_the_previous_demo(tmp_path):
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    create_demo(url, now=NOW, scale=0.2)
    first = dump(url)
    counts = create_demo(url, now=NOW, scale=0.1)
    engine = sa.create_engine(url)
    assert scalar(engine, "SELECT count(*) FROM users") == counts["users"] == 200
    engine.dispose()
    create_demo(url, now=NOW, scale=0.2)
    assert dump(url) == first


def test_aware_now_means_the_same_instant_as_naive_utc(tmp_path):
    paris = timezone(timedelta(hours=1))
    create_demo(f"sqlite:///{tmp_path / 'a.db'}", now=NOW, scale=0.1)
    create_demo(f"sqlite:///{tmp_path / 'b.db'}", now=NOW.replace(hour=10, tzinfo=paris), scale=0.1)
    assert dump(f"sqlite:///{tmp_path / 'a.db'}") == dump(f"sqlite:///{tmp_path / 'b.db'}")


def test_every_backend_gets_the_same_rows(backend, tmp_path):
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    create_demo(reference, now=NOW, scale=0.1)
    counts = create_demo(backend, now=NOW, scale=0.1)
    assert dump(backend) == dump(reference)
    # Ids were inserted explicitly; the application must still be able to add
    # rows afterwards (PostgreSQL sequences moved past them).
    engine = sa.create_engine(backend)
    try:
        with engine.begin() as conn:
            new_id = conn.execute(demo.erasure_requests.insert().values(
                user_id=1, received_at=NOW, status="pending")
                .returning(demo.erasure_requests.c.id)).scalar()
        assert new_id == counts["erasure_requests"] + 1
    finally:
        engine.dispose()


def test_small_scales_still_hold_every_population(tmp_path):
    url = f"sqlite:///{tmp_path / 'tiny.db'}"
    counts = create_demo(url, now=NOW, scale=0.01)
    assert counts["users"] < 200 and counts["access_logs"] < 1000
    engine = sa.create_engine(url)
    grace, adult = NOW - timedelta(days=30), subtract_months(NOW, 18 * 12).date()
    try:
        for sql in (
            "SELECT count(*) FROM users WHERE closed_at < :grace",
            "SELECT count(*) FROM users WHERE closed_at >= :grace",
            "SELECT count(*) FROM users WHERE birth_date > :adult AND parental_consent_at IS NULL",
            "SELECT count(*) FROM legal_holds WHERE released_at IS NULL",
            "SELECT count(*) FROM merchant_customers mc JOIN merchants m "
            "ON m.id = mc.merchant_id WHERE m.closed_at < :grace",
            "SELECT count(*) FROM orders WHERE completed_at < :three_years",
            "SELECT count(*) FROM erasure_requests WHERE status = 'pending'",
        ):
            assert scalar(engine, sql, grace=grace, adult=adult,
                          three_years=subtract_months(NOW, 36)) > 0, sql
    finally:
        engine.dispose()


def test_data_spans_five_years_before_now(shop):
    engine, _ = shop
    five_years_ago = subtract_months(NOW, 60)
    for table in ("users", "access_logs"):
        oldest, newest = rows(engine, f"SELECT min(created_at), max(created_at) FROM {table}")[0]
        oldest, newest = datetime.fromisoformat(str(oldest)), datetime.fromisoformat(str(newest))
        assert five_years_ago - timedelta(days=3) <= oldest <= five_years_ago + timedelta(days=30), table
        assert NOW - timedelta(days=7) <= newest <= NOW, table
    for table, column in (("orders", "created_at"), ("support_messages", "created_at"),
                          ("payments", "paid_at"), ("addresses", "created_at")):
        assert scalar(engine, f"SELECT count(*) FROM {table} WHERE {column} > :now",
                      now=NOW) == 0, table
        assert scalar(engine, f"SELECT count(*) FROM {table} WHERE {column} < :start",
                      start=five_years_ago - timedelta(days=3)) == 0, table


# --- populations the policy needs ----------------------------------------------

def test_closed_accounts_some_past_the_grace_period_some_recent(shop):
    engine, counts = shop
    grace = NOW - timedelta(days=30)
    closed = scalar(engine, "SELECT count(*) FROM users WHERE status = 'closed'")
    assert 0.10 * counts["users"] <= closed <= 0.20 * counts["users"]
    assert scalar(engine, "SELECT count(*) FROM users WHERE status = 'closed' AND closed_at < :g",
                  g=grace) >= 0.5 * closed
    assert scalar(engine, "SELECT count(*) FROM users WHERE status = 'closed' AND closed_at >= :g",
                  g=grace) >= 10
    # closed_at is set exactly on closed accounts, and after the account existed
    assert scalar(engine, "SELECT count(*) FROM users WHERE (status = 'closed') "
                  "<> (closed_at IS NOT NULL)") == 0
    assert scalar(engine, "SELECT count(*) FROM users WHERE closed_at <= created_at") == 0
    assert scalar(engine, "SELECT count(*) FROM users WHERE anonymized_at IS NOT NULL "
                  "OR restricted_at IS NOT NULL") == 0


def test_minors_mostly_without_parental_consent(shop):
    engine, counts = shop
    adult_cutoff = subtract_months(NOW, 18 * 12).date()
    minors = scalar(engine, "SELECT count(*) FROM users WHERE birth_date > :c", c=adult_cutoff)
    bare = scalar(engine, "SELECT count(*) FROM users WHERE birth_date > :c "
                  "AND parental_consent_at IS NULL", c=adult_cutoff)
    assert 0.02 * counts["users"] <= minors <= 0.04 * counts["users"]
    assert minors / 2 < bare < minors
    # consent only exists for minors, and only after they registered
    assert scalar(engine, "SELECT count(*) FROM users WHERE parental_consent_at IS NOT NULL "
                  "AND (birth_date <= :c OR parental_consent_at < created_at)", c=adult_cutoff) == 0
    # some of them have orders (their deletion is blocked), some have none
    with_orders = scalar(engine, "SELECT count(DISTINCT u.id) FROM users u JOIN orders o "
                         "ON o.user_id = u.id WHERE u.birth_date > :c "
                         "AND u.parental_consent_at IS NULL", c=adult_cutoff)
    assert 0 < with_orders < bare


def test_holds_protect_closed_accounts_and_a_minor(shop):
    engine, _ = shop
    adult_cutoff = subtract_months(NOW, 18 * 12).date()
    active = "FROM legal_holds h JOIN users u ON u.id = h.user_id WHERE h.released_at IS NULL"
    assert scalar(engine, f"SELECT count(*) {active} AND u.status = 'closed' "
                  "AND u.closed_at < :g", g=NOW - timedelta(days=30)) >= 2
    assert scalar(engine, f"SELECT count(*) {active} AND u.birth_date > :c "
                  "AND u.parental_consent_at IS NULL", c=adult_cutoff) >= 1
    released = rows(engine, "SELECT placed_at, released_at FROM legal_holds "
                    "WHERE released_at IS NOT NULL")
    assert len(released) == 1
    assert str(released[0][0]) < str(released[0][1])
    assert scalar(engine, "SELECT count(DISTINCT user_id) = count(*) FROM legal_holds") == 1


def test_erasure_requests_include_pending_ones(shop):
    engine, _ = shop
    statuses = dict(rows(engine, "SELECT status, count(*) FROM erasure_requests GROUP BY status"))
    assert statuses.get("pending", 0) >= 2
    assert set(statuses) <= {"pending", "done", "partial", "rejected"}
    assert scalar(engine, "SELECT count(*) FROM erasure_requests WHERE "
                  "(status = 'pending') = (completed_at IS NOT NULL)") == 0


def test_access_logs_mix_ipv4_ipv6_and_anonymous_visitors(shop):
    engine, _ = shop
    ips = [ipaddress.ip_address(ip) for (ip,) in rows(engine, "SELECT ip FROM access_logs")]
    v6 = sum(ip.version == 6 for ip in ips)
    assert 0.1 * len(ips) < v6 < 0.5 * len(ips)
    last = [ipaddress.ip_address(ip) for (ip,) in rows(engine, "SELECT last_ip FROM users")]
    assert {ip.version for ip in last} == {4, 6}
    anonymous = scalar(engine, "SELECT count(*) FROM access_logs WHERE user_id IS NULL")
    assert 0 < anonymous < len(ips)
    # most lines are older than 180 days, some are recent
    old = scalar(engine, "SELECT count(*) FROM access_logs WHERE created_at <= :c",
                 c=NOW - timedelta(days=180))
    assert 0.5 * len(ips) < old < len(ips)


def test_orders_completed_within_and_beyond_three_years(shop):
    engine, _ = shop
    floor = subtract_months(NOW, 36)
    assert scalar(engine, "SELECT count(*) FROM orders WHERE completed_at <= :f", f=floor) >= 100
    assert scalar(engine, "SELECT count(*) FROM orders WHERE completed_at > :f", f=floor) >= 1000
    assert scalar(engine, "SELECT count(*) FROM orders WHERE (status IN ('open', 'cancelled')) "
                  "<> (completed_at IS NULL)") == 0
    assert scalar(engine, "SELECT count(*) FROM orders WHERE completed_at <= created_at") == 0
    assert {s for (s,) in rows(engine, "SELECT DISTINCT status FROM orders")} == {
        "open", "completed", "cancelled", "refunded"}


def test_orders_add_up_and_happen_while_both_parties_exist(shop):
    engine, _ = shop
    assert scalar(engine, "SELECT count(*) FROM orders o WHERE abs(o.total - (SELECT "
                  "sum(i.quantity * i.unit_price) FROM order_items i WHERE i.order_id = o.id)) "
                  "> 0.001") == 0
    assert scalar(engine, "SELECT count(*) FROM payments p JOIN orders o ON o.id = p.order_id "
                  "WHERE abs(p.amount - o.total) > 0.001 OR p.paid_at < o.created_at") == 0
    assert scalar(engine, "SELECT count(*) FROM orders o JOIN users u ON u.id = o.user_id "
                  "JOIN merchants m ON m.id = o.merchant_id WHERE o.created_at < u.created_at "
                  "OR o.created_at > u.closed_at OR o.created_at < m.created_at "
                  "OR o.created_at > m.closed_at") == 0


def test_merchants_closed_long_ago_and_recently_with_customer_lists(shop):
    engine, _ = shop
    closed_at = [datetime.fromisoformat(str(c)) for (c,) in
                 rows(engine, "SELECT closed_at FROM merchants WHERE status = 'closed'")]
    assert any(c < NOW - timedelta(days=365) for c in closed_at)
    assert any(c > NOW - timedelta(days=30) for c in closed_at)
    assert scalar(engine, "SELECT count(*) FROM merchants WHERE (status = 'closed') "
                  "<> (closed_at IS NOT NULL)") == 0
    due = scalar(engine, "SELECT count(*) FROM merchant_customers mc JOIN merchants m "
                 "ON m.id = mc.merchant_id WHERE m.closed_at < :c", c=NOW - timedelta(days=30))
    assert due > 0
    assert scalar(engine, "SELECT count(*) FROM (SELECT merchant_id, user_id FROM "
                  "merchant_customers GROUP BY 1, 2 HAVING count(*) > 1) AS d") == 0


def test_personal_data_is_fake_but_well_formed(shop):
    engine, _ = shop
    emails = [e for (e,) in rows(engine, "SELECT email FROM users")]
    assert len(set(emails)) == len(emails)
    assert all(re.fullmatch(r"[a-z_.]+\d+@example\.(com|org|net)", e) for e in emails)
    cards = [c for (c,) in rows(engine, "SELECT card_number FROM payments")]
    assert all(len(c) == 16 and c.isdigit() and _luhn_ok(c) for c in cards)
    assert {c[:6] for c in cards} <= {"411111", "400000", "555555", "522222"}
    names = {n for (n,) in rows(engine, "SELECT name FROM users")}
    assert len(names) > 500  # varied enough to look like real customers in a report


def _luhn_ok(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def test_describe_demo_is_one_paragraph_without_personal_data(shop):
    engine, _ = shop
    text = describe_demo()
    assert "\n" not in text and len(text) > 200
    assert "@" not in text
    assert not {n.split()[1] for (n,) in rows(engine, "SELECT name FROM users")} & set(text.split())


# --- schema rules ------------------------------------------------------------------

def test_schema_follows_the_house_rules():
    assert set(SCHEMA_TABLES) == {
        "users", "merchants", "merchant_customers", "orders", "order_items", "payments",
        "addresses", "access_logs", "support_messages", "legal_holds", "erasure_requests"}
    for table in METADATA.sorted_tables:
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*s", table.name), table.name
        assert [c.name for c in table.primary_key.columns] == ["id"], table.name
        assert isinstance(table.c.id.type, sa.Integer)
        fk_columns = {fk.parent.name for fk in table.foreign_keys}
        assert fk_columns == {c.name for c in table.columns if c.name.endswith("_id")}, table.name
        for fk in table.foreign_keys:
            assert fk.ondelete is None and fk.onupdate is None, (table.name, fk.parent.name)
        for column in table.columns:
            if isinstance(column.type, sa.DateTime):
                assert column.type.timezone is False, (table.name, column.name)


def test_every_foreign_key_in_the_built_database_is_satisfied(shop):
    engine, _ = shop
    assert rows(engine, "PRAGMA foreign_key_check") == []
    declared = sum(len(rows(engine, f"PRAGMA foreign_key_list({t})")) for t in SCHEMA_TABLES)
    assert declared == sum(len(t.foreign_keys) for t in METADATA.sorted_tables) == 12


# --- policies.toml against the demo schema ----------------------------------------

@pytest.fixture(scope="module")
def policy() -> dict:
    return tomllib.loads(POLICY.read_text())


def _table(ref: str) -> sa.Table:
    db, _, name = ref.partition(".")
    assert db == "shop", ref
    assert name in METADATA.tables, f"{ref}: no such table in the demo"
    return METADATA.tables[name]


def _column(table: sa.Table, path: str) -> sa.Column:
    """``col`` or ``parent.col``, the parent reached by the FK column ``parent_id``."""
    *hops, name = path.split(".")
    for hop in hops:
        fks = [fk for fk in table.foreign_keys if fk.parent.name == f"{hop}_id"]
        assert len(fks) == 1, f"{table.name}: no foreign key for '{hop}' in '{path}'"
        table = fks[0].column.table
    assert name in table.c, f"{table.name}: no column '{name}' (from '{path}')"
    return table.c[name]


_SQL_WORDS = {"and", "or", "not", "is", "null", "in", "like", "between", "true", "false"}


def _sql_identifiers(sql: str) -> set[str]:
    without_strings = re.sub(r"'[^']*'", "''", sql)
    words = re.findall(r"(?<![:\w])[A-Za-z_][A-Za-z0-9_]*", without_strings)
    return {w for w in words if w.lower() not in _SQL_WORDS}


def test_policy_file_is_version_1_with_the_expected_blocks(policy):
    assert policy["version"] == 1
    assert policy["databases"]["shop"]["url"] == "${SHOP_DATABASE_URL:-sqlite:///retention-demo.db}"
    assert policy["settings"]["timezone"] == "UTC"
    names = [r["name"] for r in policy["rules"]]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names)
    assert {"access-logs-180d", "closed-accounts-anonymize", "merchant-closed-customers",
            "minors-without-consent", "payment-cards-mask", "support-messages-restrict"} <= set(names)
    assert all(r.get("basis") for r in policy["rules"])
    assert [h["name"] for h in policy["holds"]] == ["litigation"]
    assert {f["name"] for f in policy["floors"]} == {"ecommerce-law-3y", "aml-payments-5y"}


def test_every_table_and_column_the_policy_names_exists_in_the_demo(policy):
    subjects = policy["subjects"]
    for subject in subjects.values():
        _column(_table(subject["table"]), subject["key"])
    for rule in policy["rules"]:
        table = _table(rule["table"])
        _column(table, rule["clock"])
        for name in rule.get("where", {}):
            _column(table, name)
        for name in _sql_identifiers(rule.get("where_sql", "")):
            _column(table, name)
        for name in rule.get("columns", {}):
            _column(table, name)
        if "mark" in rule:
            assert isinstance(_column(table, rule["mark"]).type, sa.DateTime)
        if rule["action"] == "restrict":
            _column(table, rule.get("restrict_column", "restricted_at"))
    for hold in policy["holds"]:
        table = _table(hold["table"])
        assert hold["subject"] in subjects
        _column(table, hold["subject_column"])
        for name in hold.get("active_where", {}):
            _column(table, name)
    for floor in policy["floors"]:
        table = _table(floor["table"])
        _column(table, floor["clock"])
        for name in floor.get("columns", []):
            _column(table, name)
    for request in policy.get("requests", []):
        table = _table(request["table"])
        assert request["subject"] in subjects
        for key in ("subject_column", "received_column", "status_column"):
            _column(table, request[key])
    for ref in policy["tables"]:
        _table(ref)


def test_a_deleted_user_has_a_decision_for_every_child_table(policy):
    # Users are deleted (minors rule, erasure requests): every table that
    # references users says what happens to its rows, and "detach" is only
    # chosen where the reference may be NULL.
    settings = {ref.partition(".")[2]: t["on_parent_delete"] for ref, t in policy["tables"].items()}
    children = {t.name for t in METADATA.sorted_tables
                if any(fk.column.table.name == "users" for fk in t.foreign_keys)}
    assert children <= set(settings)
    assert settings["orders"] == "block"
    assert settings["access_logs"] == "detach"
    for name, action in settings.items():
        assert action in ("delete", "detach", "block")
        if action == "detach":
            assert all(fk.parent.nullable for fk in METADATA.tables[name].foreign_keys), name


def test_floors_leave_room_for_the_rules_that_share_their_table(policy):
    # The card-masking rule runs inside the AML floor, so the floor must not
    # list the card number; the order rules touch only columns the e-commerce
    # floor releases or only once it has ended.
    floors = {f["name"]: f for f in policy["floors"]}
    assert "card_number" not in floors["aml-payments-5y"]["columns"]
    rules = {r["name"]: r for r in policy["rules"]}
    assert rules["orders-anonymize-after-3y"]["clock"] == floors["ecommerce-law-3y"]["clock"]
    assert rules["orders-anonymize-after-3y"]["after"] == floors["ecommerce-law-3y"]["keep"]


def test_policies_load_with_the_config_loader(monkeypatch):
    config = pytest.importorskip("retention.config")
    if not hasattr(config, "load_config"):
        pytest.skip("retention.config.load_config is not written yet")
    monkeypatch.delenv("SHOP_DATABASE_URL", raising=False)
    loaded = config.load_config(POLICY, env={})
    assert loaded.urls["shop"] == "sqlite:///retention-demo.db"
    assert len(loaded.rules) == len(tomllib.loads(POLICY.read_text())["rules"])
    pg = "postgresql+psycopg://retention@db.internal/shop"
    assert config.load_config(POLICY, env={"SHOP_DATABASE_URL": pg}).urls["shop"] == pg
