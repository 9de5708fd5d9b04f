"""Unverified requests stand apart from verified ones.

- ``uq_deletion_requests_open_subject`` covers only verified open requests (``pending``,
  ``running``); ``uq_deletion_requests_unverified_subject`` allows one unverified request
  (``awaiting_confirmation`` / ``needs_review``) per kind, subject and status. A REST or
  Meta request is never answered with an e-mail's unverified one.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

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


def downgrade() -> None:
    op.drop_index("uq_deletion_requests_unverified_subject", table_name="deletion_requests")
    op.drop_index("uq_deletion_requests_open_subject", table_name="deletion_requests")
    # Fails while a subject has an unverified and a verified open request at once: close
    # one of them first.
    _open_subject_index(OPEN)
