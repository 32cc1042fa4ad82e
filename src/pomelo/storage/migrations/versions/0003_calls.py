"""calls: call detail records

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import pomelo.storage.base

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call_records",
        sa.Column("call_id", sa.String(length=255), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("from_number", sa.String(length=64), nullable=False),
        sa.Column("from_name", sa.String(length=100), nullable=True),
        sa.Column("to_number", sa.String(length=64), nullable=False),
        sa.Column("did", sa.String(length=32), nullable=True),
        sa.Column("started_at", pomelo.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("answered_at", pomelo.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", pomelo.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration", sa.Integer(), nullable=False),
        sa.Column("talk_time", sa.Integer(), nullable=False),
        sa.Column("disposition", sa.String(length=16), nullable=False),
        sa.Column("hangup_side", sa.String(length=16), nullable=True),
        sa.Column("hangup_code", sa.Integer(), nullable=True),
        sa.Column("hangup_reason", sa.String(length=64), nullable=True),
        sa.Column("caller_account_id", sa.String(length=32), nullable=True),
        sa.Column("caller_user_id", sa.String(length=32), nullable=True),
        sa.Column("callee_account_id", sa.String(length=32), nullable=True),
        sa.Column("callee_user_id", sa.String(length=32), nullable=True),
        sa.Column("trunk_id", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_call_records_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_records")),
    )
    with op.batch_alter_table("call_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_records_call_id"), ["call_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_call_records_callee_user_id"), ["callee_user_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_call_records_caller_user_id"), ["caller_user_id"], unique=False
        )
        batch_op.create_index(
            "ix_call_records_tenant_started", ["tenant_id", "started_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_call_records_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("call_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_records_tenant_id"))
        batch_op.drop_index("ix_call_records_tenant_started")
        batch_op.drop_index(batch_op.f("ix_call_records_caller_user_id"))
        batch_op.drop_index(batch_op.f("ix_call_records_callee_user_id"))
        batch_op.drop_index(batch_op.f("ix_call_records_call_id"))

    op.drop_table("call_records")
