"""`retention coverage`: personal-looking columns in every table, and what in the policy reaches each.

Uncovered columns are the point: a table the policy never names still holds
e-mails and IP addresses, and the list says so. Names are all it reads.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from retention import cli
from retention.coverage import kind_of, words
from tests.shopkit import CLOSED_ANONYMIZE, DSR, HASH_ENV, HOLDS, OLD_ORDERS, USERS_PURGE

POLICY = HOLDS + CLOSED_ANONYMIZE + OLD_ORDERS


def _coverage(policy: str, *args: str):
    return CliRunner().invoke(cli.cli, ["-c", policy, "coverage", *args], env=HASH_ENV)


def _columns(result) -> dict[tuple[str, str], dict]:
    assert result.exit_code == 0, result.output
    return {(c["table"], c["column"]): c for c in json.loads(result.stdout)["columns"]}


@pytest.mark.parametrize("table, column, kind", [
    ("shop.users", "email", "e-mail"), ("shop.users", "contactEmail", "e-mail"),
    ("shop.x", "first_name", "name"), ("shop.x", "LastName", "name"), ("shop.users", "name", "name"),
    ("shop.products", "name", None), ("shop.x", "mobile_phone", "phone"), ("shop.x", "last_ip", "IP address"),
    ("shop.x", "remote_addr", "IP address"), ("shop.x", "address_line1", "address"),
    ("shop.x", "date_of_birth", "birth date"), ("shop.x", "dob", "birth date"), ("shop.x", "iban", "card or account"),
    ("shop.x", "user_agent", "device"), ("shop.x", "passport_no", "identity number"),
    ("shop.x", "shipping_city", "address"), ("shop.x", "zipcode", "address"),
    ("shop.x", "created_at", None), ("shop.x", "description", None), ("shop.x", "ship_date", None),
    ("shop.x", "tip", None), ("shop.x", "email_verified", None), ("shop.x", "status", None),
    ("shop.x", "buyer_name", "name"), ("shop.x", "customerName", "name"), ("shop.x", "product_name", None),
    # what a name's last word makes about something else, or a word that is personal only alone
    ("shop.x", "shipping_method", None), ("shop.x", "billing_cycle", None), ("shop.x", "zip_file", None),
    ("shop.x", "location_id", None), ("shop.x", "email_template_id", None), ("shop.x", "mail_sent_at", None),
    ("shop.x", "mobile_app_version", None), ("shop.x", "card_type", None), ("shop.x", "ip_range", None),
    ("shop.x", "recipient_count", None), ("shop.x", "cert_fingerprint", None), ("shop.x", "shipping_address_id", None),
    # one-word spellings, plurals, pairs
    ("shop.x", "phonenumber", "phone"), ("shop.x", "username", "name"), ("shop.x", "IPv4", "IP address"),
    ("shop.x", "CUSTOMERNAME", "name"), ("shop.x", "social_security_number", "identity number"),
    ("shop.x", "emails", "e-mail"), ("shop.x", "owner_name", "name"), ("shop.x", "gender", "gender"),
    ("shop.app_users", "name", "name"), ("shop.x", "mobile", "phone"), ("shop.x", "zip", "address"),
])
def test_a_column_name_says_what_it_holds(table, column, kind):
    assert kind_of(table, column) == kind, words(column)


def test_each_personal_column_names_what_reaches_it_and_an_unnamed_table_is_uncovered(shop):
    cov = _columns(_coverage(shop.policy(POLICY), "--format", "json"))
    email = cov[("shop.users", "email")]
    assert email["kind"] == "e-mail"
    assert email["covered_by"] == ["rule closed-anonymize anonymizes it in the rows (hash, 30d after closed_at)"]
    assert email["reach"] == "every row"
    assert cov[("shop.users", "phone")]["covered_by"] == []           # the rule leaves the phone as it is
    assert cov[("shop.users", "phone")]["reach"] == "none"
    assert cov[("shop.users", "last_ip")]["covered_by"] == []
    assert cov[("shop.orders", "buyer_name")]["covered_by"] == ["rule old-orders deletes the rows "
                                                                "(1y after completed_at)"]
    assert cov[("shop.logs", "ip")]["covered_by"] == []              # a table the policy never names
    assert ("shop.users", "created_at") not in cov and ("shop.users", "id") not in cov


def test_deletes_reach_children_through_on_parent_delete_and_requests_reach_linked_tables(sqlite_shop):
    policy = sqlite_shop.policy(POLICY + DSR)
    cov = _columns(_coverage(policy, "--format", "json"))
    dsr = "request dsr deletes the person's rows (within 15d)"
    assert cov[("shop.users", "phone")]["covered_by"][-1] == dsr
    assert dsr in cov[("shop.logs", "ip")]["covered_by"]
    buyer = cov[("shop.orders", "buyer_name")]
    assert dsr in buyer["covered_by"] and buyer["reach"] == "every row"      # old-orders deletes every row too
    # the hold register is the record of a legal process: a request never erases it
    assert all("request" not in why for (t, _c), col in cov.items() if t == "shop.legal_holds"
               for why in col["covered_by"])


def test_pg_tables_of_every_schema_are_read(pg_shop):
    with pg_shop.engine.begin() as c:
        c.exec_driver_sql("CREATE SCHEMA crm")
        c.exec_driver_sql("CREATE TABLE crm.contacts (id int PRIMARY KEY, email_address text, notes text)")
    cov = _columns(_coverage(pg_shop.policy(POLICY), "--format", "json"))
    assert cov[("shop.crm.contacts", "email_address")] == {"table": "shop.crm.contacts", "column": "email_address",
                                                          "kind": "e-mail", "covered_by": [], "reach": "none"}


def test_every_format_lists_the_same_columns_and_reads_no_row(sqlite_shop):
    sqlite_shop.user(1, email="someone.real@example.org", last_ip="203.0.113.77")
    policy = sqlite_shop.policy(POLICY)
    text = _coverage(policy)
    assert text.exit_code == 0 and text.stdout.startswith("RETENTION COVERAGE")
    assert "UNCOVERED" in text.stdout and "uncovered (nothing in the policy ever deletes" in text.output
    counted = json.loads(_coverage(policy, "--format", "json").stdout)
    uncovered = [c for c in counted["columns"] if not c["covered_by"]]
    assert counted["uncovered"] == len(uncovered) > 0
    assert text.stdout.count("UNCOVERED") == len(uncovered)
    markdown = _coverage(policy, "--format", "markdown").stdout
    html = _coverage(policy, "--format", "html").stdout
    assert markdown.count("| UNCOVERED |") == len(uncovered)
    assert html.count('<span class="bad">UNCOVERED</span>') == len(uncovered)
    for out in (text.stdout, markdown, html, json.dumps(counted)):
        assert "someone.real" not in out and "203.0.113" not in out


def test_some_rows_only_a_conditional_rule_a_nullable_cascade_or_a_request(sqlite_shop):
    closed_only = USERS_PURGE.replace('action = "delete"', 'action = "delete"\nwhere = { status = "closed" }')
    policy = sqlite_shop.policy(HOLDS + closed_only + DSR + '[tables."shop.logs"]\non_parent_delete = "delete"\n')
    cov = _columns(_coverage(policy, "--format", "json"))
    assert cov[("shop.users", "email")]["reach"] == "some rows"
    assert cov[("shop.users", "email")]["covered_by"][0].startswith("rule closed-users-purge deletes the rows its "
                                                                    "conditions match")
    logs = cov[("shop.logs", "ip")]          # logs.user_id is nullable: a log line with no user stays
    assert logs["reach"] == "some rows" and "deleted with its parent row in shop.users" in logs["covered_by"][0]


def test_a_personal_key_is_listed_and_a_request_does_not_claim_a_table_it_cannot_batch(sqlite_shop):
    with sqlite_shop.engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE newsletter (email TEXT PRIMARY KEY, joined_at TEXT)")
        c.exec_driver_sql("CREATE TABLE user_tags (user_id INTEGER REFERENCES users(id), contact_email TEXT)")
    policy = sqlite_shop.policy(POLICY + DSR)
    cov = _columns(_coverage(policy, "--format", "json"))
    assert cov[("shop.newsletter", "email")]["reach"] == "none"
    # no primary key: a request erases nothing there (the user row it points at is kept instead)
    assert cov[("shop.user_tags", "contact_email")] == {"table": "shop.user_tags", "column": "contact_email",
                                                       "kind": "e-mail", "covered_by": [], "reach": "none"}


def test_the_walk_to_a_subject_skips_tables_that_cannot_reach_it(sqlite_shop):
    """A meshed part of the schema that no key leads from to the subject is not walked path by path."""
    from retention.schema import Catalog, subject_paths
    with sqlite_shop.engine.begin() as c:
        for layer in range(6):
            for i in range(3):
                refs = (", ".join(f"p{j} INTEGER REFERENCES m{layer - 1}_{j}(id)" for j in range(3))
                        if layer else "x TEXT")
                c.exec_driver_sql(f"CREATE TABLE m{layer}_{i} (id INTEGER PRIMARY KEY, {refs})")
    catalog = Catalog({"shop": sqlite_shop.engine}, None)
    calls = []
    real = catalog.parents_of
    catalog.parents_of = lambda key: calls.append(key) or real(key)
    assert subject_paths(catalog, "shop.m5_0", "shop.users", "id") == []
    assert calls == []                       # 3^5 paths upward, none of them toward the subject
    assert subject_paths(catalog, "shop.orders", "shop.users", "id")[0][1] == "id"
