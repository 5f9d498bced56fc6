"""Erasure: everything stored about one user of one channel removed in one transaction, for
``parloa-bridge erase`` and the admin API.

What a user leaves behind: the conversations they started (requester id), with their inbox
(dead letters included) and outbox rows (the replies, and with them the keyboards' button
values, which live in the stored reply), and the channel state entries an adapter keeps per
user under keys ending in ``:<user id>`` (the web chat's mailbox), and the media files they
sent (fetched attachments and uploads, by requester id). Named leases and the Slack
installation tables hold no user's messages."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection

from bridge.store.core import StorePart
from bridge.store.schema import (
    channel_state,
    conversations,
    inbox,
    media,
    media_chunks,
    outbox,
)
from bridge.vocabulary import InboxStatus


@dataclass(frozen=True, slots=True)
class Erased:
    """Rows removed, by table (``dead_letters`` are the inbox rows among them that were)."""

    conversations: int
    inbox: int
    dead_letters: int
    outbox: int
    channel_state: int
    media: int = 0  # files, with their chunks

    def by_table(self) -> dict[str, int]:
        return {
            "conversations": self.conversations,
            "inbox": self.inbox,
            "dead_letters": self.dead_letters,
            "outbox": self.outbox,
            "channel_state": self.channel_state,
            "media": self.media,
        }


def user_state_pattern(user_id: str) -> str:
    """The LIKE pattern of a user's channel state keys (``...:<user id>``), escaped with \\."""
    escaped = user_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%:{escaped}"


class Erasure(StorePart):
    """The operator's erase of one user."""

    async def erase_user(self, channel: str, user_id: str, requester_id: str) -> Erased:
        """Delete what is stored about ``user_id`` of ``channel`` (whose conversations carry
        ``requester_id``), all or nothing, and count what went."""

        def unit(conn: Connection) -> Erased:
            ids = [
                row[0]
                for row in conn.execute(
                    select(conversations.c.id).where(
                        conversations.c.channel == channel,
                        conversations.c.requester_id == requester_id,
                    )
                )
            ]
            dead = 0
            if ids:
                dead = int(
                    conn.execute(
                        select(func.count()).where(
                            inbox.c.conversation_id.in_(ids), inbox.c.status == InboxStatus.DEAD
                        )
                    ).scalar_one()
                )
            # Queues first and counted: the foreign keys would cascade, but say nothing.
            removed_out = removed_in = removed_conv = 0
            if ids:
                removed_out = conn.execute(
                    delete(outbox).where(outbox.c.conversation_id.in_(ids))
                ).rowcount
                removed_in = conn.execute(
                    delete(inbox).where(inbox.c.conversation_id.in_(ids))
                ).rowcount
                removed_conv = conn.execute(
                    delete(conversations).where(conversations.c.id.in_(ids))
                ).rowcount
            removed_state = conn.execute(
                delete(channel_state).where(
                    channel_state.c.channel == channel,
                    channel_state.c.key.like(user_state_pattern(user_id), escape="\\"),
                )
            ).rowcount
            files = select(media.c.id).where(
                media.c.channel == channel, media.c.requester_id == requester_id
            )
            conn.execute(delete(media_chunks).where(media_chunks.c.media_id.in_(files)))
            removed_media = conn.execute(
                delete(media).where(
                    media.c.channel == channel, media.c.requester_id == requester_id
                )
            ).rowcount
            return Erased(
                conversations=int(removed_conv),
                inbox=int(removed_in),
                dead_letters=dead,
                outbox=int(removed_out),
                channel_state=int(removed_state),
                media=int(removed_media),
            )

        return await self._core.tx.write(unit)
