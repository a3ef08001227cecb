"""What this release adds to 0001: video leases (two workers never process one video),
gallery versions, the analyst audit log, and indexes for the analyst's result queries.

Every step checks first, so a development catalog that `create_all` already gave some of
these (and that was adopted as 0001) upgrades too.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _columns(table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def _indexes(table: str) -> set[str]:
    return {i["name"] for i in sa.inspect(op.get_bind()).get_indexes(table)}


def _tables() -> set[str]:
    return set(sa.inspect(op.get_bind()).get_table_names())


def upgrade() -> None:
    new_columns = {
        "videos": [
            sa.Column("lease_owner", sa.String(length=128), nullable=True),
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        ],
    }
    for table, columns in new_columns.items():
        missing = [c for c in columns if c.name not in _columns(table)]
        if missing:
            with op.batch_alter_table(table) as batch:
                for column in missing:
                    batch.add_column(column)

    # the analyst's result queries at 100,000 videos (benchmarks/catalog_scale.py)
    for name, columns in {
        "ix_results_probe_key_run_id": ["probe_key", "run_id"],
        "ix_results_identity_id_rank": ["identity_id", "rank"],
    }.items():
        if name not in _indexes("results"):
            op.create_index(name, "results", columns)

    if "gallery_versions" not in _tables():
        op.create_table(
            "gallery_versions",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("number", sa.Integer(), nullable=False),
            sa.Column("path", sa.Text(), nullable=False),
            sa.Column("fingerprint", sa.String(length=64), nullable=False),
            sa.Column("current", sa.Boolean(), nullable=False),
            sa.Column("manifest", sa.JSON(), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("id"),
            sa.UniqueConstraint("number"),
        )
        op.create_index("ix_gallery_versions_current", "gallery_versions", ["current"])
        op.create_index("ix_gallery_versions_fingerprint", "gallery_versions", ["fingerprint"])
    if "audit_log" not in _tables():
        op.create_table(
            "audit_log",
            sa.Column("id", sa.Integer(), nullable=False),
            sa.Column("at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("who", sa.String(length=200), nullable=False),
            sa.Column("action", sa.String(length=200), nullable=False),
            sa.Column("params", sa.JSON(), nullable=False),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("result_count", sa.Integer(), nullable=False),
            sa.Column("result_ids", sa.JSON(), nullable=False),
            sa.PrimaryKeyConstraint("id"),
        )
        op.create_index("ix_audit_log_at", "audit_log", ["at"])
        op.create_index("ix_audit_log_who", "audit_log", ["who"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("gallery_versions")
    op.drop_index("ix_results_identity_id_rank", table_name="results")
    op.drop_index("ix_results_probe_key_run_id", table_name="results")
    with op.batch_alter_table("videos") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
