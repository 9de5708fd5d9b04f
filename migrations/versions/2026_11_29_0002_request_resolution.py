"""Record what a request's subject resolved to (raw until minimised, and as keyed hashes).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("resolution", JSON, nullable=True))
        batch.add_column(sa.Column("resolution_digest", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_column("resolution_digest")
        batch.drop_column("resolution")
