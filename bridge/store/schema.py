"""Table definitions used by the store's queries. Alembic (``migrations/``) is the only thing
that creates or changes the schema; a test checks that the migrated database matches these.

Times are epoch seconds (double precision): the same arithmetic on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

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

conversations = Table(
    "conversations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("conversation_key", String(255), nullable=False),
    Column("requester_id", String(255), nullable=False),
    # new: never launched; active: session_id is open at Parloa; ended: the next message launches
    Column("state", String(16), nullable=False),
    Column("session_id", String(64), nullable=True),
    Column("parloa_conversation_id", String(255), nullable=True),
    Column("end_reason", String(32), nullable=True),
    Column("address", JSON, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("last_activity_at", Double, nullable=False),
    # When this conversation next has work (a pending message or delivery); NULL: none.
    Column("due_at", Double, nullable=True),
    # The lease: only its holder processes this conversation (strict order across processes).
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", Double, nullable=True),
    UniqueConstraint("channel", "conversation_key"),
    Index(None, "state", "last_activity_at"),
    Index(None, "due_at"),
)

inbox = Table(
    "inbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("channel", String(64), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("kind", String(16), nullable=False),
    Column("text", Text, nullable=True),
    Column("address", JSON, nullable=True),
    Column("context", JSON, nullable=True),
    # pending (due at next_attempt_at) | done | dead (dead letter: see last_error)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Double, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("finished_at", Double, nullable=True),
    UniqueConstraint("channel", "event_id"),
    Index(None, "conversation_id", "status", "id"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "finished_at"),  # the retention purge
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "conversation_id",
        Id,
        ForeignKey("conversations.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("inbox_id", Id, nullable=True),
    Column("channel", String(64), nullable=False),
    Column("address", JSON, nullable=True),
    Column("elements", JSON, nullable=False),
    Column("parts_done", Integer, nullable=False, default=0),
    # pending | sent | failed
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Double, nullable=False),
    Column("last_error", Text, nullable=True),
    Column("platform_message_id", String(255), nullable=True),
    Column("created_at", Double, nullable=False),
    Column("finished_at", Double, nullable=True),
    Index(None, "conversation_id", "status", "id"),
    Index(None, "status", "next_attempt_at"),
    Index(None, "finished_at"),  # the retention purge
)

channel_state = Table(
    "channel_state",
    metadata,
    Column("channel", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("expires_at", Double, nullable=False),
)
