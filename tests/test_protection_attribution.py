"""Each due row is counted once, under the first protector that covers it.

Protectors come in precedence order (holds, then floors, then blocking
children).  A row two of them cover is reported under the first only, so
``protected`` sums to the protected rows and ``due = protected + touch +
unchanged + remaining`` holds.  The expected numbers here are computed in
Python from the rows inserted, never by the job's own SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.shopkit import HOLDS, Shop, outcome, protected

NOW = datetime(2025, 6, 1, tzinfo=UTC)
OLD, RECENT = datetime(2024, 1, 1), datetime(2025, 5, 31, 12)

#: two holds over one register: "litigation" (active holds), then "audit" (any hold, released or not);
#: a floor on large orders; order_items block the delete of their order (no on_parent_delete)
POLICY = HOLDS + """
[[holds]]
name = "audit"
table = "shop.legal_holds"
subject = "customer"
subject_column = "user_id"

[[floors]]
name = "large-orders"
table = "shop.orders"
clock = "completed_at"
keep = "3y"
where = { total = { ge = 100 } }

[[rules]]
name = "orders-purge"
table = "shop.orders"
clock = "completed_at"
after = "30d"
action = "delete"
max_fraction = 1.0
"""

#: per order: is it due, its user's hold ("none", "released", "active"), a large total, an item
ORDER = st.tuples(st.booleans(), st.sampled_from(["none", "released", "active"]), st.booleans(), st.booleans())


def _fill(shop: Shop, orders: list[tuple[bool, str, bool, bool]]) -> None:
    """One user per order, so each order's holds are its own."""
    for i, (due, hold, large, item) in enumerate(orders, start=1):
        shop.user(i)
        shop.insert("orders", dict(id=i, user_id=i, completed_at=OLD if due else RECENT,
                                   total=500 if large else 10, buyer_name=f"B {i}", shipping="x"))
        if hold != "none":
            shop.insert("legal_holds", dict(id=i, user_id=i,
                                            released_at=datetime(2024, 6, 1) if hold == "released" else None))
        if item:
            shop.insert("order_items", dict(id=i, order_id=i, sku="s"))


def _expected(orders) -> tuple[dict[str, int], int, int]:
    """(protected by first protector, touch, due), from the flags alone."""
    counts: dict[str, int] = {}
    touch = 0
    for due, hold, large, item in orders:
        if not due:
            continue
        first = next((name for name, on in (("hold:litigation", hold == "active"), ("hold:audit", hold != "none"),
                                           ("floor:large-orders", large), ("children:shop.order_items", item))
                      if on), None)
        if first is None:
            touch += 1
        else:
            counts[first] = counts.get(first, 0) + 1
    return counts, touch, sum(1 for o in orders if o[0])


def _check(shop: Shop, orders) -> None:
    out = outcome(shop.run(shop.policy(POLICY), dry_run=True, now=NOW), "orders-purge")
    counts, touch, due = _expected(orders)
    assert protected(out) == counts
    assert (out.touch, out.due) == (touch, due)
    assert out.due == out.protected_total + out.touch + out.unchanged + out.remaining


def test_a_row_under_several_protectors_is_counted_once_under_the_first(shop):
    orders = [
        (True, "active", True, True),       # every protector: litigation
        (True, "active", False, False),     # both holds: litigation
        (True, "released", True, True),     # audit, floor and children: audit
        (True, "none", True, True),         # floor and children: floor
        (True, "none", False, True),        # children only
        (True, "none", False, False),       # nothing: touched
        (False, "active", True, True),      # not due: counted nowhere
    ]
    _fill(shop, orders)
    _check(shop, orders)
    assert [p.name for p in outcome(shop.run(shop.policy(POLICY), dry_run=True, now=NOW), "orders-purge").protected] \
        == ["litigation", "audit", "large-orders", "shop.order_items"]       # precedence order


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ORDER, max_size=12))
def test_attribution_follows_precedence_for_any_mix_of_protectors(sqlite_shop, orders):
    sqlite_shop.md.drop_all(sqlite_shop.engine)
    sqlite_shop.md.create_all(sqlite_shop.engine)
    _fill(sqlite_shop, orders)
    _check(sqlite_shop, orders)
