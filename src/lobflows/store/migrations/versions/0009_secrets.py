"""secrets vault: secrets, secret_versions, secret_usage

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    time = sa.Float(precision=53)
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    op.create_table(
        "secrets",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("rotate_every_days", sa.Integer(), nullable=True),
        sa.Column("created_at", time, nullable=False),
        sa.Column("rotated_at", time, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secrets")),
    )
    op.create_table(
        "secret_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("created_at", time, nullable=False),
        sa.Column("superseded_at", time, nullable=True),
        sa.Column("grace_until", time, nullable=True),
        sa.ForeignKeyConstraint(
            ["name"],
            ["secrets.name"],
            name=op.f("fk_secret_versions_name"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_versions")),
        sa.UniqueConstraint(
            "name", "version", name=op.f("uq_secret_versions_name_version")
        ),
    )
    op.create_table(
        "secret_usage",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("used_by", json, nullable=True),
        sa.Column("last_used_at", time, nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_secret_usage")),
    )


def downgrade() -> None:
    op.drop_table("secret_usage")
    op.drop_table("secret_versions")
    op.drop_table("secrets")
