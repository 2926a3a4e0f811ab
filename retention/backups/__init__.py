"""Backups: stores, the rotation policy (restic ``forget`` semantics) and ``gone_by``.

- :mod:`.naming`: a backup's time from its name (``pattern``);
- :mod:`.stores`: a local directory or ``s3://bucket/prefix``;
- :mod:`.policy`: which backups to keep, and why;
- :mod:`.rotate`: inventory, refusals, removal, the report;
- :mod:`.expiry`: ``gone_by`` for the erasure ledger.
"""

from retention.backups.expiry import erasure_gone_by, gone_by, policy_warnings
from retention.backups.policy import Backup, Decision, Policy, apply_policy
from retention.backups.rotate import RotationReport, SetResult, rotate, rotate_set, take_inventory
from retention.backups.stores import LocalStore, S3Store, StoreError, open_store

__all__ = ["Backup", "Decision", "LocalStore", "Policy", "RotationReport", "S3Store", "SetResult", "StoreError",
           "apply_policy", "erasure_gone_by", "gone_by", "open_store", "policy_warnings", "rotate", "rotate_set",
           "take_inventory"]
