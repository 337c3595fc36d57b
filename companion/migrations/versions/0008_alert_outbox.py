"""Alerts publish through an outbox: `alerts.publish_due` is set in the transaction of every
change managers' devices must hear of (opened, acknowledged, resolved, re-notified, escalated)
and cleared once the broker took the message. A replica killed between its commit and its
publish leaves it set; another replica's alert watcher publishes it (companion/alerts.py).
Alerts already in the database were announced when they changed: NULL.

Revision ID: 0008_alert_outbox
Revises: 0007_cluster_hash
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_alert_outbox"
down_revision = "0007_cluster_hash"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alerts", sa.Column("publish_due", sa.Float, nullable=True))


def downgrade() -> None:
    op.drop_column("alerts", "publish_due")
