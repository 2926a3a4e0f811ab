"""What a rule's execution is asked to do (:class:`ExecOptions`), and what it tells the run (:class:`BatchHooks`)."""

from __future__ import annotations

from dataclasses import dataclass

from retention.plan import RulePlan
from retention.report.model import PartitionOutcome, RuleOutcome


@dataclass
class ExecOptions:
    dry_run: bool = True
    allow_large: bool = False
    force_python: bool = False     # anonymize in Python even where SQL could (tests compare both)
    show_sql: bool = False
    batch_size: int = 5000         # dry-run scans (anonymize in Python) read this many rows at a time
    simulated: bool = False        # executes inside a rolled-back transaction: still a dry run
    workers: int = 1               # batches of one rule run concurrently on this many connections (run only)


class BatchHooks:
    """What the batch loop tells the run around each batch (:class:`retention.runtime.Run`).

    The defaults do nothing.  ``before_commit`` runs inside the batch's
    transaction after its statements: an exception there rolls the batch
    back, which is how a run that cannot write its audit entry touches
    nothing.  ``committed`` runs once the batch is committed.  The loop asks
    ``stop_requested`` before each batch.  ``cascaded`` maps
    ``(child table, "delete" | "detach:<fk>")`` to rows.
    """

    def stop_requested(self) -> bool:
        return False

    def counted(self, plan: RulePlan, out: RuleOutcome) -> None:
        """The rule is counted and guarded, nothing touched yet: a reviewed plan may refuse or cap it here."""

    def before_commit(self, plan: RulePlan, batch: int, lo, hi, touched: int, cascaded: dict) -> None:
        """The batch's statements ran; it commits when this returns."""

    def committed(self, plan: RulePlan, batch: int, lo, hi, touched: int, cascaded: dict,
                  seconds: float | None = None) -> None:
        """The batch is committed; its transaction was open ``seconds``, BEGIN to COMMIT."""

    def partition_intent(self, plan: RulePlan, partition: PartitionOutcome) -> None:
        """A whole partition is detached (and dropped); its transaction commits when this returns."""

    def partition_committed(self, plan: RulePlan, partition: PartitionOutcome) -> None:
        """The partition's transaction is committed."""
