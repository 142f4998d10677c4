"""The corrections store: tokens, corrections, their per-label changes, label suggestions, shared site secrets.

Revision ID: 0001_corrections
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001_corrections"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("operator", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
    )
    op.create_index("ix_api_tokens_active_name", "api_tokens", ["name"], unique=True,
                    sqlite_where=sa.text("revoked_at IS NULL"), postgresql_where=sa.text("revoked_at IS NULL"))
    op.create_table(
        "corrections",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("shown", sa.JSON(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("model_version", sa.String(64), nullable=True),
        sa.Column("face", sa.String(16), nullable=False),
        sa.Column("token_name", sa.String(64), nullable=True),
        sa.Column("client_key", sa.String(80), nullable=False),
        sa.Column("client_ref", sa.String(200), nullable=True),
        sa.UniqueConstraint("client_key", "client_ref", name="uq_corrections_client_ref"),
    )
    op.create_index("ix_corrections_created_at", "corrections", ["created_at"])
    op.create_index("ix_corrections_text_hash", "corrections", ["text_hash"])
    op.create_index("ix_corrections_model_version", "corrections", ["model_version"])
    op.create_index("ix_corrections_client_time", "corrections", ["client_key", "created_at"])
    op.create_table(
        "correction_labels",
        sa.Column("correction_id", BigId, sa.ForeignKey("corrections.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("label", sa.Text(), primary_key=True),
        sa.Column("change", sa.String(9), nullable=False),
    )
    op.create_table(
        "label_suggestions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("correction_id", BigId, sa.ForeignKey("corrections.id", ondelete="CASCADE"), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
    )
    op.create_index("ix_label_suggestions_correction_id", "label_suggestions", ["correction_id"])
    op.create_index("ix_label_suggestions_label", "label_suggestions", ["label"])
    op.create_table(
        "site_secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    for table in ("site_secrets", "label_suggestions", "correction_labels", "corrections", "api_tokens"):
        op.drop_table(table)
