"""One active alert per counter and kind (a partial unique index), so replicas opening an
alert for the same counter at the same moment cannot both succeed.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('open', 'acknowledged')")


def upgrade() -> None:
    op.create_index(
        "uq_alerts_active",
        "alerts",
        ["site", "device", "kind"],
        unique=True,
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )


def downgrade() -> None:
    op.drop_index("uq_alerts_active", table_name="alerts")
