"""A hold register is the record of a legal process: no request erases or rewrites it, also once released.

The register's rows of the subject stay, and so does the subject's row they
reference (whatever the register's ``on_parent_delete`` says): the request
is ``partial``, the register is named, and everything else linked to the
subject is erased.
"""

from __future__ import annotations

from datetime import datetime, timezone

from retention.requests.commands import file_request
from tests.shopkit import HASH_ENV
from tests.test_request_anonymize import POLICY as ANONYMIZE
from tests.test_requests import POLICY, T0, _fill


def _released(shop) -> None:
    with shop.engine.begin() as conn:
        conn.execute(shop.t("legal_holds").update().values(released_at=datetime(2024, 2, 1)))


def test_a_released_holds_register_row_outlives_the_erasure(shop):
    # the policy says on_parent_delete = "delete" for the register: a request still never takes it
    assert '[tables."shop.legal_holds"]\non_parent_delete = "delete"' in POLICY
    _fill(shop)
    _released(shop)
    register = shop.rows("legal_holds")
    policy = shop.policy(POLICY)
    file_request(policy, "customer:3", now=T0, env=HASH_ENV)
    report = shop.run(policy, now=T0)
    assert report.exit_code == 0, report.errors
    item = report.to_dict()["requests"]["items"][0]
    assert shop.rows("legal_holds") == register
    assert item["registers"] == {"shop.legal_holds": 1}
    assert item["status"] == "partial" and item["erased"] == {"shop.addresses": 1}
    kept = [p for p in item["protected"] if p["kind"] == "register"]
    assert kept == [{"kind": "register", "name": "shop.legal_holds", "table": "shop.users", "rows": 1,
                     "until": None, "restricted": 1}]
    user = next(u for u in shop.rows("users") if u["id"] == 3)
    assert user["restricted_at"] is not None and shop.dangling() == []
    assert "hold register shop.legal_holds kept" in _text(report)


def test_an_anonymizing_request_leaves_the_register_as_it_is(sqlite_shop):
    shop = sqlite_shop
    _fill(shop)
    _released(shop)
    register = shop.rows("legal_holds")
    policy = shop.policy(ANONYMIZE)
    file_request(policy, "customer:3", now=T0, env=HASH_ENV)
    item = shop.run(policy, now=datetime(2024, 3, 2, tzinfo=timezone.utc)).to_dict()["requests"]["items"][0]
    assert item["status"] == "done" and item["registers"] == {"shop.legal_holds": 1}
    assert shop.rows("legal_holds") == register
    assert next(u for u in shop.rows("users") if u["id"] == 3)["name"] == "deleted user"


def _text(report) -> str:
    from retention.report.text import render_text
    return render_text(report)
