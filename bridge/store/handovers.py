"""Human handovers (bridge/handover/): the row a handover change writes with the worker's
step (commits.py), and the reads the worker, the desks, the console and housekeeping make."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from bridge.store.columns import conversation_record, handover_record
from bridge.store.core import StorePart
from bridge.store.schema import conversations, handovers, inbox, outbox
from bridge.textchat.models import wire_text
from bridge.vocabulary import (
    DESK_CHANNEL,
    AgentReplied,
    Conversation,
    ConversationState,
    Handover,
    HandoverChange,
    HandoverClosed,
    HandoverOpened,
    HandoverState,
    HandoverTaken,
    InboundKind,
    Turn,
)

_OPEN = (HandoverState.OPEN, HandoverState.TAKEN)
#: inbound kinds whose text is a line of the transcript, and who said it
_SAID = {
    InboundKind.TEXT: "user",
    InboundKind.BUTTON: "user",
    InboundKind.AGENT_MESSAGE: "agent",
}


def record_handover(conn: Connection, conversation_id: int, change: HandoverChange) -> None:
    """Write a handover change in the worker's transaction (commits.commit_unit)."""
    rows = handovers.c
    match change:
        case HandoverOpened():
            conn.execute(
                insert(handovers).values(
                    key=change.key,
                    conversation_id=conversation_id,
                    bot=change.bot,
                    desk=change.desk,
                    state=HandoverState.OPEN,
                    reason=change.reason,
                    queue=change.queue,
                    summary=change.summary,
                    started_at=change.at,
                )
            )
        case HandoverTaken():
            conn.execute(
                update(handovers)
                .where(rows.key == change.key, rows.state == HandoverState.OPEN)
                .values(state=HandoverState.TAKEN, taken_at=change.at, taken_by=change.agent)
            )
        case AgentReplied():
            conn.execute(
                update(handovers)
                .where(rows.key == change.key, rows.state != HandoverState.ENDED)
                .values(
                    state=HandoverState.TAKEN,
                    taken_at=func.coalesce(rows.taken_at, change.at),
                    taken_by=func.coalesce(rows.taken_by, change.agent),
                    first_reply_at=func.coalesce(rows.first_reply_at, change.at),
                )
            )
        case HandoverClosed():
            conn.execute(
                update(handovers)
                .where(rows.key == change.key, rows.state != HandoverState.ENDED)
                .values(state=HandoverState.ENDED, outcome=change.outcome, ended_at=change.at)
            )


def said_text(text: str | None, attachments: Any) -> str:
    """A user's line: the text, and a placeholder per attachment ("[photo]")."""
    kinds = [
        f"[{a.get('type') or 'attachment'}]"
        for a in (attachments if isinstance(attachments, list) else [])
        if isinstance(a, dict)
    ]
    return " ".join(part for part in [text or "", *kinds] if part)


