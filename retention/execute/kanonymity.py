"""The k-anonymity check of an anonymize rule (``[rules.check]``).

After a rule has anonymized its rows, the rows it covers are grouped by the
check's quasi-identifiers (the columns that, combined, could single a person
out: birth year, postcode prefix, gender...).  Each group is an equivalence
class; the check passes when the smallest has at least ``k`` rows.  Only
sizes leave the database: never a value.

The rows it covers are those the rule marked (a check needs ``mark``): what
it anonymized, this run or an earlier one.  It judges only where the rule's
rows are all as a run leaves them: a plain dry run has anonymized nothing
(``--simulate`` judges the values the run would write), a rule whose guard
tripped or that failed stopped short, and one shard of a sharded run ends
while the others may still be anonymizing.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.plan import RulePlan


#: why a check was not judged, as reports say it
NOT_JUDGED = {
    "dry_run": "a dry run anonymizes nothing; --simulate judges the values a run writes",
    "stopped": "the rule did not run to its end",
    "shard": "a shard ends while the others may still be anonymizing; an unsharded run or "
             "plan --simulate judges the whole rule",
}


def not_judged(plan: RulePlan, why: str) -> dict:
    """The check, named and not evaluated; ``why`` is a key of :data:`NOT_JUDGED`."""
    check = plan.rule.check
    return {"k": check.k, "quasi_identifiers": list(check.quasi_identifiers), "evaluated": False,
            "passed": None, "smallest_class": None, "classes": None, "rows": None, "not_judged": why}


def k_anonymity(conn: Connection, plan: RulePlan) -> dict:
    """Judge the rule's rows as they stand: the smallest class, how many classes and rows, passed or not."""
    rule, t = plan.rule, plan.table.table
    sizes = (sa.select(sa.func.count().label("n")).select_from(t).where(t.c[rule.mark].is_not(None))
             .group_by(*(t.c[c] for c in rule.check.quasi_identifiers)).subquery())
    smallest, classes, rows = conn.execute(
        sa.select(sa.func.min(sizes.c.n), sa.func.count(), sa.func.sum(sizes.c.n))).one()
    smallest = None if smallest is None else int(smallest)
    return {"k": rule.check.k, "quasi_identifiers": list(rule.check.quasi_identifiers), "evaluated": True,
            "passed": smallest is None or smallest >= rule.check.k, "smallest_class": smallest,
            "classes": int(classes), "rows": int(rows or 0), "not_judged": None}
