"""What a run tells its subscribers (:meth:`retention.runtime.Run.subscribe`), in order.

``RunStarted`` comes before anything is touched; ``BatchIntent`` inside each
batch's transaction, before it commits (a subscriber that raises rolls the
batch back); ``BatchCommitted`` after; ``PartitionIntent`` and
``PartitionCommitted`` likewise around a whole partition detached or dropped; ``RuleEnded`` per rule; ``RunEnded``
on every way out.  ``RunAbandoned`` names an earlier run whose lease this
one took over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from retention.plan import RulePlan
from retention.report.model import PartitionOutcome, Report, RuleOutcome

if TYPE_CHECKING:
    from retention.runtime import Run


@dataclass(frozen=True)
class RunStarted:
    run: "Run"


@dataclass(frozen=True)
class RunAbandoned:
    """A run found the lease of an earlier one that died without ending (SIGKILL, a lost host)."""

    run: "Run"
    abandoned_run_id: str
    reason: str


@dataclass(frozen=True)
class BatchIntent:
    """A batch's statements ran; it is about to commit.  A subscriber that raises rolls it back."""

    run: "Run"
    plan: RulePlan
    batch: int
    lo: Any
    hi: Any
    touched: int
    cascaded: dict


@dataclass(frozen=True)
class BatchCommitted:
    run: "Run"
    plan: RulePlan
    batch: int
    lo: Any
    hi: Any
    touched: int
    cascaded: dict


@dataclass(frozen=True)
class PartitionIntent:
    """A whole partition is detached (and dropped) in a transaction about to commit; a subscriber
    that raises rolls it back.  ``partition.status`` is what it becomes (``dropped``, ``detached``)."""

    run: "Run"
    plan: RulePlan
    partition: PartitionOutcome


@dataclass(frozen=True)
class PartitionCommitted:
    run: "Run"
    plan: RulePlan
    partition: PartitionOutcome


@dataclass(frozen=True)
class RuleCounted:
    """A rule is counted and guarded, nothing touched yet: ``outcome.guard.rows`` is what it may touch."""

    run: "Run"
    plan: RulePlan
    outcome: RuleOutcome


@dataclass(frozen=True)
class RuleEnded:
    run: "Run"
    outcome: RuleOutcome


@dataclass(frozen=True)
class RunEnded:
    run: "Run"
    report: Report
    outcome: str


Event = (RunStarted | RunAbandoned | RuleCounted | BatchIntent | BatchCommitted | PartitionIntent | PartitionCommitted
         | RuleEnded | RunEnded)
