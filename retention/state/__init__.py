"""The job's own tables, outside the application databases (``settings.state_url``).

A restore of an application database must never roll back what the job
remembers (its audit log, and next its erasure ledger, request queue and
recipients' outbox), so these tables live in a database of their own: by
default a SQLite file beside the policy file.  See :mod:`retention.state.store`.
"""

from retention.state.store import StateStore, StateStoreError, open_store, resolve_state_url

__all__ = ["StateStore", "StateStoreError", "open_store", "resolve_state_url"]
