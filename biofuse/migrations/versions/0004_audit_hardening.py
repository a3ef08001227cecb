"""The audit log records the client address and counts repeated requests on one row.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("audit_log")}
    new = [
        sa.Column("client", sa.String(length=64), nullable=True),
        sa.Column("request_count", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
    ]
    missing = [c for c in new if c.name not in columns]
    if missing:
        with op.batch_alter_table("audit_log") as batch:
            for column in missing:
                batch.add_column(column)
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("audit_log")}
    if "ix_audit_log_client" not in indexes:
        op.create_index("ix_audit_log_client", "audit_log", ["client"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_client", table_name="audit_log")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("last_at")
        batch.drop_column("request_count")
        batch.drop_column("client")
