"""The store's queries, on SQLite and on PostgreSQL (see ``database_url`` in conftest).

Time is a fake clock handed to the Store: nothing here sleeps to let a lease expire."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.store import OUTBOX_BATCH, DataRefused, LeaseLost, Store
from bridge.store.database import migrate
from bridge.store.schema import channel_state, conversations, inbox, leases, outbox
from bridge.vocabulary import (
    Answered,
    Claim,
    DeadLetter,
    DeliveryFailed,
    DeliveryRetry,
    Done,
    InboundKind,
    InboxOutcome,
    InboxStatus,
    NewEvent,
    NewReply,
    OutboxAck,
    OutboxStatus,
    RetryLater,
    Sent,
    SessionOpened,
    Step,
)
from tests.support.clock import T0, FakeClock
from tests.support.database import closing
from tests.support.rows import conv_row, count, inbox_ids, rows, set_columns
from tests.support.store_readers import conversation, head_inbox, head_outbox, next_due_at

TTL = 30.0
A = "instance-a"
B = "instance-b"


@pytest.fixture
async def store(engine: AsyncEngine, clock: FakeClock) -> AsyncIterator[Store]:
    async with closing(Store(engine, clock=clock)) as st:
        yield st


async def accept(
    store: Store,
    event_id: str,
    *,
    key: str = "chat-1",
    channel: str = "telegram",
    text: str | None = "hello",
    kind: InboundKind = InboundKind.TEXT,
) -> tuple[bool, int]:
    return await store.accept(
        channel=channel,
        event_id=event_id,
        conversation_key=key,
        requester_id="user-1",
        kind=kind,
        text=text,
        address={"chat_id": 42},
        context={"locale": "de"},
    )


async def answering(
    store: Store,
    engine: AsyncEngine,
    event_id: str = "e1",
    *,
    at: float = T0,
    session: SessionOpened | None = None,
) -> int:
    """The conversation of a new event, claimed by A and its event marked done at ``at`` (the
    same step opening ``session`` if given): A's worker has answered it and is about to
    finish."""
    _, cid = await accept(store, event_id)
    (iid,) = await inbox_ids(engine, cid)
    assert await store.claim(cid, A, TTL)
    step = Step(inbox_id=iid, outcome=Done(at, 1), conversation=session)
    await store.commit(cid, A, step, "telegram")
    return cid


async def settle(store: Store, cid: int, owner: str) -> None:
    """Let go of a conversation like a worker with nothing more to do now: finish (which
    records when work is next due) and, if finish kept the lease because work is due, release."""
    if await store.finish(cid, owner, TTL) is not None:
        assert await store.release_all(owner) == 1


async def set_inbox(store: Store, cid: int, inbox_id: int, outcome: InboxOutcome) -> None:
    """Change one inbox row the way a worker does: claimed, committed, finished."""
    assert await store.claim(cid, "setup", TTL)
    await store.commit(cid, "setup", Step(inbox_id=inbox_id, outcome=outcome), "telegram")
    await settle(store, cid, "setup")


async def add_outbox(store: Store, cid: int, n: int, channel: str = "telegram") -> list[int]:
    assert await store.claim(cid, "setup", TTL)
    created = await store.commit(
        cid,
        "setup",
        Step(replies=tuple(NewReply([{"text": f"r{i}"}], None) for i in range(n))),
        channel,
    )
    await settle(store, cid, "setup")
    return [o.id for o in created]


# --- accept ----------------------------------------------------------------------------------


async def test_accept_stores_once_and_deduplicates(store: Store, engine: AsyncEngine) -> None:
    accepted, cid = await accept(store, "e1")
    assert accepted

    conv = await conv_row(engine, cid)
    assert conv["channel"] == "telegram"
    assert conv["conversation_key"] == "chat-1"
    assert conv["requester_id"] == "user-1"
    assert conv["state"] == "new"
    assert conv["due_at"] == T0
    assert conv["lease_owner"] is None
    assert conv["created_at"] == conv["updated_at"] == conv["last_activity_at"] == T0

    (row,) = await rows(engine, inbox)
    assert row["conversation_id"] == cid
    assert (row["channel"], row["event_id"], row["kind"], row["text"]) == (
        "telegram",
        "e1",
        "text",
        "hello",
    )
    assert row["address"] == {"chat_id": 42}
    assert row["context"] == {"locale": "de"}
    assert row["status"] == InboxStatus.PENDING
    assert row["attempts"] == 0
    assert row["next_attempt_at"] == T0
    assert row["finished_at"] is None

    assert await accept(store, "e1") == (False, cid)
    assert await count(engine, inbox) == 1
    assert await count(engine, conversations) == 1


async def test_same_event_id_on_another_channel_is_another_event(
    store: Store, engine: AsyncEngine
) -> None:
    ok_t, cid_t = await accept(store, "e1", channel="telegram")
    ok_s, cid_s = await accept(store, "e1", channel="slack")
    assert ok_t and ok_s
    assert cid_t != cid_s  # the conversation key is scoped by channel too
    assert await count(engine, inbox) == 2
    assert await count(engine, conversations) == 2


async def test_second_event_reuses_the_conversation(store: Store, engine: AsyncEngine) -> None:
    ok1, cid1 = await accept(store, "e1")
    ok2, cid2 = await accept(store, "e2")
    ok3, cid3 = await accept(store, "e3", key="chat-2")
    assert ok1 and ok2 and ok3
    assert cid1 == cid2 != cid3
    assert len(await inbox_ids(engine, cid1)) == 2
    assert await store.find_conversation("telegram", "chat-1") is not None
    assert (await store.find_conversation("telegram", "chat-1")).id == cid1  # type: ignore[union-attr]
    assert await store.find_conversation("slack", "chat-1") is None
    conv = await conversation(store, cid1)
    assert (conv.channel, conv.conversation_key, conv.state) == ("telegram", "chat-1", "new")


async def test_accept_keeps_empty_address_and_context_null(
    store: Store, engine: AsyncEngine
) -> None:
    await store.accept(
        channel="telegram",
        event_id="e1",
        conversation_key="chat-1",
        requester_id="u",
        kind=InboundKind.TEXT,
        text=None,
        address=None,
        context={},
    )
    (row,) = await rows(engine, inbox)
    assert row["text"] is None
    assert row["address"] is None
    assert row["context"] is None


async def test_concurrent_accepts_of_one_event_accept_exactly_once(
    store: Store, engine: AsyncEngine
) -> None:
    results = await asyncio.gather(*(accept(store, "same") for _ in range(30)))
    assert sum(1 for ok, _ in results if ok) == 1
    assert len({cid for _, cid in results}) == 1
    assert await count(engine, inbox) == 1
    assert await count(engine, conversations) == 1


async def test_concurrent_events_on_a_new_conversation_share_one_row(
    store: Store, engine: AsyncEngine
) -> None:
    results = await asyncio.gather(*(accept(store, f"e{i}") for i in range(30)))
    assert all(ok for ok, _ in results)
    assert len({cid for _, cid in results}) == 1
    assert await count(engine, conversations) == 1
    assert await count(engine, inbox) == 30
    assert {r["event_id"] for r in await rows(engine, inbox)} == {f"e{i}" for i in range(30)}


async def test_accept_brings_due_at_forward_never_back(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    clock.advance(10)
    await accept(store, "e2")
    assert (await conv_row(engine, cid))["due_at"] == T0  # the earlier work stays due first

    # Rescheduled into the future (a retry waits): a new event makes it due now.
    await set_columns(engine, conversations, cid, due_at=T0 + 500)
    await accept(store, "e3")
    assert (await conv_row(engine, cid))["due_at"] == T0 + 10

    # Nothing due (NULL): the event makes it due now.
    await set_columns(engine, conversations, cid, due_at=None)
    clock.advance(5)
    await accept(store, "e4")
    row = await conv_row(engine, cid)
    assert row["due_at"] == T0 + 15
    assert row["updated_at"] == T0 + 15
    assert await next_due_at(store) == T0 + 15


# --- due conversations and leases ------------------------------------------------------------


async def test_due_conversations_lists_due_unleased_work(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    assert await store.due_conversations(10) == []
    assert await next_due_at(store) is None

    _, c1 = await accept(store, "e1", key="k1")
    clock.advance(1)
    _, c2 = await accept(store, "e2", key="k2")
    clock.advance(1)
    _, c3 = await accept(store, "e3", key="k3")
    assert await store.due_conversations(10) == [c1, c2, c3]  # oldest work first
    assert await store.due_conversations(2) == [c1, c2]
    assert await next_due_at(store) == T0

    # Not yet due, or nothing due at all: not listed.
    await set_columns(engine, conversations, c2, due_at=clock.now + 60)
    await set_columns(engine, conversations, c3, due_at=None)
    assert await store.due_conversations(10) == [c1]
    clock.advance(60)
    assert await store.due_conversations(10) == [c1, c2]


async def test_leased_conversation_is_not_due_until_its_lease_expires(
    store: Store, clock: FakeClock
) -> None:
    _, c1 = await accept(store, "e1", key="k1")
    _, c2 = await accept(store, "e2", key="k2")
    assert await store.claim(c1, B, TTL)
    assert await store.due_conversations(10) == [c2]
    # Its holder's own scan lists it (a lease intake took for a worker that never started).
    assert sorted(await store.due_conversations(10, B)) == sorted([c1, c2])
    assert await store.due_conversations(10, A) == [c2]
    clock.advance(TTL)  # lease_until == now: still held
    assert await store.due_conversations(10) == [c2]
    clock.advance(0.001)
    assert sorted(await store.due_conversations(10)) == sorted([c1, c2])


async def test_claim_is_exclusive_reentrant_and_expires(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    assert await store.claim(cid, A, TTL) is not None
    assert (await conv_row(engine, cid))["lease_until"] == T0 + TTL
    assert await store.claim(cid, B, TTL) is None
    clock.advance(10)
    assert await store.claim(cid, A, TTL) is not None  # re-entrant: extends
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["lease_until"]) == (A, T0 + 10 + TTL)

    clock.advance(TTL)  # exactly at lease_until: not expired yet
    assert await store.claim(cid, B, TTL) is None
    clock.advance(1)
    assert await store.claim(cid, B, TTL) is not None
    assert (await conv_row(engine, cid))["lease_owner"] == B

    assert not await store.renew(cid, A, TTL)  # A lost it
    clock.advance(5)
    assert await store.renew(cid, B, 100)
    assert (await conv_row(engine, cid))["lease_until"] == clock.now + 100
    assert await store.claim(99999, A, TTL) is None  # no such conversation


async def test_concurrent_claims_have_one_winner(store: Store) -> None:
    _, cid = await accept(store, "e1")
    results = await asyncio.gather(*(store.claim(cid, f"owner-{i}", TTL) for i in range(10)))
    assert sum(1 for r in results if r is not None) == 1


async def test_claim_reads_the_work_in_order(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    clock.advance(1)
    await accept(store, "e2")
    first, _ = await inbox_ids(engine, cid)
    work = await store.claim(cid, A, TTL)
    assert work is not None
    assert (work.conversation.id, work.conversation.conversation_key) == (cid, "chat-1")
    assert work.conversation.state == "new"
    assert work.inbox is not None
    assert (work.inbox.id, work.inbox.event_id, work.inbox.status) == (
        first,
        "e1",
        InboxStatus.PENDING,
    )
    assert work.outbox == []
    await store.release_all(A)

    ids = await add_outbox(store, cid, OUTBOX_BATCH + 5)
    work = await store.claim(cid, A, TTL)
    assert work is not None
    assert [o.id for o in work.outbox] == ids[:OUTBOX_BATCH]  # oldest first, one batch
    assert work.outbox[0].elements == [{"text": "r0"}]
    assert {o.status for o in work.outbox} == {OutboxStatus.PENDING}


async def test_finish_with_nothing_pending_releases_and_clears_due(
    store: Store, engine: AsyncEngine
) -> None:
    _, cid = await accept(store, "e1")
    (iid,) = await inbox_ids(engine, cid)
    assert await store.claim(cid, A, TTL)
    await store.commit(cid, A, Step(inbox_id=iid, outcome=Done(T0, 1)), "telegram")
    assert await store.finish(cid, A, TTL) is None
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["lease_until"], row["due_at"]) == (None, None, None)
    assert await store.due_conversations(10) == []
    assert await store.claim(cid, B, TTL)  # free for anyone


async def test_finish_records_when_the_head_is_due(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    clock.advance(1)
    await accept(store, "e2")  # due now, but behind e1
    first, second = await inbox_ids(engine, cid)

    assert await store.claim(cid, A, TTL)
    # The head failed and waits 100 s: the conversation is due then, not now.
    await store.commit(
        cid,
        A,
        Step(inbox_id=first, outcome=RetryLater(1, clock.now + 100, "timed out")),
        "telegram",
    )
    assert await store.finish(cid, A, TTL) is None
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["lease_until"], row["due_at"]) == (None, None, clock.now + 100)
    assert await next_due_at(store) == clock.now + 100
    assert await store.due_conversations(10) == []
    assert (await head_inbox(store, cid)).id == first  # type: ignore[union-attr]
    second_row = (await rows(engine, inbox, inbox.c.id == second))[0]
    assert second_row["next_attempt_at"] <= clock.now  # due, yet it waits behind the head

    # A pending delivery due now: finish keeps the lease and hands back the work.
    assert await store.claim(cid, A, TTL)
    (new,) = await store.commit(cid, A, Step(replies=(NewReply([{"t": 1}], None),)), "telegram")
    clock.advance(5)
    work = await store.finish(cid, A, 60)
    assert work is not None
    assert [o.id for o in work.outbox] == [new.id]
    assert work.inbox is not None and work.inbox.id == first  # the head, though not yet due
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["lease_until"]) == (A, clock.now + 60)

    # The delivery's head rescheduled further than the inbox head: the inbox head decides.
    await store.update_outbox(cid, A, new.id, DeliveryRetry(1, clock.now + 500, "busy", 0, None))
    assert await store.finish(cid, A, TTL) is None
    assert (await conv_row(engine, cid))["due_at"] == T0 + 101

    # ... and the delivery decides when it is the earlier one.
    assert await store.claim(cid, A, TTL)
    await store.commit(
        cid, A, Step(inbox_id=first, outcome=RetryLater(2, clock.now + 1000, "again")), "telegram"
    )
    assert await store.finish(cid, A, TTL) is None
    assert (await conv_row(engine, cid))["due_at"] == clock.now + 500

    clock.advance(500)
    assert await store.due_conversations(10) == [cid]
    work = await store.claim(cid, B, TTL)
    assert work is not None and [o.id for o in work.outbox] == [new.id]


async def test_finish_by_non_owner_changes_nothing(store: Store, engine: AsyncEngine) -> None:
    _, cid = await accept(store, "e1")
    assert await store.claim(cid, A, TTL)
    before = await conv_row(engine, cid)
    assert await store.finish(cid, B, TTL) is None
    assert await conv_row(engine, cid) == before
    assert await store.finish(99999, A, TTL) is None


async def test_release_all_releases_only_that_owners_leases(
    store: Store, engine: AsyncEngine
) -> None:
    cids = [(await accept(store, f"e{i}", key=f"k{i}"))[1] for i in range(3)]
    assert await store.claim(cids[0], A, TTL)
    assert await store.claim(cids[1], A, TTL)
    assert await store.claim(cids[2], B, TTL)
    assert await store.release_all(A) == 2
    owners = [(await conv_row(engine, c))["lease_owner"] for c in cids]
    assert owners == [None, None, B]
    assert (await conv_row(engine, cids[0]))["lease_until"] is None
    assert (await conv_row(engine, cids[0]))["due_at"] == T0  # the work stays due
    assert await store.due_conversations(10) == cids[:2]
    assert await store.release_all(A) == 0


# --- commit and the lease guard --------------------------------------------------------------


async def test_commit_applies_a_step_atomically(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    (iid,) = await inbox_ids(engine, cid)
    assert await store.claim(cid, A, TTL)
    clock.advance(2)
    step = Step(
        inbox_id=iid,
        outcome=Done(clock.now, 1),
        conversation=SessionOpened("s-1", None, clock.now, None),
        replies=(
            NewReply([{"text": "one"}], {"chat_id": 42}, iid),
            NewReply([{"text": "two"}], None, iid),
            NewReply([{"text": "three"}, {"buttons": ["a"]}], {"x": 1}),
        ),
    )
    created = await store.commit(cid, A, step, "telegram")
    ids = [o.id for o in created]
    assert len(ids) == 3
    assert ids == sorted(ids) and len(set(ids)) == 3

    conv = await conv_row(engine, cid)
    assert (conv["state"], conv["session_id"]) == ("active", "s-1")
    assert conv["updated_at"] == conv["last_activity_at"] == clock.now
    assert conv["lease_owner"] == A  # commit keeps the lease

    (item,) = await rows(engine, inbox)
    assert (item["status"], item["finished_at"], item["attempts"]) == (
        InboxStatus.DONE,
        clock.now,
        1,
    )

    out = await rows(engine, outbox)
    assert [r["id"] for r in out] == ids
    assert [r["elements"] for r in out] == [
        [{"text": "one"}],
        [{"text": "two"}],
        [{"text": "three"}, {"buttons": ["a"]}],
    ]
    assert [r["address"] for r in out] == [{"chat_id": 42}, None, {"x": 1}]
    assert [r["inbox_id"] for r in out] == [iid, iid, None]
    assert {r["channel"] for r in out} == {"telegram"}
    assert {r["status"] for r in out} == {OutboxStatus.PENDING}
    assert {(r["parts_done"], r["attempts"]) for r in out} == {(0, 0)}
    assert {r["next_attempt_at"] for r in out} == {clock.now}
    # What commit returns is what it stored.
    for item, r in zip(created, out, strict=True):
        assert (item.conversation_id, item.inbox_id, item.channel) == (
            cid,
            r["inbox_id"],
            r["channel"],
        )
        assert (item.address, item.elements) == (r["address"], r["elements"])
        assert (item.status, item.parts_done, item.attempts) == (OutboxStatus.PENDING, 0, 0)
        assert (item.next_attempt_at, item.last_error) == (clock.now, None)
    assert await head_outbox(store, cid) == created[0]
    # Each reply is read again by its id (a chip pressed on it: adapters/telegram/keyboards.py).
    assert [await store.outbox_item(i) for i in ids] == created
    assert await store.outbox_item(max(ids) + 1) is None

    assert await store.commit(cid, A, Step(), "telegram") == []  # an empty step is fine


async def _assert_commit_refused(
    store: Store, engine: AsyncEngine, cid: int, owner: str, *, other_writes: bool = True
) -> None:
    (iid,) = await inbox_ids(engine, cid)
    outbox_before = await rows(engine, outbox)
    conv_before = await conv_row(engine, cid)
    inbox_before = await rows(engine, inbox)
    step = Step(
        inbox_id=iid,
        outcome=Done(T0, 1),
        conversation=SessionOpened("stale", None, T0, None),
        replies=(NewReply([{"text": "late"}], None),),
    )
    with pytest.raises(LeaseLost):
        await store.commit(cid, owner, step, "telegram")
    if other_writes:
        (oid,) = [r["id"] for r in outbox_before]
        with pytest.raises(LeaseLost):
            await store.update_outbox(cid, owner, oid, Sent(T0, 1, None))
        assert await store.fail_pending_outbox(cid, owner, "gone") == 0
    assert await conv_row(engine, cid) == conv_before
    assert await rows(engine, inbox) == inbox_before
    assert await rows(engine, outbox) == outbox_before


async def test_commit_after_the_lease_expired_is_refused(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    assert await store.claim(cid, A, TTL)
    clock.advance(TTL + 1)  # expired, nobody took over yet
    # Only commit checks lease_until; the outbox writes check the owner alone.
    await _assert_commit_refused(store, engine, cid, A, other_writes=False)


async def test_commit_while_another_owner_holds_the_lease_is_refused(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    await add_outbox(store, cid, 1)
    assert await store.claim(cid, A, TTL)
    clock.advance(TTL + 1)
    assert await store.claim(cid, B, TTL)
    await _assert_commit_refused(store, engine, cid, A)


async def test_commit_without_a_lease_is_refused(store: Store, engine: AsyncEngine) -> None:
    _, cid = await accept(store, "e1")
    await add_outbox(store, cid, 1)
    await _assert_commit_refused(store, engine, cid, A)


# --- heads, outbox updates -------------------------------------------------------------------


async def test_heads_are_the_oldest_pending_rows(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    _, other = await accept(store, "x1", key="other")
    assert await head_outbox(store, cid) is None
    clock.advance(1)
    await accept(store, "e2")
    first, second = await inbox_ids(engine, cid)

    head = await head_inbox(store, cid)
    assert head is not None
    assert (head.id, head.event_id, head.text) == (first, "e1", "hello")
    assert head.status is InboxStatus.PENDING
    assert head.address == {"chat_id": 42}
    assert head.context == {"locale": "de"}
    assert head.created_at == T0

    await set_inbox(store, cid, first, Done(clock.now, 1))
    assert (await head_inbox(store, cid)).id == second  # type: ignore[union-attr]
    await set_inbox(store, cid, second, DeadLetter("boom", clock.now, 1))
    assert await head_inbox(store, cid) is None
    assert (await head_inbox(store, other)).event_id == "x1"  # type: ignore[union-attr]

    o1, o2 = await add_outbox(store, cid, 2)
    await add_outbox(store, other, 1)
    out = await head_outbox(store, cid)
    assert out is not None
    assert (out.id, out.elements, out.parts_done) == (o1, [{"text": "r0"}], 0)
    assert out.status is OutboxStatus.PENDING
    assert out.channel == "telegram"

    assert await store.claim(cid, A, TTL)
    await store.update_outbox(cid, A, o1, DeliveryRetry(2, clock.now, "slow", 1, None))
    out = await head_outbox(store, cid)
    assert out is not None
    assert (out.id, out.parts_done, out.attempts, out.last_error) == (o1, 1, 2, "slow")
    await store.update_outbox(cid, A, o1, Sent(clock.now, 1, "m-1"))
    assert (await head_outbox(store, cid)).id == o2  # type: ignore[union-attr]
    (sent,) = await rows(engine, outbox, outbox.c.id == o1)
    assert (sent["status"], sent["platform_message_id"]) == (OutboxStatus.SENT, "m-1")


async def test_update_outbox_is_guarded(store: Store, engine: AsyncEngine) -> None:
    _, cid = await accept(store, "e1")
    (oid,) = await add_outbox(store, cid, 1)
    assert await store.claim(cid, A, TTL)
    before = await rows(engine, outbox)
    with pytest.raises(LeaseLost):
        await store.update_outbox(cid, B, oid, Sent(T0, 1, None))
    assert await rows(engine, outbox) == before


async def test_fail_pending_outbox_fails_only_pending_rows(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    _, other = await accept(store, "x1", key="other")
    o1, o2, o3 = await add_outbox(store, cid, 3)
    (o_other,) = await add_outbox(store, other, 1)
    assert await store.claim(cid, A, TTL)
    await store.update_outbox(cid, A, o1, Sent(T0, 1, None))
    clock.advance(3)
    assert await store.fail_pending_outbox(cid, A, "recipient gone") == 2
    by_id = {r["id"]: r for r in await rows(engine, outbox)}
    assert by_id[o1]["status"] == OutboxStatus.SENT
    assert by_id[o1]["last_error"] is None
    for oid in (o2, o3):
        assert (by_id[oid]["status"], by_id[oid]["last_error"], by_id[oid]["finished_at"]) == (
            OutboxStatus.FAILED,
            "recipient gone",
            T0 + 3,
        )
    assert by_id[o_other]["status"] == OutboxStatus.PENDING  # other conversations untouched
    assert await head_outbox(store, cid) is None
    assert await store.fail_pending_outbox(cid, A, "again") == 0


# --- housekeeping ----------------------------------------------------------------------------


async def test_idle_conversations_are_active_ones_without_recent_activity(
    store: Store, clock: FakeClock
) -> None:
    _, active = await accept(store, "e1", key="active")
    _, fresh = await accept(store, "e2", key="fresh")
    _, new = await accept(store, "e3", key="new")  # never launched: never idle
    assert await store.claim(active, A, TTL)
    await store.commit(
        active,
        A,
        Step(conversation=SessionOpened("s-1", None, clock.now, {"c": 1})),
        "telegram",
    )
    clock.advance(50)
    assert await store.claim(fresh, A, TTL)
    await store.commit(
        fresh, A, Step(conversation=SessionOpened("s-2", None, clock.now, None)), "telegram"
    )
    clock.advance(50)  # active: idle 100 s; fresh: idle 50 s

    idle = await store.idle_conversations(75)
    assert [c.id for c in idle] == [active]
    assert (idle[0].session_id, idle[0].address, idle[0].state) == ("s-1", {"c": 1}, "active")
    assert sorted(c.id for c in await store.idle_conversations(10)) == sorted([active, fresh])
    assert await store.idle_conversations(500) == []
    assert len(await store.idle_conversations(10, limit=1)) == 1
    assert new not in [c.id for c in await store.idle_conversations(0)]


async def test_enqueue_internal_dedups_and_sets_due_only_when_idle(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    cid = await answering(store, engine, session=SessionOpened("s-1", None, T0, {"chat_id": 7}))
    assert await store.finish(cid, A, TTL) is None
    assert (await conv_row(engine, cid))["due_at"] is None

    clock.advance(100)
    conv = await conversation(store, cid)
    assert await store.enqueue_internal(conv, InboundKind.IDLE, "idle:s-1")
    assert (await conv_row(engine, cid))["due_at"] == clock.now
    item = await head_inbox(store, cid)
    assert item is not None
    assert (item.event_id, item.kind, item.text, item.context) == ("idle:s-1", "idle", None, None)
    assert item.address == {"chat_id": 7}
    assert (item.channel, item.next_attempt_at) == ("telegram", clock.now)
    assert item.status is InboxStatus.PENDING

    clock.advance(1)
    assert not await store.enqueue_internal(conv, InboundKind.IDLE, "idle:s-1")  # already queued
    assert len(await inbox_ids(engine, cid)) == 2
    assert (await conv_row(engine, cid))["due_at"] == clock.now - 1

    # Already due later (a retry waits): due_at moves to now, like accept(); the worker that
    # wakes finds the head not due and finish() puts due_at back from the queue heads.
    await set_columns(engine, conversations, cid, due_at=clock.now + 300)
    assert await store.enqueue_internal(conv, InboundKind.IDLE, "idle:s-2")
    assert (await conv_row(engine, cid))["due_at"] == clock.now


@pytest.mark.parametrize("batch", [1000, 1])
async def test_purge_removes_only_old_finished_rows(
    store: Store, engine: AsyncEngine, clock: FakeClock, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.store.housekeeping.PURGE_BATCH", batch)  # 1: several rounds
    _, cid = await accept(store, "done-old")
    await accept(store, "dead-old")
    await accept(store, "done-new")
    await accept(store, "pending")
    done_old, dead_old, done_new, pending = await inbox_ids(engine, cid)
    await set_inbox(store, cid, done_old, Done(T0, 1))
    await set_inbox(store, cid, dead_old, DeadLetter("bad", T0 + 1, 1))
    await set_inbox(store, cid, done_new, Done(T0 + 90, 1))

    sent_old, failed_old, sent_new, out_pending = await add_outbox(store, cid, 4)
    assert await store.claim(cid, A, TTL)
    await store.update_outbox(cid, A, sent_old, Sent(T0, 1, None))
    await store.update_outbox(cid, A, failed_old, DeliveryFailed("gone", T0 + 1))
    await store.update_outbox(cid, A, sent_new, Sent(T0 + 90, 1, None))
    await settle(store, cid, A)

    clock.advance(100)
    assert await store.purge(50) == (1, 2)  # cutoff: T0 + 50; dead letters stay
    assert await inbox_ids(engine, cid) == [dead_old, done_new, pending]
    assert [r["id"] for r in await rows(engine, outbox)] == [sent_new, out_pending]
    assert await count(engine, conversations) == 1
    assert await store.purge(50) == (0, 0)

    clock.advance(10_000)
    assert await store.purge(50) == (1, 1)  # pending rows are never purged, however old
    assert await inbox_ids(engine, cid) == [dead_old, pending]
    assert [r["id"] for r in await rows(engine, outbox)] == [out_pending]
    assert await count(engine, conversations) == 1


async def test_stats(store: Store, engine: AsyncEngine, clock: FakeClock) -> None:
    empty = await store.stats()
    assert (empty.pending, empty.oldest_pending_age, empty.dead, empty.outbox_pending) == (
        0,
        0.0,
        0,
        0,
    )
    _, cid = await accept(store, "e1")
    clock.advance(5)
    await accept(store, "e2")
    await accept(store, "e3", key="k2")
    first, _ = await inbox_ids(engine, cid)
    clock.advance(25)
    stats = await store.stats()
    assert (stats.pending, stats.oldest_pending_age, stats.dead) == (3, 30.0, 0)

    await set_inbox(store, cid, first, DeadLetter("bad", clock.now, 1))
    await add_outbox(store, cid, 2)
    stats = await store.stats()
    assert (stats.pending, stats.oldest_pending_age, stats.dead, stats.outbox_pending) == (
        2,
        25.0,
        1,
        2,
    )


async def test_dead_letters_and_retry(store: Store, engine: AsyncEngine, clock: FakeClock) -> None:
    _, tg = await accept(store, "t1", channel="telegram")
    await accept(store, "t2", channel="telegram")
    _, sl = await accept(store, "s1", channel="slack")
    t1, t2 = await inbox_ids(engine, tg)
    (s1,) = await inbox_ids(engine, sl)
    assert await store.dead_letters() == []
    assert await store.retry_dead() == 0

    for cid, iid in ((tg, t1), (tg, t2), (sl, s1)):
        await set_inbox(store, cid, iid, DeadLetter("bad", clock.now, 5))
    # Nothing left pending: both conversations rest.
    assert (await conv_row(engine, tg))["due_at"] is None
    assert (await conv_row(engine, sl))["due_at"] is None

    assert [d.id for d in await store.dead_letters()] == [t1, t2, s1]
    assert [d.id for d in await store.dead_letters(channel="slack")] == [s1]
    assert [d.id for d in await store.dead_letters(channel="telegram", limit=1)] == [t1]
    assert await store.dead_letters(channel="nowhere") == []

    item = await store.inbox_item(t2)
    assert item is not None
    assert (item.event_id, item.attempts, item.last_error) == ("t2", 5, "bad")
    assert item.status is InboxStatus.DEAD
    assert await store.inbox_item(99999) is None

    clock.advance(60)
    assert await store.retry_dead([t2]) == 1
    again = await store.inbox_item(t2)
    assert again is not None
    assert (again.status, again.attempts, again.next_attempt_at, again.finished_at) == (
        InboxStatus.PENDING,
        0,
        clock.now,
        None,
    )
    assert (await conv_row(engine, tg))["due_at"] == clock.now
    assert (await conv_row(engine, sl))["due_at"] is None
    assert [d.id for d in await store.dead_letters()] == [t1, s1]
    assert await store.retry_dead([t2]) == 0  # not dead any more
    assert await store.retry_dead([]) == 0

    clock.advance(1)
    assert await store.retry_dead() == 2
    assert await store.dead_letters() == []
    assert {r["status"] for r in await rows(engine, inbox)} == {InboxStatus.PENDING}
    assert (await conv_row(engine, sl))["due_at"] == clock.now
    assert sorted(await store.due_conversations(10)) == sorted([tg, sl])


# --- channel state and named leases ----------------------------------------------------------


async def test_channel_state_is_scoped_by_channel(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    assert await store.state_get("telegram", "offset") is None
    await store.state_put("telegram", "offset", "10")
    await store.state_put("slack", "offset", "abc")
    assert await store.state_get("telegram", "offset") == "10"
    assert await store.state_get("slack", "offset") == "abc"

    clock.advance(5)
    await store.state_put("telegram", "offset", "11")  # overwrite
    assert await store.state_get("telegram", "offset") == "11"
    assert await store.state_get("slack", "offset") == "abc"
    stored = await rows(engine, channel_state, channel_state.c.channel == "telegram")
    assert [(r["key"], r["value"], r["updated_at"]) for r in stored] == [("offset", "11", T0 + 5)]

    await store.state_delete("telegram", "offset")
    assert await store.state_get("telegram", "offset") is None
    assert await store.state_get("slack", "offset") == "abc"
    await store.state_delete("telegram", "offset")  # deleting nothing is fine


async def test_named_leases(store: Store, engine: AsyncEngine, clock: FakeClock) -> None:
    assert await store.acquire_lease("telegram:poller", A, TTL)
    assert not await store.acquire_lease("telegram:poller", B, TTL)
    assert await store.acquire_lease("slack:socket", B, TTL)  # names are independent
    clock.advance(20)
    assert await store.acquire_lease("telegram:poller", A, TTL)  # re-entrant: renews
    (row,) = await rows(engine, leases, leases.c.name == "telegram:poller")
    assert (row["owner"], row["expires_at"]) == (A, clock.now + TTL)

    clock.advance(TTL)  # at expires_at: still A's
    assert not await store.acquire_lease("telegram:poller", B, TTL)
    clock.advance(1)
    assert await store.acquire_lease("telegram:poller", B, TTL)  # taken over
    assert not await store.acquire_lease("telegram:poller", A, TTL)

    await store.release_lease("telegram:poller", A)  # not A's: nothing happens
    assert not await store.acquire_lease("telegram:poller", A, TTL)
    await store.release_lease("telegram:poller", B)
    assert await rows(engine, leases, leases.c.name == "telegram:poller") == []
    assert await store.acquire_lease("telegram:poller", A, TTL)


async def test_concurrent_named_lease_acquisition_has_one_winner(store: Store) -> None:
    results = await asyncio.gather(
        *(store.acquire_lease("poller", f"owner-{i}", TTL) for i in range(10))
    )
    assert sum(results) == 1


# --- races between a finishing worker and new work -------------------------------------------


async def _race_with_finish(store: Store, engine: AsyncEngine, cid: int, work: Any) -> None:
    """Run ``work`` while a worker is in the middle of ``finish`` (holding the row lock, having
    computed that nothing is pending), then let the worker write due_at = NULL."""
    async with engine.connect() as conn:
        await conn.execute(
            select(conversations.c.id).where(conversations.c.id == cid).with_for_update()
        )
        task = asyncio.create_task(work())
        if engine.dialect.name == "postgresql":
            # Wait until the work either finished or waits for our lock.
            for _ in range(500):
                if task.done():
                    break
                waiting = (
                    await conn.execute(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE NOT granted "
                            "AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
                        )
                    )
                ).scalar_one()
                if waiting:
                    break
                await asyncio.sleep(0.01)
            else:  # pragma: no cover
                raise AssertionError("the concurrent work neither ran nor waited")
        else:
            # One pooled connection: the work queues behind this transaction.
            await asyncio.sleep(0.05)
            assert not task.done()
        await conn.execute(
            update(conversations)
            .where(conversations.c.id == cid)
            .values(lease_owner=None, lease_until=None, due_at=None)
        )
        await conn.commit()
    await task


@pytest.mark.parametrize("batch", [False, True], ids=["accept", "accept_many"])
async def test_accept_racing_finish_leaves_the_conversation_due(
    store: Store, engine: AsyncEngine, clock: FakeClock, batch: bool
) -> None:
    _, cid = await accept(store, "e1")
    (iid,) = await inbox_ids(engine, cid)
    await set_inbox(store, cid, iid, Done(clock.now, 1))
    assert await store.claim(cid, A, TTL)
    clock.advance(1)

    async def second() -> Any:
        if batch:
            return await store.accept_many("telegram", [new_event("e2")])
        return await accept(store, "e2")

    await _race_with_finish(store, engine, cid, second)
    assert (await conv_row(engine, cid))["due_at"] == clock.now
    assert await store.due_conversations(10) == [cid]


async def test_enqueue_internal_racing_finish_leaves_the_conversation_due(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    session = SessionOpened("s-1", None, clock.now, None)
    cid = await answering(store, engine, at=clock.now, session=session)
    # While the worker runs, due_at still holds its old value (not NULL).
    assert (await conv_row(engine, cid))["due_at"] == T0
    clock.advance(100)
    conv = await conversation(store, cid)
    await _race_with_finish(
        store, engine, cid, lambda: store.enqueue_internal(conv, InboundKind.IDLE, "idle:s-1")
    )
    assert (await head_inbox(store, cid)).event_id == "idle:s-1"  # type: ignore[union-attr]
    assert (await conv_row(engine, cid))["due_at"] == clock.now
    assert await store.due_conversations(10) == [cid]


def new_event(event_id: str, key: str = "chat-1", text: str | None = "hello") -> NewEvent:
    return NewEvent(
        event_id=event_id,
        conversation_key=key,
        requester_id=f"user-{key}",
        kind=InboundKind.TEXT,
        text=text,
        address={"chat_id": key},
        context=None,
    )


async def test_accept_many_stores_a_batch_with_its_state_in_one_go(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, old_cid = await accept(store, "e0", key="chat-1")
    clock.advance(5)
    batch = [
        new_event("e1", "chat-1"),
        new_event("e2", "chat-2", "first"),
        new_event("e0", "chat-1"),  # stored before: a duplicate
        new_event("e3", "chat-2", "second"),
        new_event("e2", "chat-2", "again"),  # repeated inside the batch: a duplicate
    ]
    results = await store.accept_many("telegram", batch, {"offset": "17"})
    cid2 = results[1][1]
    assert results == [(True, old_cid), (True, cid2), (False, old_cid), (True, cid2), (False, cid2)]
    assert cid2 != old_cid
    assert [r["text"] for r in await rows(engine, inbox, inbox.c.conversation_id == cid2)] == [
        "first",
        "second",
    ]
    old_rows = await rows(engine, inbox, inbox.c.conversation_id == old_cid)
    assert [r["event_id"] for r in old_rows] == ["e0", "e1"]
    conv = await conv_row(engine, cid2)
    assert (conv["requester_id"], conv["state"]) == ("user-chat-2", "new")
    assert conv["due_at"] == clock.now
    # the old conversation's due_at stays at its earlier value (brought forward, never back)
    assert (await conv_row(engine, old_cid))["due_at"] == T0
    assert await store.state_get("telegram", "offset") == "17"
    assert sorted(await store.due_conversations(10)) == sorted([old_cid, cid2])


async def test_accept_many_state_alone_and_nothing(store: Store, engine: AsyncEngine) -> None:
    assert await store.accept_many("telegram", []) == []
    assert await store.accept_many("telegram", [], {"offset": "3"}) == []
    assert await store.accept_many("telegram", [], {"offset": "4"}) == []
    assert await store.state_get("telegram", "offset") == "4"
    assert await count(engine, inbox) == 0


async def test_accept_many_is_all_or_nothing(store: Store, engine: AsyncEngine) -> None:
    # NULL where the schema says NOT NULL: refused for good, and nothing of the batch is kept.
    bad = dataclasses.replace(new_event("e2", "chat-2"), kind=None)  # type: ignore[arg-type]
    with pytest.raises(DataRefused):
        await store.accept_many("telegram", [new_event("e1"), bad], {"offset": "9"})
    assert await count(engine, inbox) == 0
    assert await count(engine, conversations) == 0
    assert await store.state_get("telegram", "offset") is None


async def test_acks_are_recorded_with_the_next_commit_or_finish(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    _, cid = await accept(store, "e1")
    first, second, third = await add_outbox(store, cid, 3)
    assert await store.claim(cid, A, TTL)
    sent = Sent(clock.now, 1, None)
    await store.commit(cid, A, Step(), "telegram", [OutboxAck(first, sent)])
    assert [r["status"] for r in await rows(engine, outbox)] == ["sent", "pending", "pending"]
    work = await store.finish(cid, A, TTL, [OutboxAck(second, sent)])
    assert [r["status"] for r in await rows(engine, outbox)] == ["sent", "sent", "pending"]
    # work is due, so finish kept the lease; recorded replies do not come back as work
    assert work is not None and [o.id for o in work.outbox] == [third]
    # without the lease nothing is recorded
    assert await store.finish(cid, B, TTL, [OutboxAck(third, sent)]) is None
    with pytest.raises(LeaseLost):
        await store.commit(cid, B, Step(), "telegram", [OutboxAck(third, sent)])
    assert [r["status"] for r in await rows(engine, outbox)] == ["sent", "sent", "pending"]


async def test_finish_decides_on_the_queues_as_its_acks_leave_them(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    """finish() records its acks and then decides: a reply the acks settle no longer keeps
    the lease, and one they reschedule makes the conversation due at its new time."""
    _, cid = await accept(store, "e1")
    (iid,) = await inbox_ids(engine, cid)
    (only,) = await add_outbox(store, cid, 1)
    assert await store.claim(cid, A, TTL)
    await store.commit(cid, A, Step(inbox_id=iid, outcome=Done(clock.now, 1)), "telegram")

    retry = DeliveryRetry(1, clock.now + 100, "busy", 0, None)
    assert await store.finish(cid, A, TTL, [OutboxAck(only, retry)]) is None
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["due_at"]) == (None, clock.now + 100)

    clock.advance(100)
    work = await store.claim(cid, A, TTL)
    assert work is not None and [o.id for o in work.outbox] == [only]
    sent = Sent(clock.now, 1, None)
    assert await store.finish(cid, A, TTL, [OutboxAck(only, sent)]) is None
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["lease_until"], row["due_at"]) == (None, None, None)
    assert [r["status"] for r in await rows(engine, outbox)] == ["sent"]


def acked_twice(reply: int) -> list[OutboxAck]:
    """A reply whose first part was sent before its delivery failed for good: the second ack
    writes no parts, so the first one's stay (as when the two are written one by one)."""
    return [
        OutboxAck(reply, DeliveryRetry(1, T0, "busy", 1, "m-1")),
        OutboxAck(reply, DeliveryFailed("gone", T0)),
    ]


