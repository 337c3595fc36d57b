"""Alerts with an audit trail, sites with contacts and configuration, users and API tokens.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "sites",
        sa.Column("site", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(128)),
        sa.Column("first_contact", sa.String(128)),
        sa.Column("second_contact", sa.String(128)),
        sa.Column("config", sa.Text),
    )
    op.create_table(
        "alerts",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("event_id", sa.BigInteger),
        sa.Column("conv", sa.String(16)),
        sa.Column("opened_at", sa.Float, nullable=False),
        sa.Column("acked_at", sa.Float),
        sa.Column("acked_by", sa.String(64)),
        sa.Column("resolved_at", sa.Float),
        sa.Column("resolved_by", sa.String(64)),
        sa.Column("notified_at", sa.Float, nullable=False),
        sa.Column("notify_count", sa.Integer, nullable=False),
        sa.Column("escalated_at", sa.Float),
    )
    op.create_index("ix_alerts_site_state", "alerts", ["site", "state"])
    op.create_table(
        "alert_audit",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "alert_id",
            sa.BigInteger,
            sa.ForeignKey("alerts.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("ix_alert_audit_alert", "alert_audit", ["alert_id"])
    op.create_table(
        "users",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("sites", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
    op.drop_table("users")
    op.drop_table("alert_audit")
    op.drop_table("alerts")
    op.drop_table("sites")
