"""Drop deletion_tasks' index on request_id: the unique (request_id, purger) leads with it.

Every look-up of a request's tasks (and the foreign key's cascade) is served by the unique
index; the second index only cost each of intake's four task rows one more index insert.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index(op.f("ix_deletion_tasks_request_id"), table_name="deletion_tasks")


def downgrade() -> None:
    op.create_index(op.f("ix_deletion_tasks_request_id"), "deletion_tasks", ["request_id"])