async def test_finish_records_every_ack_of_a_reply_acked_twice(
    store: Store, engine: AsyncEngine
) -> None:
    _, cid = await accept(store, "e1")
    (iid,) = await inbox_ids(engine, cid)
    (reply,) = await add_outbox(store, cid, 1)
    assert await store.claim(cid, A, TTL)
    await store.commit(cid, A, Step(inbox_id=iid, outcome=Done(T0, 1)), "telegram")
    assert await store.finish(cid, A, TTL, acked_twice(reply)) is None
    ((row,),) = [await rows(engine, outbox)]
    assert (row["status"], row["parts_done"], row["platform_message_id"]) == ("failed", 1, "m-1")


async def test_commit_records_every_ack_of_a_reply_acked_twice(
    store: Store, engine: AsyncEngine
) -> None:
    _, cid = await accept(store, "e1")
    (reply,) = await add_outbox(store, cid, 1)
    assert await store.claim(cid, A, TTL)
    step = Step(conversation=Answered(T0, None))
    await store.commit(cid, A, step, "telegram", acked_twice(reply))
    ((row,),) = [await rows(engine, outbox)]
    assert (row["status"], row["parts_done"], row["platform_message_id"]) == ("failed", 1, "m-1")


async def test_migrated_fixture_tables_start_empty(engine: AsyncEngine) -> None:
    for table in (conversations, inbox, outbox, channel_state, leases):
        assert await count(engine, table) == 0
    status = await migrate(engine)  # the fixture already migrated: nothing to do
    assert status.up_to_date


