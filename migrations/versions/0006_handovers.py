"""Human handovers: a live agent's turn in a conversation (bridge/handover/).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "handovers",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column(
            "conversation_id",
            Id,
            sa.ForeignKey(
                "conversations.id",
                ondelete="CASCADE",
                name=op.f("fk_handovers_conversation_id_conversations"),
            ),
            nullable=False,
        ),
        sa.Column("bot", sa.String(255), nullable=False),
        sa.Column("desk", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("queue", sa.String(255), nullable=True),
        sa.Column("summary", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("taken_at", sa.Double(), nullable=True),
        sa.Column("taken_by", sa.String(255), nullable=True),
        sa.Column("first_reply_at", sa.Double(), nullable=True),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("thread", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handovers")),
        sa.UniqueConstraint("key", name=op.f("uq_handovers_key")),
    )
    op.create_index(
        op.f("ix_handovers_conversation_id_state"), "handovers", ["conversation_id", "state"]
    )
    op.create_index(op.f("ix_handovers_state_started_at"), "handovers", ["state", "started_at"])
    op.create_index(op.f("ix_handovers_bot_thread"), "handovers", ["bot", "thread"])


def downgrade() -> None:
    op.drop_table("handovers")