class Handovers(StorePart):
    """Handovers by key, by conversation, by desk thread; transcripts; due timeouts."""

    async def handover(self, key: str) -> Handover | None:
        def unit(conn: Connection) -> Handover | None:
            row = conn.execute(select(handovers).where(handovers.c.key == key)).first()
            return handover_record(row) if row else None

        return await self._core.tx.read(unit)

    async def open_handover(self, conversation_id: int) -> Handover | None:
        """The conversation's handover that has not ended (there is at most one)."""

        def unit(conn: Connection) -> Handover | None:
            row = conn.execute(
                select(handovers)
                .where(
                    handovers.c.conversation_id == conversation_id,
                    handovers.c.state.in_(_OPEN),
                )
                .order_by(handovers.c.id.desc())
                .limit(1)
            ).first()
            return handover_record(row) if row else None

        return await self._core.tx.read(unit)

    async def handover_by_thread(self, bot: str, thread: str) -> Handover | None:
        def unit(conn: Connection) -> Handover | None:
            row = conn.execute(
                select(handovers)
                .where(handovers.c.bot == bot, handovers.c.thread == thread)
                .order_by(handovers.c.id.desc())
                .limit(1)
            ).first()
            return handover_record(row) if row else None

        return await self._core.tx.read(unit)

    async def set_handover_thread(self, key: str, thread: str) -> None:
        def unit(conn: Connection) -> None:
            conn.execute(update(handovers).where(handovers.c.key == key).values(thread=thread))

        await self._core.tx.write(unit)

    async def handovers(
        self,
        *,
        open_only: bool = False,
        bots: Collection[str] | None = None,
        conversation_id: int | None = None,
        limit: int = 100,
    ) -> list[Handover]:
        """Handovers, newest first."""

        def unit(conn: Connection) -> list[Handover]:
            query = select(handovers).order_by(handovers.c.id.desc()).limit(limit)
            if open_only:
                query = query.where(handovers.c.state.in_(_OPEN))
            if bots is not None:
                query = query.where(handovers.c.bot.in_(list(bots)))
            if conversation_id is not None:
                query = query.where(handovers.c.conversation_id == conversation_id)
            return [handover_record(row) for row in conn.execute(query)]

        return await self._core.tx.read(unit)

    async def conversation_by_id(self, conversation_id: int) -> Conversation | None:
        def unit(conn: Connection) -> Conversation | None:
            row = conn.execute(
                select(conversations).where(conversations.c.id == conversation_id)
            ).first()
            return conversation_record(row) if row else None

        return await self._core.tx.read(unit)

    async def recent_turns(
        self, conversation_id: int, limit: int, since: float | None = None
    ) -> list[Turn]:
        """The last ``limit`` lines of the conversation (since ``since``), oldest first: the
        user's and agents' messages from the inbox, the bot's replies from the outbox."""
        if limit <= 0:
            return []

        def unit(conn: Connection) -> list[Turn]:
            said = select(
                inbox.c.kind, inbox.c.text, inbox.c.attachments, inbox.c.created_at
            ).where(
                inbox.c.conversation_id == conversation_id,
                inbox.c.kind.in_(list(_SAID)),
                or_(inbox.c.text.is_not(None), inbox.c.attachments.is_not(None)),
            )
            answering = inbox.alias("answering")
            replies = (
                select(outbox.c.elements, outbox.c.created_at)
                .select_from(outbox.outerjoin(answering, answering.c.id == outbox.c.inbox_id))
                .where(
                    outbox.c.conversation_id == conversation_id,
                    outbox.c.channel != DESK_CHANNEL,
                    # an agent's message is its inbox row's line already
                    and_(func.coalesce(answering.c.kind, "") != InboundKind.AGENT_MESSAGE.value),
                )
            )
            if since is not None:
                said = said.where(inbox.c.created_at >= since)
                replies = replies.where(outbox.c.created_at >= since)
            user_rows = conn.execute(said.order_by(inbox.c.id.desc()).limit(limit)).all()
            reply_rows = conn.execute(replies.order_by(outbox.c.id.desc()).limit(limit)).all()
            turns = [
                Turn(
                    _SAID[InboundKind(row.kind)],
                    said_text(row.text, row.attachments),
                    row.created_at,
                )
                for row in reversed(user_rows)
                if row.text or row.attachments
            ]
            for row in reversed(reply_rows):
                text = wire_text(row.elements)
                if text:
                    turns.append(Turn("bot", text, row.created_at))
            # Stable: replies written in one step keep their order, a user's line comes
            # before the replies of the same moment.
            turns.sort(key=lambda turn: turn.at)
            return turns[-limit:]

        return await self._core.tx.read(unit)

    async def due_agent_timeouts(
        self, bot: str, timeout_seconds: float, limit: int = 500
    ) -> list[tuple[Conversation, Handover]]:
        """``bot``'s handovers no agent took within ``timeout_seconds``."""
        cutoff = self._core.clock() - timeout_seconds
        return await self._with_conversations(
            and_(
                handovers.c.bot == bot,
                handovers.c.state == HandoverState.OPEN,
                handovers.c.started_at <= cutoff,
            ),
            limit,
        )

    async def idle_handovers(
        self, idle_seconds: float, limit: int = 500
    ) -> list[tuple[Conversation, Handover]]:
        """Handed-over conversations nobody wrote in for ``idle_seconds``."""
        cutoff = self._core.clock() - idle_seconds
        return await self._with_conversations(
            and_(
                handovers.c.state.in_(_OPEN),
                conversations.c.state == ConversationState.HANDED_OVER,
                conversations.c.last_activity_at < cutoff,
            ),
            limit,
        )

    async def _with_conversations(
        self, where: Any, limit: int
    ) -> list[tuple[Conversation, Handover]]:
        def unit(conn: Connection) -> list[tuple[Conversation, Handover]]:
            rows = conn.execute(
                select(conversations, *[c.label(f"h_{c.name}") for c in handovers.c])
                .select_from(
                    handovers.join(conversations, conversations.c.id == handovers.c.conversation_id)
                )
                .where(where)
                .limit(limit)
            )
            found = []
            for row in rows:
                mapping = row._mapping
                values = {c.name: mapping[f"h_{c.name}"] for c in handovers.c}
                found.append((conversation_record(row), handover_record(values)))
            return found

        return await self._core.tx.read(unit)

    async def open_handover_counts(self) -> dict[tuple[str, str], int]:
        """Open handovers by (bot, desk)."""

        def unit(conn: Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute(
                select(handovers.c.bot, handovers.c.desk, func.count())
                .where(handovers.c.state.in_(_OPEN))
                .group_by(handovers.c.bot, handovers.c.desk)
            )
            return {(row[0], row[1]): int(row[2]) for row in rows}

        return await self._core.tx.read(unit)
