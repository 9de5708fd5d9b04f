"""Legal holds: a held subject's requests wait in ``on_hold``.

- ``legal_holds`` (the raw subject only while active; keyed hashes after release) and
  ``legal_hold_hashes`` (the keyed hash of each identity, what matching reads).
- ``uq_deletion_requests_open_subject`` covers ``on_hold`` too: a request on hold is a
  verified open request, so a second one for the same kind and subject is answered with
  it, and releasing the hold never meets a second ``pending`` one.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMP = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(JSONB(), "postgresql")
VERIFIED_OPEN = sa.text("status IN ('pending', 'running')")
VERIFIED_OPEN_OR_HELD = sa.text("status IN ('pending', 'running', 'on_hold')")


def _open_subject_index(where: sa.TextClause) -> None:
    op.drop_index("uq_deletion_requests_open_subject", table_name="deletion_requests")
    op.create_index(
        "uq_deletion_requests_open_subject",
        "deletion_requests",
        ["kind", "subject_key"],
        unique=True,
        postgresql_where=where,
        sqlite_where=where,
    )


def upgrade() -> None:
    op.create_table(
        "legal_holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject", JSON, nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("released_at", TIMESTAMP, nullable=True),
        sa.Column("released_by", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_legal_holds")),
    )
    op.create_index("ix_legal_holds_created_at_id", "legal_holds", ["created_at", "id"])
    op.create_table(
        "legal_hold_hashes",
        sa.Column("hold_id", sa.Uuid(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["hold_id"],
            ["legal_holds.id"],
            name=op.f("fk_legal_hold_hashes_hold_id_legal_holds"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hold_id", "hash", name=op.f("pk_legal_hold_hashes")),
    )
    op.create_index(op.f("ix_legal_hold_hashes_hash"), "legal_hold_hashes", ["hash"])
    _open_subject_index(VERIFIED_OPEN_OR_HELD)


def downgrade() -> None:
    # Requests on hold wait for nothing once the holds are gone: they run.
    op.execute(
        "UPDATE deletion_requests SET status = 'pending', run_after = CURRENT_TIMESTAMP "
        "WHERE status = 'on_hold'"
    )
    _open_subject_index(VERIFIED_OPEN)
    op.drop_table("legal_hold_hashes")
    op.drop_table("legal_holds")
