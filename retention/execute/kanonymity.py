"""The k-anonymity check of an anonymize rule (``[rules.check]``).

After a rule has anonymized its rows, the rows it covers are grouped by the
check's quasi-identifiers (the columns that, combined, could single a person
out: birth year, postcode prefix, gender...).  Each group is an equivalence
class; the check passes when the smallest has at least ``k`` rows.  Only
sizes leave the database: never a value.

The rows it covers are those the rule marked (``mark``), or, without a mark,
those it is due to anonymize and nothing protects: what it anonymized, this
run or an earlier one.  A sharded run checks the whole rule's rows, so every
shard reports the same verdict once all are done.  A plain dry run has
anonymized nothing, so it does not judge; ``--simulate`` does, on the values
the run would write.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retention.plan import RulePlan


def not_judged(plan: RulePlan) -> dict:
    """The check as a plain dry run reports it: named, not evaluated."""
    check = plan.rule.check
    return {"k": check.k, "quasi_identifiers": list(check.quasi_identifiers), "evaluated": False,
            "passed": None, "smallest_class": None, "classes": None, "rows": None}


def k_anonymity(conn: Connection, plan: RulePlan) -> dict:
    """Judge the rule's rows as they stand: the smallest class, how many classes and rows, passed or not."""
    whole = plan.whole or plan
    rule, t = whole.rule, whole.table.table
    covered = t.c[rule.mark].is_not(None) if rule.mark else whole.clean
    sizes = (sa.select(sa.func.count().label("n")).select_from(t).where(covered)
             .group_by(*(t.c[c] for c in rule.check.quasi_identifiers)).subquery())
    smallest, classes, rows = conn.execute(
        sa.select(sa.func.min(sizes.c.n), sa.func.count(), sa.func.sum(sizes.c.n))).one()
    smallest = None if smallest is None else int(smallest)
    return {"k": rule.check.k, "quasi_identifiers": list(rule.check.quasi_identifiers), "evaluated": True,
            "passed": smallest is None or smallest >= rule.check.k, "smallest_class": smallest,
            "classes": int(classes), "rows": int(rows or 0)}
