"""Operator notices: ``deletion.failed`` and ``deletion.overdue``, one per event of a
request's log (unique ``event_id``), delivered by e-mail and webhook under a lease and
retried until delivered. No personal data: the payload holds facts about the request.
A partial index finds the few ``failed``/``overdue`` events without reading the log.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

TIMESTAMP = sa.DateTime(timezone=True)
NOTIFIED = "type IN ('failed', 'overdue')"
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operator_notices",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", EVENT_ID, nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("email_status", sa.String(length=16), nullable=True),
        sa.Column("webhook_status", sa.String(length=16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.Column("run_after", TIMESTAMP, nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_operator_notices_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["deletion_events.id"],
            name=op.f("fk_operator_notices_event_id_deletion_events"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_notices")),
        sa.UniqueConstraint("event_id", name=op.f("uq_operator_notices_event_id")),
    )
    op.create_index(
        op.f("ix_operator_notices_request_id"), "operator_notices", ["request_id"], unique=False
    )
    op.create_index(
        op.f("ix_operator_notices_run_after"), "operator_notices", ["run_after"], unique=False
    )
    op.create_index(
        "ix_deletion_events_notified",
        "deletion_events",
        ["request_id"],
        unique=False,
        postgresql_where=sa.text(NOTIFIED),
        sqlite_where=sa.text(NOTIFIED),
    )


def downgrade() -> None:
    op.drop_index("ix_deletion_events_notified", table_name="deletion_events")
    op.drop_index(op.f("ix_operator_notices_run_after"), table_name="operator_notices")
    op.drop_index(op.f("ix_operator_notices_request_id"), table_name="operator_notices")
    op.drop_table("operator_notices")
