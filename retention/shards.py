"""Sharded runs: ``retention run --shard I/N`` does a deterministic, disjoint 1/N of a run.

N processes (or the N pods of a Kubernetes Indexed Job) each run every rule
on their slice of the rule table's rows, and together do what one run does.

**The slice is a pure function of the primary key**, added to the rule's
``due`` predicate (so to every count and every batch), never to the batch
loop:

* a single integer key: ``((key % N) + N) % N = I`` (the sum keeps negative
  keys in range on engines whose ``%`` takes the dividend's sign);
* any other key (text, uuid, several columns): the first 32 bits of the MD5
  of the key's text (columns joined by a unit separator), modulo N, computed
  by the database (:meth:`retention.dialects.base.DialectImpl.stable_hash`).

A key never changes while a run goes on, so a row belongs to exactly one
shard from the first count to the last batch, whichever shard starts first.
Key *ranges* were the alternative: their boundaries depend on the rows
present when each shard starts, and shards started seconds apart would
disagree about them.  Modulo also spreads recent and old rows alike, where a
range split gives the shard with the oldest keys nearly all the due rows.

**Cascades follow the parent's slice**: a batch's children are found from
its locked parent keys, so a child is handled by the shard of the row whose
delete reaches it.

**The guard decides for the whole rule.**  Each shard also counts what the
whole rule would touch and checks ``max_rows`` / ``max_fraction`` against
that, so a guard that would trip a single run trips in every shard, and
none touches anything.

**Rules that cross** are the limit of this design.  Shards do not wait for
each other between rules, so where one rule changes a table another reads
or changes (besides the rule table they share, whose rows are sliced
alike), a shard may reach a row of the later rule before another shard's
earlier rule has reached the rows it depends on.  Every action is still
one the policy calls for at that moment, and each batch checks holds,
floors and blocking children again, but the numbers can differ from one
run's (a parent still blocked waits for the next run; a row a later rule
changed may then be deleted by an earlier rule's cascade).
:func:`crossings` names such pairs; a sharded run logs them.

**Run-wide work** (erasure requests and the recipients' outbox) is done by
shard 0 only, after its rules, as a single run does it after its rules.
Backups are rotated by their own verb, never by a run.

**Locks** (:mod:`retention.locks`): shard I of N excludes itself and any
full run, and shards of another N (whose slices overlap this one's).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import sqlalchemy as sa

from retention.anonymize.base import column_kind
from retention.errors import ConfigError
from retention.plan import RulePlan

_FORM = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
#: more shards than this is a typo, not a deployment (and keeps lock keys in range)
MAX_SHARDS = 4096


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def runs_requests(self) -> bool:
        """Whether this shard does the run-wide work (erasure requests, outbox): shard 0 only."""
        return self.index == 0

    def slice(self, plan: RulePlan) -> RulePlan:
        """``plan`` restricted to this shard's rows; ``whole`` keeps the unsliced plan for the guard."""
        mine = slice_predicate(plan, self)
        return dataclasses.replace(plan, due=sa.and_(plan.due, mine), conditions=sa.and_(plan.conditions, mine),
                                   whole=plan)


def parse_shard(text: str) -> Shard:
    """``"I/N"`` as a :class:`Shard`; anything else is a ConfigError (exit 2).

    >>> parse_shard("2/4")
    Shard(index=2, count=4)
    """
    m = _FORM.match(text or "")
    if not m:
        raise ConfigError(f"'{text}' is not I/N (shard I of N, I from 0 to N-1; on a Kubernetes Indexed Job "
                          f"write $(JOB_COMPLETION_INDEX)/N)", where="--shard")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ConfigError(f"'{text}': N must be between 1 and {MAX_SHARDS}", where="--shard")
    if index >= count:
        raise ConfigError(f"'{text}': I must be between 0 and {count - 1} (shards are numbered from 0, as "
                          f"JOB_COMPLETION_INDEX is)", where="--shard")
    return Shard(index, count)


def slice_predicate(plan: RulePlan, shard: Shard) -> sa.ColumnElement:
    """SQL true for exactly the rows of ``plan``'s table in ``shard``: a function of the key alone."""
    cols = plan.pk_columns
    n = sa.literal(shard.count, sa.Integer)
    if len(cols) == 1 and column_kind(cols[0].type) == "integer":
        bucket = ((cols[0] % n) + n) % n
    else:
        bucket = plan.impl.stable_hash([sa.cast(c, sa.String) for c in cols])
        if bucket is None:
            raise ConfigError(f"the {plan.impl.name} database of table '{plan.rule.table}' cannot split its key "
                              f"into shards", where=f"rule '{plan.rule.name}'", key="--shard")
        bucket = bucket % n
    return bucket == sa.literal(shard.index, sa.Integer)


def crossings(plans: list[RulePlan]) -> list[tuple[str, str, list[str]]]:
    """Pairs of rules whose order matters across shards: (rule, other rule, tables they meet in).

    A pair crosses when one changes a table the other reads or changes,
    other than the rule table both act on (a row of it is in one slice for both).
    """
    from retention.commands import _changes, _reads
    found = []
    for i, a in enumerate(plans):
        for b in plans[i + 1:]:
            if a.table.db != b.table.db:
                continue
            shared = {a.table.key} & {b.table.key}
            meet = ((_changes(a) & (_reads(b) | _changes(b))) | (_changes(b) & (_reads(a) | _changes(a)))) - shared
            if meet:
                found.append((a.rule.name, b.rule.name, sorted(meet)))
    return found
