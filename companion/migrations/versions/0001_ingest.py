"""Ingest: events (idempotent on site/device/boot/seq), dead letters, device registry.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("site", sa.String(32), nullable=False),
        sa.Column("device", sa.String(32), nullable=False),
        sa.Column("boot", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("up_ms", sa.BigInteger, nullable=False),
        sa.Column("ts", sa.Float),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("conv", sa.String(16)),
        sa.Column("cue", sa.String(16)),
        sa.Column("level", sa.Integer),
        sa.Column("score", sa.Float),
        sa.Column("conv_s", sa.Float),
        sa.Column("stress_s", sa.Float),
        sa.Column("ttd_s", sa.Float),
        sa.Column("reason", sa.String(32)),
        sa.Column("phase", sa.String(8)),
        sa.Column("cues", sa.Integer),
        sa.Column("peak", sa.Float),
        sa.Column("action", sa.String(8)),
        sa.UniqueConstraint("site", "device", "boot", "seq", name="uq_events_origin"),
    )
    op.create_index("ix_events_site_id", "events", ["site", "id"])
    op.create_index("ix_events_received_at", "events", ["received_at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(256), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
    )
    op.create_index("ix_dead_letters_received_at", "dead_letters", ["received_at"])
    op.create_table(
        "devices",
        sa.Column("site", sa.String(32), primary_key=True),
        sa.Column("device", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float, nullable=False),
        sa.Column("status_at", sa.Float),
        sa.Column("tele", sa.Text),
        sa.Column("tele_at", sa.Float),
        sa.Column("firmware", sa.String(64)),
        sa.Column("model", sa.String(64)),
        sa.Column("config", sa.Text),
        sa.Column("silent", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("devices")
    op.drop_table("dead_letters")
    op.drop_table("events")
