"""Each result records the basis its open-set decision was taken on: the threshold, where
it came from (the prior or an operator calibration), the prior, how many identities were
comparable with the probe, the gallery version and the fusion method. The analyst page
explains a decision from these, never from today's gallery (issue 18, item 3).

Nullable: rows written before this revision have no recorded basis. Every step checks
first, so a development catalog that `create_all` already gave these columns upgrades too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = [
    ("threshold_llr", sa.Float),
    ("threshold_from", lambda: sa.String(length=16)),
    ("prior_in_gallery", sa.Float),
    ("gallery_size", sa.Integer),
    ("gallery_version", sa.Integer),
    ("fusion_method", lambda: sa.String(length=32)),
]


def upgrade() -> None:
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("results")}
    missing = [(name, kind) for name, kind in COLUMNS if name not in have]
    if missing:
        with op.batch_alter_table("results") as batch:
            for name, kind in missing:
                batch.add_column(sa.Column(name, kind(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("results") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