async def test_purge_removes_old_temporary_channel_state(store: Store, clock: FakeClock) -> None:
    await store.state_put("tg", "tmp:kb:old", "[]")
    await store.state_put("tg", "offset", "41")
    clock.advance(1000)
    await store.state_put("tg", "tmp:kb:new", "[]")
    await store.purge(500)
    assert await store.state_get("tg", "tmp:kb:old") is None
    assert await store.state_get("tg", "tmp:kb:new") == "[]"
    assert await store.state_get("tg", "offset") == "41"  # only tmp: keys age out


# --- leases taken at intake ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True], ids=["one-event", "batch"])
async def test_intake_leases_an_idle_conversation_with_the_work_claim_would_read(
    store: Store, engine: AsyncEngine, clock: FakeClock, batch: bool
) -> None:
    """One event goes through each backend's one-row path (on PostgreSQL one statement), a
    batch through SQLAlchemy's batched VALUES: both must lease and hand back the same work."""
    events = [new_event("e1", "chat-1")] + ([new_event("x", "chat-0")] if batch else [])
    got = await store.accept_claiming("telegram", events, None, Claim(A, TTL, 10))
    cid = got.results[0][1]
    assert got.results[0] == (True, cid)
    assert set(got.claimed) == {cid for _, cid in got.results}
    row = await conv_row(engine, cid)
    assert (row["lease_owner"], row["lease_until"], row["due_at"]) == (A, T0 + TTL, T0)
    # Exactly what the lease holder's own claim reads now (it is re-entrant).
    assert got.claimed[cid] == await store.claim(cid, A, TTL)
    assert got.claimed[cid].inbox is not None and got.claimed[cid].inbox.event_id == "e1"

    # Released with nothing left: idle again, and the next event leases it again (its row
    # now with an address: JSON read back through each path's result processing).
    (iid,) = await inbox_ids(engine, cid)
    step = Step(inbox_id=iid, outcome=Done(T0, 1), conversation=Answered(T0, {"chat_id": 42}))
    await store.commit(cid, A, step, "telegram")
    assert await store.finish(cid, A, TTL) is None
    clock.advance(5)
    events = [new_event("e2", "chat-1")] + ([new_event("y", "chat-0")] if batch else [])
    got = await store.accept_claiming("telegram", events, None, Claim(B, TTL, 10))
    work = got.claimed[cid]
    assert work.inbox is not None and work.inbox.event_id == "e2"
    assert work.conversation.address == {"chat_id": 42}
    assert work == await store.claim(cid, B, TTL)
    assert (await conv_row(engine, cid))["lease_owner"] == B


