"""What the operator's timeline shows of an inbound event beside the inbox row itself: the
Parloa calls made for it, and the trace context of its intake.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("parloa_calls", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("traceparent")
        batch.drop_column("parloa_calls")
