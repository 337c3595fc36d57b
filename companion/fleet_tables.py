"""The fleet's tables (inventory, MQTT accounts, updates): their own metadata, migrated with
the companion's. Apart from companion/fleet.py so that companion/fleet_view.py, which joins the
inventory with the registry and telemetry, reads them without importing the fleet store (which
imports it)."""

from sqlalchemy import (
    Column,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

fleet_metadata = MetaData()

inventory = Table(
    "fleet_inventory",
    fleet_metadata,
    Column("device", String(32), primary_key=True),  # derived from the chip's unique id
    Column("site", String(32), nullable=False),
    Column("name", String(32), nullable=False),
    Column("label", String(64), nullable=False),  # the factory label on the box
    Column("profile", String(32), nullable=False),
    Column("target", String(16), nullable=False),
    Column("version", String(64)),
    Column("provisioned_at", Float, nullable=False),
    UniqueConstraint("label", name="uq_fleet_inventory_label"),
)

mqtt_accounts = Table(
    "fleet_mqtt_accounts",
    fleet_metadata,
    Column("username", String(64), primary_key=True),
    Column("site", String(32)),
    Column("device", String(32)),
    Column("password_hash", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # the clustered broker's format of the same password (migration 0007; docs/cluster.md)
    Column("rabbitmq_hash", Text),
)

updates = Table(
    "fleet_updates",
    fleet_metadata,
    Column("id", String(16), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("site", String(32), nullable=False),
    Column("percent", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # active | paused
    Column("manifest", LargeBinary, nullable=False),  # the exact signed bytes
    Column("signature", Text, nullable=False),  # hex
    Column("created_at", Float, nullable=False),
)

update_files = Table(
    "fleet_update_files",
    fleet_metadata,
    Column("update_id", String(16), primary_key=True),
    Column("path", String(255), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

update_status = Table(
    "fleet_update_status",
    fleet_metadata,
    Column("update_id", String(16), primary_key=True),
    Column("site", String(32), primary_key=True),
    Column("device", String(32), primary_key=True),
    Column("state", String(16), nullable=False),  # applied | confirmed | rolled_back | refused
    Column("detail", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)
