"""The clustered broker's password hash beside Mosquitto's (docs/cluster.md): RabbitMQ cannot
check Mosquitto's PBKDF2 `$7$` hashes, so `calmcue device register` now keeps a second hash of
each new or rotated password in RabbitMQ's own salted SHA-256 format. Accounts made before have
none (NULL): they are left out of the cluster's definitions file until rotated.

Revision ID: 0007_cluster_hash
Revises: 0006_push
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_cluster_hash"
down_revision = "0006_push"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a database whose fleet tables the fleet module made itself (before 0004) may have it
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("fleet_mqtt_accounts")}
    if "rabbitmq_hash" not in have:
        op.add_column("fleet_mqtt_accounts", sa.Column("rabbitmq_hash", sa.Text, nullable=True))


def downgrade() -> None:
    op.drop_column("fleet_mqtt_accounts", "rabbitmq_hash")
