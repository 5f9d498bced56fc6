"""Media: the attachments users send, kept by the bridge (bridge/store/media.py), and the
inbox's record of what an event carried besides text.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("attachments", sa.JSON(), nullable=True))
    op.create_table(
        "media",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("requester_id", sa.String(255), nullable=False),
        sa.Column("inbox_id", Id, nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media")),
    )
    op.create_index(op.f("ix_media_inbox_id_position"), "media", ["inbox_id", "position"])
    op.create_index(op.f("ix_media_channel_requester_id"), "media", ["channel", "requester_id"])
    op.create_index(op.f("ix_media_created_at"), "media", ["created_at"])
    op.create_table(
        "media_chunks",
        sa.Column("media_id", sa.String(32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("media_id", "seq", name=op.f("pk_media_chunks")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # Photos, audio and video come compressed: PostgreSQL's own compression would spend
        # the server's CPU on every chunk for nothing.
        op.execute("ALTER TABLE media_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("media_chunks")
    op.drop_index(op.f("ix_media_created_at"), table_name="media")
    op.drop_index(op.f("ix_media_channel_requester_id"), table_name="media")
    op.drop_index(op.f("ix_media_inbox_id_position"), table_name="media")
    op.drop_table("media")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("attachments")
