"""The model registry: registered versions, promotions and rollbacks, the current-version pointer.

Revision ID: 0002_registry
Revises: 0001_corrections
"""
import sqlalchemy as sa
from alembic import op

revision = "0002_registry"
down_revision = "0001_corrections"
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("registered_by", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("record", sa.JSON(), nullable=False),
    )
    op.create_table(
        "registry_events",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), sa.ForeignKey("model_versions.version"), nullable=False),
        sa.Column("previous_version", sa.String(64), sa.ForeignKey("model_versions.version"), nullable=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("forced", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("comparison", sa.JSON(), nullable=True),
        sa.Column("switch_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "registry_pointer",
        sa.Column("name", sa.String(16), primary_key=True),
        sa.Column("version", sa.String(64), sa.ForeignKey("model_versions.version"), nullable=False),
        sa.Column("previous_version", sa.String(64), sa.ForeignKey("model_versions.version"), nullable=True),
        sa.Column("switch_at", sa.DateTime(), nullable=False),
        sa.Column("event_id", BigId, sa.ForeignKey("registry_events.id"), nullable=False),
    )


def downgrade() -> None:
    for table in ("registry_pointer", "registry_events", "model_versions"):
        op.drop_table(table)
