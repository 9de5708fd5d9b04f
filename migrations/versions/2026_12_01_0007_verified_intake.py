"""Unverified requests stand apart from verified ones; deauthorize callbacks recorded.

- ``uq_deletion_requests_open_subject`` covers only verified open requests (``pending``,
  ``running``); ``uq_deletion_requests_unverified_subject`` allows one unverified request
  (``awaiting_confirmation`` / ``needs_review``) per kind, subject and status. A REST or
  Meta request is never answered with an e-mail's unverified one.
- ``meta_deauthorizations``: verified deauthorize callbacks, expanded by the worker.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
OPEN = sa.text("status IN ('awaiting_confirmation', 'needs_review', 'pending', 'running')")
VERIFIED_OPEN = sa.text("status IN ('pending', 'running')")
UNVERIFIED = sa.text("status IN ('awaiting_confirmation', 'needs_review')")


def _open_subject_index(where: sa.TextClause) -> None:
    op.create_index(
        "uq_deletion_requests_open_subject",
        "deletion_requests",
        ["kind", "subject_key"],
        unique=True,
        postgresql_where=where,
        sqlite_where=where,
    )


def upgrade() -> None:
    op.drop_index("uq_deletion_requests_open_subject", table_name="deletion_requests")
    _open_subject_index(VERIFIED_OPEN)
    op.create_index(
        "uq_deletion_requests_unverified_subject",
        "deletion_requests",
        ["kind", "subject_key", "status"],
        unique=True,
        postgresql_where=UNVERIFIED,
        sqlite_where=UNVERIFIED,
    )
    op.create_table(
        "meta_deauthorizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("replay_key", sa.String(length=64), nullable=False),
        sa.Column("family", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=True),
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("issued_at", TIMESTAMP, nullable=True),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("run_after", TIMESTAMP, nullable=True),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", TIMESTAMP, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("expanded_at", TIMESTAMP, nullable=True),
        sa.Column("disconnects", sa.Integer(), nullable=True),
        sa.Column("skipped_reconnected", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meta_deauthorizations")),
        sa.UniqueConstraint("replay_key", name=op.f("uq_meta_deauthorizations_replay_key")),
    )
    op.create_index(
        op.f("ix_meta_deauthorizations_run_after"), "meta_deauthorizations", ["run_after"]
    )


def downgrade() -> None:
    op.drop_table("meta_deauthorizations")
    op.drop_index("uq_deletion_requests_unverified_subject", table_name="deletion_requests")
    op.drop_index("uq_deletion_requests_open_subject", table_name="deletion_requests")
    # Fails while a subject has an unverified and a verified open request at once: close
    # one of them first.
    _open_subject_index(OPEN)
