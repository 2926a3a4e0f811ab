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

#: erasure requests filed with ``[[requests]] table = "state.requests"`` (retention.requests.queue);
#: ``subject_key`` is cleared once the request is done, ``subject_hash`` (keyed) stays
requests = sa.Table(
    "retention_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("queue", sa.String(200), nullable=False),           # the [[requests]] entry's name
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("subject_key", sa.String(500)),
    sa.Column("subject_hash", sa.String(80)),
    sa.Column("received_at", sa.String(40), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, index=True),   # pending | done | partial | rejected
    sa.Column("reason", sa.Text),
    sa.Column("completed_at", sa.String(40)),
)

#: the erasure ledger (retention.ledger): one row per erasure of a subject, never a key in clear
ledger = sa.Table(
    "retention_ledger", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), nullable=False),
    sa.Column("request", sa.String(300), nullable=False),          # "<queue>#<request id>" or "replay"
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("database", sa.String(200), nullable=False),
    sa.Column("subject_hash", sa.String(80), nullable=False, index=True),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),            # done | partial
    sa.Column("tables", sa.Text, nullable=False),                  # JSON {table: rows}
    sa.Column("protected", sa.Text, nullable=False),               # JSON [{kind, name, rows, until}]
    sa.Column("erased_at", sa.String(40), nullable=False, index=True),
    sa.Column("gone_by", sa.String(40)),
    sa.Column("gone_by_reason", sa.Text),
)

#: notifications to [[recipients]] not yet answered with 2xx (retention.recipients)
outbox = sa.Table(
    "retention_outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("recipient", sa.String(200), nullable=False),
    sa.Column("ledger_id", sa.Integer, nullable=False),
    sa.Column("idempotency_key", sa.String(100), nullable=False, unique=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.String(40), nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.String(40), index=True),
)