@pytest.mark.parametrize("batch", [False, True], ids=["one-event", "batch"])
async def test_intake_leases_only_conversations_without_a_lease_or_work_due(
    store: Store, engine: AsyncEngine, clock: FakeClock, batch: bool
) -> None:
    _, held = await accept(store, "h1", key="held")
    _, waiting = await accept(store, "w1", key="waiting")
    assert await store.claim(held, B, TTL)
    assert await store.claim(waiting, B, TTL)
    (w1,) = await inbox_ids(engine, waiting)
    # A retry waits 100 s: no lease, but work is due later (due_at is set).
    await store.commit(
        waiting,
        B,
        Step(inbox_id=w1, outcome=RetryLater(1, T0 + 100, "timed out")),
        "telegram",
    )
    assert await store.finish(waiting, B, TTL) is None
    for key in ("held", "waiting"):
        extra = [new_event(f"{key}-x", "zz-idle")] if batch else []
        got = await store.accept_claiming(
            "telegram", [new_event(f"{key}-2", key), *extra], None, Claim(A, TTL, 10)
        )
        cid = got.results[0][1]
        assert got.results[0] == (True, cid)
        assert cid not in got.claimed
    assert (await conv_row(engine, held))["lease_owner"] == B
    row = await conv_row(engine, waiting)
    assert (row["lease_owner"], row["lease_until"], row["due_at"]) == (None, None, T0)
    # Without a claim nothing is leased.
    got = await store.accept_claiming("telegram", [new_event("n1", "new")], None, None)
    assert got.claimed == {}
    assert (await conv_row(engine, got.results[0][1]))["lease_owner"] is None


