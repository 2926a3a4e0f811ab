"""A rental shop as production PostgreSQL schemas look, run end to end by a least-privilege role.

* ``payments`` is range-partitioned by month, with a two-column primary key
  and foreign keys declared on the partitioned table; one month's partition
  is attached after the policy was written;
* ``payment_notes`` references payments by a two-column foreign key;
* the hold register lives in its own schema (``legal.holds``);
* ``reviews`` has a BEFORE DELETE trigger that soft-deletes instead;
* the job logs in as a role with only the SELECT, UPDATE and DELETE grants
  the policy needs: it owns nothing and can create nothing.

Every expectation is computed by SQL written here, independently of the
job's own predicates, on the data before the run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from retention import commands
from tests.shopkit import HASH_ENV, cascades, outcome, protected

NOW = datetime(2026, 6, 1, tzinfo=UTC)
MONTHS = ["2020-01", "2020-02", "2021-03", "2022-07", "2025-11", "2026-05"]
LATE_MONTH = "2019-12"      # attached after the policy was written

SCHEMA = """
CREATE TABLE addresses (id integer PRIMARY KEY, line1 text NOT NULL, updated_at timestamp NOT NULL);
CREATE TABLE customers (
    id integer PRIMARY KEY,
    email text NOT NULL,
    address_id integer REFERENCES addresses (id),
    created_at timestamp NOT NULL,
    closed_at timestamp
);
CREATE TABLE rentals (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    rented_at timestamp NOT NULL
);
CREATE TABLE payments (
    id integer NOT NULL,
    paid_at timestamp NOT NULL,
    customer_id integer NOT NULL REFERENCES customers (id),
    rental_id integer REFERENCES rentals (id),
    amount numeric(10, 2) NOT NULL,
    PRIMARY KEY (id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE payment_notes (
    id integer PRIMARY KEY,
    payment_id integer NOT NULL,
    payment_paid_at timestamp NOT NULL,
    note text,
    FOREIGN KEY (payment_id, payment_paid_at) REFERENCES payments (id, paid_at)
);
CREATE TABLE reviews (
    id integer PRIMARY KEY,
    customer_id integer REFERENCES customers (id),
    created_at timestamp NOT NULL,
    body text,
    hidden_at timestamp
);
CREATE SCHEMA legal;
CREATE TABLE legal.holds (id integer PRIMARY KEY, customer_id integer NOT NULL, released_at timestamp);
-- the application never deletes a review: it hides it
CREATE FUNCTION reviews_soft_delete() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    UPDATE reviews SET hidden_at = now() WHERE id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER reviews_soft_delete BEFORE DELETE ON reviews FOR EACH ROW EXECUTE FUNCTION reviews_soft_delete();
"""


def month_partition(month: str) -> str:
    y, m = map(int, month.split("-"))
    nxt = f"{y + (m == 12)}-{m % 12 + 1:02d}"
    return (f"CREATE TABLE payments_{y}_{m:02d} PARTITION OF payments "
            f"FOR VALUES FROM ('{month}-01') TO ('{nxt}-01')")


def late_partition() -> str:
    y, m = LATE_MONTH.split("-")
    return (f"CREATE TABLE payments_{y}_{m} (LIKE payments INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
            f"ALTER TABLE payments ATTACH PARTITION payments_{y}_{m} "
            f"FOR VALUES FROM ('{LATE_MONTH}-01') TO ('2020-01-01')")


DATA = """
INSERT INTO addresses SELECT c, 'street ' || c, '2020-01-01' FROM generate_series(1, 12) c;
INSERT INTO customers
SELECT c, 'customer' || c || '@example.com', c, '2019-01-01',
       CASE WHEN c <= 6 THEN timestamp '2022-01-01' WHEN c <= 9 THEN timestamp '2025-12-01' END
FROM generate_series(1, 12) c;
INSERT INTO rentals SELECT c * 10 + r, c, CASE r WHEN 1 THEN timestamp '2020-01-05' ELSE '2025-11-05' END
FROM generate_series(1, 12) c, generate_series(1, 2) r;
-- one payment per rental, and one without a rental; month by customer and rental
INSERT INTO payments
SELECT c * 10 + r, (ARRAY['2020-01-10', '2020-02-10', '2021-03-10', '2022-07-10', '2025-11-10',
                          '2026-05-10'])[1 + mod(c + r, 6)]::timestamp,
       c, CASE WHEN r < 3 THEN c * 10 + r END,
       CASE WHEN c = 1 AND r = 2 THEN 150 ELSE 10 END
FROM generate_series(1, 12) c, generate_series(1, 3) r;
INSERT INTO payment_notes SELECT id, id, paid_at, 'note' FROM payments WHERE mod(id, 2) = 0;
INSERT INTO reviews SELECT c, c, CASE WHEN mod(c, 2) = 0 THEN timestamp '2020-06-01' ELSE '2025-12-01' END, 'fine', NULL
FROM generate_series(1, 12) c;
INSERT INTO legal.holds VALUES (1, 2, NULL), (2, 3, '2024-01-01');
"""

LATE_DATA = """
INSERT INTO payments VALUES (901, '2019-12-10', 7, NULL, 10), (902, '2019-12-11', 2, NULL, 10),
                            (903, '2019-12-12', 11, 111, 10);
INSERT INTO payment_notes VALUES (901, 901, '2019-12-10', 'late');
"""

POLICY = """
version = 1
[settings]
state_url = "sqlite:///{state}"
batch_size = 4

[databases.shop]
url = "{url}"

[subjects.customer]
table = "shop.customers"
key = "id"

[[holds]]
name = "litigation"
table = "shop.legal.holds"
subject = "customer"
subject_column = "customer_id"
active_where = {{ released_at = {{ is_null = true }} }}

[[floors]]
name = "bookkeeping-5y"
table = "shop.payments"
clock = "paid_at"
keep = "5y"
where = {{ amount = {{ ge = 100 }} }}

[tables."shop.payments"]
on_parent_delete = "delete"

[tables."shop.payment_notes"]
on_parent_delete = "delete"

[tables."shop.rentals"]
on_parent_delete = "delete"

[tables."shop.reviews"]
on_parent_delete = "detach"

[tables."shop.customers"]
on_parent_delete = {{ address_id = "detach" }}

[[rules]]
name = "old-payments"
table = "shop.payments"
clock = "paid_at"
after = "3y"
action = "delete"
max_fraction = 1.0

[[rules]]
name = "closed-customers"
table = "shop.customers"
clock = "closed_at"
after = "2y"
action = "delete"
max_fraction = 1.0

[[rules]]
name = "closed-emails"
table = "shop.customers"
clock = "closed_at"
after = "1y"
action = "anonymize"
max_fraction = 1.0
columns = {{ email = {{ strategy = "redact_email" }} }}

[[rules]]
name = "old-reviews"
table = "shop.reviews"
clock = "created_at"
after = "3y"
action = "delete"
max_fraction = 1.0

[[rules]]
name = "stale-addresses"
table = "shop.addresses"
clock = "updated_at"
after = "2y"
action = "delete"
max_fraction = 1.0
"""

# What each table lets the job do: nothing more is granted.  UPDATE on a delete rule's table
# and on the tables its cascade deletes from is for SELECT ... FOR UPDATE, which locks a
# batch's rows and every cascade level before the re-check (one column is enough)
GRANTS = {
    "addresses": "SELECT, UPDATE, DELETE",
    "customers": "SELECT, UPDATE, DELETE",
    "rentals": "SELECT, UPDATE (id), DELETE",
    "payments": "SELECT, UPDATE, DELETE",
    "payment_notes": "SELECT, UPDATE (id), DELETE",
    "reviews": "SELECT, UPDATE, DELETE",
    "legal.holds": "SELECT",
}


@pytest.fixture
def rental_shop(pg_url, tmp_path):
    admin = sa.create_engine(pg_url)
    role = f"retention_job_{uuid.uuid4().hex[:8]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(SCHEMA)
        for month in MONTHS:
            conn.exec_driver_sql(month_partition(month))
        conn.exec_driver_sql(DATA)
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN PASSWORD 'job-secret'")
        conn.exec_driver_sql("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public, legal TO {role}")
        for table, privileges in GRANTS.items():
            conn.exec_driver_sql(f"GRANT {privileges} ON {table} TO {role}")
    url = sa.engine.make_url(pg_url).set(username=role, password="job-secret")
    policy = tmp_path / "policies.toml"
    policy.write_text(POLICY.format(state=tmp_path / "state.db",
                                    url=url.render_as_string(hide_password=False)))
    try:
        yield admin, str(policy), role
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
        admin.dispose()
        with sa.create_engine(pg_url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql(f"DROP ROLE {role}")


def q(admin, sql: str):
    with admin.connect() as conn:
        return conn.exec_driver_sql(sql).all()


def ids(admin, sql: str) -> list:
    return [r[0] for r in q(admin, sql)]


# -- expectations, in plain SQL on the data before the run (now = 2026-06-01) --------------

HELD = "(SELECT customer_id FROM legal.holds WHERE released_at IS NULL)"
# a payment belongs to its customer and to its rental's customer
PAYMENT_HELD = (f"(p.customer_id IN {HELD} OR EXISTS (SELECT 1 FROM rentals r WHERE r.id = p.rental_id "
                f"AND r.customer_id IN {HELD}))")
PAYMENT_FLOOR = "(p.amount >= 100 AND p.paid_at > '2021-06-01')"
OLD_PAYMENTS = (f"SELECT p.id FROM payments p WHERE p.paid_at <= '2023-06-01' "
                f"AND NOT {PAYMENT_HELD} AND NOT {PAYMENT_FLOOR} ORDER BY p.id")
# customers the delete may take, once old-payments has run: not held, and no payment it would
# take (its own, or its rentals') is held or under the floor
CLOSED_CUSTOMERS = f"""
SELECT c.id FROM customers c WHERE c.closed_at <= '2024-06-01' AND c.id NOT IN {HELD}
AND NOT EXISTS (SELECT 1 FROM payments p WHERE p.id NOT IN ({OLD_PAYMENTS})
                AND (p.customer_id = c.id OR p.rental_id IN (SELECT id FROM rentals WHERE customer_id = c.id))
                AND ({PAYMENT_FLOOR} OR {PAYMENT_HELD}))
ORDER BY c.id"""


def test_plan_run_and_end_state_match_independent_sql(rental_shop):
    admin, policy, role = rental_shop
    # the policy was written; now next month's partition is attached and filled
    with admin.begin() as conn:
        conn.exec_driver_sql(late_partition())
        conn.exec_driver_sql(LATE_DATA)
    # the role really is least-privilege: it can create nothing and owns nothing
    assert q(admin, f"SELECT has_schema_privilege('{role}', 'public', 'CREATE'), "
                    f"has_schema_privilege('{role}', 'legal', 'CREATE'), "
                    f"has_database_privilege('{role}', current_database(), 'CREATE')")[0] == (False, False, False)
    assert q(admin, f"SELECT count(*) FROM pg_class WHERE relowner = '{role}'::regrole")[0][0] == 0
    # and exactly enough: check, run as the role, finds no grant missing
    commands.check(policy, env=HASH_ENV)

    old_payments = ids(admin, OLD_PAYMENTS)
    payments_due = ids(admin, "SELECT id FROM payments WHERE paid_at <= '2023-06-01'")
    held_payments = ids(admin, f"SELECT p.id FROM payments p WHERE p.paid_at <= '2023-06-01' AND {PAYMENT_HELD}")
    floored = ids(admin, f"SELECT p.id FROM payments p WHERE p.paid_at <= '2023-06-01' "
                         f"AND NOT {PAYMENT_HELD} AND {PAYMENT_FLOOR}")
    notes_of_old = ids(admin, f"SELECT n.id FROM payment_notes n WHERE n.payment_id IN ({OLD_PAYMENTS})")
    closed = ids(admin, CLOSED_CUSTOMERS)
    reached = (f"(p.customer_id IN ({CLOSED_CUSTOMERS}) OR p.rental_id IN "
               f"(SELECT id FROM rentals WHERE customer_id IN ({CLOSED_CUSTOMERS})))")
    payments_of_closed = ids(admin, f"SELECT p.id FROM payments p WHERE {reached}")
    payments_of_closed_left = [p for p in payments_of_closed if p not in old_payments]
    # a scenario that exercises something: the late partition, holds, the floor, all present
    assert {901, 903} <= set(old_payments) and 902 in held_payments and floored
    assert closed and 2 not in closed

    report = commands.run(policy, dry_run=True, now=NOW, env=HASH_ENV)
    plan = outcome(report, "old-payments")
    assert plan.table == "shop.payments"
    assert plan.due == len(payments_due)
    assert protected(plan) == {"hold:litigation": len(held_payments), "floor:bookkeeping-5y": len(floored)}
    assert plan.touch == len(old_payments)
    assert cascades(plan) == {"shop.payment_notes:delete": len(notes_of_old)}
    # alone, on the data as it is: each payment of a closed customer once, reached by its
    # customer, by its rental or both, in whichever partition it lies
    plan = outcome(report, "closed-customers")
    assert plan.touch == len(closed) and protected(plan) == {"hold:litigation": 1, "floor:bookkeeping-5y": 1}
    assert cascades(plan)["shop.payments:delete"] == len(payments_of_closed)
    assert [c.table for c in plan.cascades if c.table.startswith("shop.payments_")] == []

    report = commands.run(policy, now=NOW, env=HASH_ENV)
    run = outcome(report, "old-payments")
    assert run.status == "ok" and run.touch == len(old_payments)
    assert cascades(run) == {"shop.payment_notes:delete": len(notes_of_old)}
    assert not set(old_payments) & set(ids(admin, "SELECT id FROM payments"))

    # closed customers: the expectation was taken before the run, on the data as old-payments leaves it
    gone = outcome(report, "closed-customers")
    assert gone.status == "ok" and gone.touch == len(closed)
    assert ids(admin, "SELECT id FROM customers ORDER BY id") == [c for c in range(1, 13) if c not in closed]
    # each payment once, however it was reached (its customer, its rental, the partitioned table)
    assert cascades(gone)["shop.rentals:delete"] == 2 * len(closed)
    assert cascades(gone)["shop.payments:delete"] == len(payments_of_closed_left)
    assert ids(admin, "SELECT id FROM rentals WHERE customer_id NOT IN (SELECT id FROM customers)") == []

    # the held customer's email and address are kept; the other closed customer's email is redacted
    emails = dict(q(admin, "SELECT id, email FROM customers"))
    assert emails[2] == "customer2@example.com"
    anonymized = [c for c in emails if c <= 6 and c != 2]
    assert anonymized and all(emails[c].startswith("c****@") for c in anonymized)
    assert ids(admin, "SELECT id FROM addresses") == [2]
    # every other remaining customer was detached from the address the rule deleted
    assert dict(q(admin, "SELECT id, address_id FROM customers")) == \
        {c: (2 if c == 2 else None) for c in range(1, 13) if c not in closed}

    # the trigger hid the due reviews instead of deleting them: they are all still there
    reviews = dict(q(admin, "SELECT id, hidden_at IS NOT NULL FROM reviews"))
    assert sorted(reviews) == list(range(1, 13))
    assert {r for r, hidden in reviews.items() if hidden} == {r for r in range(2, 13, 2) if r != 2}

    # nothing points at nothing
    assert q(admin, "SELECT count(*) FROM payment_notes n WHERE NOT EXISTS (SELECT 1 FROM payments p "
                    "WHERE p.id = n.payment_id AND p.paid_at = n.payment_paid_at)")[0][0] == 0
    assert q(admin, "SELECT count(*) FROM payments p WHERE NOT EXISTS "
                    "(SELECT 1 FROM customers c WHERE c.id = p.customer_id)")[0][0] == 0

    # a second run touches nothing
    again = commands.run(policy, now=NOW, env=HASH_ENV)
    assert all(r.touch == 0 for r in again.rules if r.rule != "old-reviews")


def test_rows_a_trigger_kept_are_reported_as_not_done(rental_shop):
    admin, policy, _role = rental_shop
    due = ids(admin, f"SELECT id FROM reviews WHERE created_at <= '2023-06-01' "
                     f"AND (customer_id IS NULL OR customer_id NOT IN {HELD})")
    report = commands.run(policy, now=NOW, env=HASH_ENV, only=["old-reviews"])
    out = outcome(report, "old-reviews")
    assert due and len(ids(admin, "SELECT id FROM reviews")) == 12
    # the report never says a row is gone that is still there
    assert out.touch == 0 and out.status == "incomplete" and report.exit_code == 1
    # every due row the trigger kept is named as not done, with the reason
    assert out.not_done_total == len(due) and {n.reason for n in out.not_done} == {"cancelled"}
