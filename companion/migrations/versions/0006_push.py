"""Web Push subscriptions: one row per browser a user asked to be notified on (issue 15).

`endpoint` is the push service's URL for that browser; `p256dh` and `auth` are the browser's
keys the companion encrypts each message to (RFC 8291). A push service answering 404 or 410
means the browser dropped the subscription: the row goes; so does logging out of the session
that subscribed.

Revision ID: 0006_push
Revises: 0005_sessions
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_push"
down_revision = "0005_sessions"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "push_subscriptions",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column(
            "user_id", sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("endpoint_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("p256dh", sa.String(128), nullable=False),
        sa.Column("auth", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_sent_at", sa.Float),
        sa.Column("failures", sa.Integer, nullable=False, server_default="0"),
        # the login session that subscribed (its id's SHA-256): logging out there unsubscribes
        sa.Column("session_hash", sa.String(64)),
    )
    op.create_index("ix_push_subscriptions_user", "push_subscriptions", ["user_id"])


def downgrade() -> None:
    op.drop_table("push_subscriptions")
