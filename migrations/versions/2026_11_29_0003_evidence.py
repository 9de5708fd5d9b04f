"""Evidence without personal data: confirmations, minimisation, subject hashes, deadlines.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("datamap_version", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("webhook_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("email_status", sa.String(length=16), nullable=True))
        batch.add_column(
            sa.Column("notify_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("minimised_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("deadline_warned_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("overdue_warned_at", TIMESTAMP, nullable=True))
    op.create_table(
        "deletion_subject_hashes",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_deletion_subject_hashes_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "hash", name=op.f("pk_deletion_subject_hashes")),
    )
    op.create_index(op.f("ix_deletion_subject_hashes_hash"), "deletion_subject_hashes", ["hash"])


def downgrade() -> None:
    op.drop_table("deletion_subject_hashes")
    with op.batch_alter_table("deletion_requests") as batch:
        for column in (
            "overdue_warned_at",
            "deadline_warned_at",
            "minimised_at",
            "notify_attempts",
            "email_status",
            "webhook_status",
            "datamap_version",
        ):
            batch.drop_column(column)
