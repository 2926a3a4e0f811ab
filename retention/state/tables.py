"""The state store's tables: one ``MetaData``, every table the job owns.

A new table (the erasure ledger, the request queue, the recipients' outbox)
is added here *and* by a new step in :mod:`retention.state.migrations`, never
by editing a step that has shipped: a store created by an older release is
brought forward by running the steps it has not seen.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

#: one row: the schema version the store is at (see migrations.STEPS)
schema_version = sa.Table(
    "retention_schema", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),   # always 1
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.String(40), nullable=False),
)

#: who runs against an application database, until when (SQLite databases have no
#: session locks; for PostgreSQL the row only names the holder of the advisory lock)
leases = sa.Table(
    "retention_leases", metadata,
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("acquired_at", sa.String(40), nullable=False),
    sa.Column("expires_at", sa.String(40), nullable=False),
)

#: the hash-chained audit log (retention.audit): one row per entry, in chain order
audit = sa.Table(
    "retention_audit", metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=False),
    sa.Column("run_id", sa.String(40), nullable=False, index=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("at", sa.String(40), nullable=False, index=True),
    sa.Column("body", sa.Text, nullable=False),          # canonical JSON
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)