async def test_intake_leases_up_to_its_limit_in_key_order_and_the_first_event_leads(
    store: Store, engine: AsyncEngine
) -> None:
    batch = [
        new_event("c1", "chat-c"),
        new_event("a1", "chat-a", "first"),
        new_event("b1", "chat-b"),
        new_event("a2", "chat-a", "second"),
    ]
    got = await store.accept_claiming("telegram", batch, None, Claim(A, TTL, 2))
    cid = {e.conversation_key: c for e, (_, c) in zip(batch, got.results, strict=True)}
    assert set(got.claimed) == {cid["chat-a"], cid["chat-b"]}
    head = got.claimed[cid["chat-a"]].inbox
    assert head is not None and (head.event_id, head.text) == ("a1", "first")
    assert (await conv_row(engine, cid["chat-c"]))["lease_owner"] is None
    assert await store.due_conversations(10) == [cid["chat-c"]]


async def test_a_duplicate_leases_an_idle_conversation_with_nothing_to_do(
    store: Store, engine: AsyncEngine
) -> None:
    cid = await answering(store, engine)
    assert await store.finish(cid, A, TTL) is None
    got = await store.accept_claiming("telegram", [new_event("e1")], None, Claim(A, TTL, 1))
    assert got.results == [(False, cid)]
    assert got.claimed[cid].inbox is None and got.claimed[cid].outbox == []
    assert await store.finish(cid, A, TTL) is None  # the worker just lets it go
    assert (await conv_row(engine, cid))["lease_owner"] is None


