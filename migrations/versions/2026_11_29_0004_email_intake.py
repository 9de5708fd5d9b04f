"""Requests by e-mail: Message-ID hash, one-time confirmation link, review reason; email_intake.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
NOT_NULL = {
    "message_id_hash": "message_id_hash IS NOT NULL",
    "confirm_token_hash": "confirm_token_hash IS NOT NULL",
}


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("message_id_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("confirm_token_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("confirm_expires_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("confirmed_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("review_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("confirm_recipients", JSON, nullable=True))
    for column, where in NOT_NULL.items():
        op.create_index(
            f"uq_deletion_requests_{column}",
            "deletion_requests",
            [column],
            unique=True,
            postgresql_where=sa.text(where),
            sqlite_where=sa.text(where),
        )
    op.create_table(
        "email_intake",
        sa.Column("message_id_hash", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.Uuid(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["deletion_requests.id"],
            name=op.f("fk_email_intake_request_id_deletion_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id_hash", name=op.f("pk_email_intake")),
    )
    op.create_index(op.f("ix_email_intake_request_id"), "email_intake", ["request_id"])


def downgrade() -> None:
    op.drop_table("email_intake")
    for column in NOT_NULL:
        op.drop_index(f"uq_deletion_requests_{column}", table_name="deletion_requests")
    with op.batch_alter_table("deletion_requests") as batch:
        for column in (
            "confirm_recipients",
            "review_reason",
            "confirmed_at",
            "confirm_expires_at",
            "confirm_token_hash",
            "message_id_hash",
        ):
            batch.drop_column(column)
