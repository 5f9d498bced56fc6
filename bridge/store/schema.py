"""Table definitions used by the store's queries. Alembic (``migrations/``) is the only thing
that creates or changes the schema; a test checks that the migrated database matches these.

Times are epoch seconds (double precision): the same arithmetic on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.schema import SchemaItem

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only autoincrements INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")


# Columns several tables have alike are made by functions (a Column belongs to one table).


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _time(name: str, *, nullable: bool = False) -> Column[float]:
    """A time, in epoch seconds."""
    return Column(name, Double, nullable=nullable)


conversations = Table(
    "conversations",
    metadata,
    _id(),
    Column("channel", String(64), nullable=False),
    Column("conversation_key", String(255), nullable=False),
    Column("requester_id", String(255), nullable=False),
    # new: never launched; active: session_id is open at Parloa; ended: the next message launches
    Column("state", String(16), nullable=False),
    Column("session_id", String(64), nullable=True),
    Column("parloa_conversation_id", String(255), nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("address", JSON, nullable=True),
    _time("created_at"),
    _time("updated_at"),
    _time("last_activity_at"),
    # When this conversation next has work (a pending message or delivery); NULL: none.
    _time("due_at", nullable=True),
    # The lease: only its holder processes this conversation (strict order across processes).
    Column("lease_owner", String(64), nullable=True),
    _time("lease_until", nullable=True),
    UniqueConstraint("channel", "conversation_key"),
    Index(None, "state", "last_activity_at"),
    Index(None, "due_at"),
)


# The queues: a conversation's inbound events (inbox) and replies (outbox), in order.


def _conversation_id() -> Column[int]:
    """A queue item's conversation: the item goes when the conversation does."""
    return Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    )


def _progress() -> list[Column[Any]]:
    """Where a queue item stands: its status (pending: due at next_attempt_at), the attempts
    made and the last one's error."""
    return [
        Column("status", String(16), nullable=False),
        Column("attempts", Integer, nullable=False, default=0),
        _time("next_attempt_at"),
        Column("last_error", Text, nullable=True),
    ]


def _queue(name: str, *items: SchemaItem) -> Table:
    """A queue's table: its items' ids, their own columns, and the indexes for a
    conversation's pending items in order, the items due, and the retention purge."""
    return Table(
        name,
        metadata,
        _id(),
        *items,
        Index(None, "conversation_id", "status", "id"),
        Index(None, "status", "next_attempt_at"),
        Index(None, "finished_at"),
    )


inbox = _queue(
    "inbox",
    Column("channel", String(64), nullable=False),
    Column("event_id", String(255), nullable=False),
    _conversation_id(),
    Column("kind", String(16), nullable=False),
    Column("text", Text, nullable=True),
    Column("address", JSON, nullable=True),
    Column("context", JSON, nullable=True),
    # what the user sent besides text (bridge/media/attachments.py Attachment.to_json each)
    Column("attachments", JSON, nullable=True),
    # the Parloa calls made for it (vocabulary.ParloaCall.to_json each), for the timeline
    Column("parloa_calls", JSON, nullable=True),
    # the W3C trace context of its intake, when tracing is on
    Column("traceparent", String(64), nullable=True),
    # status: pending | done | dead (a dead letter: see last_error)
    *_progress(),
    _time("created_at"),
    _time("finished_at", nullable=True),
    UniqueConstraint("channel", "event_id"),
)

outbox = _queue(
    "outbox",
    _conversation_id(),
    Column("inbox_id", Id, nullable=True),
    Column("channel", String(64), nullable=False),
    Column("address", JSON, nullable=True),
    Column("elements", JSON, nullable=False),
    Column("parts_done", Integer, nullable=False, default=0),
    *_progress(),  # status: pending | sent | failed
    Column("platform_message_id", String(255), nullable=True),
    _time("created_at"),
    _time("finished_at", nullable=True),
)

channel_state = Table(
    "channel_state",
    metadata,
    Column("channel", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    _time("updated_at"),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(64), nullable=False),
    _time("expires_at"),
)

# Media files (bridge/store/media.py): one row per file, its bytes in chunks of their own.
media = Table(
    "media",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("channel", String(64), nullable=False),
    Column("requester_id", String(255), nullable=False),
    # the inbox event and attachment position it was fetched for (None: a web chat upload)
    Column("inbox_id", Id, nullable=True),
    Column("position", Integer, nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("name", String(255), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("chunks", Integer, nullable=False),
    # false while its chunks are being written: never served, purged when left over
    Column("complete", Boolean, nullable=False),
    _time("created_at"),
    Index(None, "inbox_id", "position"),
    Index(None, "channel", "requester_id"),
    Index(None, "created_at"),
)

media_chunks = Table(
    "media_chunks",
    metadata,
    Column("media_id", String(32), primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

# Human handovers (bridge/handover/): a live agent's turn in a conversation.
handovers = Table(
    "handovers",
    metadata,
    _id(),
    Column("key", String(64), nullable=False),
    _conversation_id(),
    Column("bot", String(255), nullable=False),
    Column("desk", String(16), nullable=False),
    # open (waiting for an agent) | taken | ended
    Column("state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("queue", String(255), nullable=True),
    Column("summary", Text, nullable=True),
    _time("started_at"),
    _time("taken_at", nullable=True),
    Column("taken_by", String(255), nullable=True),
    _time("first_reply_at", nullable=True),
    _time("ended_at", nullable=True),
    Column("outcome", String(16), nullable=True),
    # where the desk keeps it (a Slack thread: "<channel id>:<ts>")
    Column("thread", String(255), nullable=True),
    UniqueConstraint("key"),
    Index(None, "conversation_id", "state"),
    Index(None, "state", "started_at"),
    Index(None, "bot", "thread"),
)