async def test_intake_does_not_mistake_its_owners_earlier_lease_for_one_it_took(
    store: Store, engine: AsyncEngine
) -> None:
    """The fake clock stands still: a lease the same owner took at the same reading, for the
    same length, must still not look like one intake took (its worker is already at it)."""
    _, cid = await accept(store, "e1")
    assert await store.claim(cid, A, TTL)
    got = await store.accept_claiming("telegram", [new_event("e2")], None, Claim(A, TTL, 1))
    assert got.results == [(True, cid)]
    assert got.claimed == {}


async def test_finish_goes_on_with_an_event_stored_after_its_clock_reading(
    store: Store, engine: AsyncEngine, clock: FakeClock
) -> None:
    """An event that was never tried is due now, even if the intake that stored it read the
    clock after finish did (a user who writes again while the answer is being delivered)."""
    cid = await answering(store, engine)
    clock.advance(1)
    await accept(store, "e2")
    clock.now -= 0.5  # finish's reading came first
    work = await store.finish(cid, A, TTL)
    assert work is not None and work.inbox is not None and work.inbox.event_id == "e2"

    # A retry that waits is not due before its time, whatever its age.
    await store.commit(
        cid,
        A,
        Step(inbox_id=work.inbox.id, outcome=RetryLater(1, clock.now + 1, "timed out")),
        "telegram",
    )
    assert await store.finish(cid, A, TTL) is None
    assert (await conv_row(engine, cid))["due_at"] == clock.now + 1
