"""Fleet tables (IT): inventory of factory labels, per-device MQTT accounts, signed over-the-air
updates, their files and per-device status (companion/fleet.py).

Before this migration the fleet module created these tables itself at start-up; a database from
that time already has them, so each is created only where it is missing.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = (
    "fleet_inventory",
    "fleet_mqtt_accounts",
    "fleet_updates",
    "fleet_update_files",
    "fleet_update_status",
)


def upgrade() -> None:
    have = set(sa.inspect(op.get_bind()).get_table_names())
    if "fleet_inventory" not in have:
        op.create_table(
            "fleet_inventory",
            sa.Column("device", sa.String(32), primary_key=True),
            sa.Column("site", sa.String(32), nullable=False),
            sa.Column("name", sa.String(32), nullable=False),
            sa.Column("label", sa.String(64), nullable=False),
            sa.Column("profile", sa.String(32), nullable=False),
            sa.Column("target", sa.String(16), nullable=False),
            sa.Column("version", sa.String(64)),
            sa.Column("provisioned_at", sa.Float, nullable=False),
            sa.UniqueConstraint("label", name="uq_fleet_inventory_label"),
        )
    if "fleet_mqtt_accounts" not in have:
        op.create_table(
            "fleet_mqtt_accounts",
            sa.Column("username", sa.String(64), primary_key=True),
            sa.Column("site", sa.String(32)),
            sa.Column("device", sa.String(32)),
            sa.Column("password_hash", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
    if "fleet_updates" not in have:
        op.create_table(
            "fleet_updates",
            sa.Column("id", sa.String(16), primary_key=True),
            sa.Column("version", sa.String(64), nullable=False),
            sa.Column("site", sa.String(32), nullable=False),
            sa.Column("percent", sa.Integer, nullable=False),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("manifest", sa.LargeBinary, nullable=False),
            sa.Column("signature", sa.Text, nullable=False),
            sa.Column("created_at", sa.Float, nullable=False),
        )
    if "fleet_update_files" not in have:
        op.create_table(
            "fleet_update_files",
            sa.Column("update_id", sa.String(16), primary_key=True),
            sa.Column("path", sa.String(255), primary_key=True),
            sa.Column("sha256", sa.String(64), nullable=False),
            sa.Column("data", sa.LargeBinary, nullable=False),
        )
    if "fleet_update_status" not in have:
        op.create_table(
            "fleet_update_status",
            sa.Column("update_id", sa.String(16), primary_key=True),
            sa.Column("site", sa.String(32), primary_key=True),
            sa.Column("device", sa.String(32), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False),
            sa.Column("detail", sa.Text, nullable=False),
            sa.Column("updated_at", sa.Float, nullable=False),
        )


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)
