"""Requests from e-mail: the selection a confirmation or a reviewer saw (pinned), and what
an operator's review shows (what the message named, the candidates); both personal data,
cleared when the request is minimised.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.add_column(sa.Column("pinned", JSON, nullable=True))
        batch.add_column(sa.Column("review", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deletion_requests") as batch:
        batch.drop_column("review")
        batch.drop_column("pinned")
