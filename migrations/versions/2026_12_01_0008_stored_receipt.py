"""The signed receipt, made when a request settles (and again when it is minimised) and
stored on the request: a GET returns it as it was issued. It holds counts and facts, no
personal data, so minimisation keeps it.

Plain JSON on every backend (not JSONB): the document is kept as it was signed.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("receipt", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_column("receipt")
