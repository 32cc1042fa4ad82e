"""scenarios (voice menus) and the group of each call record

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pomelo.storage.base

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "scenarios",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column(
            "definition",
            sa.JSON().with_variant(sa.JSON(none_as_null=True), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", pomelo.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_scenarios_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scenarios")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_scenarios_tenant_id_name")),
    )
    op.create_index(op.f("ix_scenarios_tenant_id"), "scenarios", ["tenant_id"], unique=False)
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.add_column(sa.Column("group_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_call_records_group_id"), ["group_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("call_records") as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_records_group_id"))
        batch_op.drop_column("group_id")
    op.drop_index(op.f("ix_scenarios_tenant_id"), table_name="scenarios")
    op.drop_table("scenarios")
