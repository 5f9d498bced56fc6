"""Handover in the engine, with the real store (SQLite and PostgreSQL), the simulator over
HTTP and a recording desk: how it opens, what crosses while handed over, how it ends, and
what Parloa hears when the user is back."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

import pytest

from bridge.channel import AcceptResult, DeliveryRetryable, DeskAction, InboundKind, RecipientGone
from bridge.config import EngineConfig, HandoverConfig, MessagesConfig
from bridge.devtools.demo_bot import HANDOVER_TEXT
from bridge.devtools.simulator import RunningSimulator
from bridge.handover.desk import HandoverEnded, HandoverUnknown
from bridge.handover.events import with_links
from bridge.media.attachments import Attachment, AttachmentType
from bridge.store import Store
from bridge.vocabulary import ConversationState, HandoverOutcome, HandoverState
from tests.handover.support import HandoverHarness, handover_harness
from tests.support.engine import CHANNEL, FAST, FakeAdapter, harness, inbound
from tests.support.media import BASE, media
from tests.support.waiting import poll_until

MESSAGES = MessagesConfig()


@pytest.fixture
async def hh(store: Store, sim: RunningSimulator) -> AsyncIterator[HandoverHarness]:
    async with handover_harness(store, sim) as running:
        yield running


def launches(hh: HandoverHarness) -> list[object]:
    return [r for r in hh.h.simulator.state.requests if r.event_type == "launch"]


def launch_context(hh: HandoverHarness) -> dict[str, object]:
    last = [r for r in hh.h.simulator.state.requests if r.event_type == "launch"][-1]
    return {c["key"]: c["value"] for c in last.context or []}


def sample(hh: HandoverHarness, name: str, **labels: str) -> float | None:
    return hh.h.engine.metrics.registry.get_sample_value(f"parloa_bridge_{name}", labels)


async def handed_over(hh: HandoverHarness, conv: str = "a") -> str:
    """``conv`` asks the bot for a person; the handover's key."""
    await hh.h.send(conv, "hello")
    await hh.h.adapter.wait_for(lambda: len(hh.h.adapter.texts(conv)) == 2)
    await hh.h.send(conv, "I want to talk to a human")
    return await hh.started_key()


async def test_the_payload_opens_a_handover_after_the_other_elements(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    adapter = hh.h.adapter
    await adapter.wait_for(lambda: MESSAGES.handover_started in adapter.texts("a"))
    # the bot's text first, then the notice; the payload never reaches the user
    assert adapter.texts("a")[-2:] == [HANDOVER_TEXT, MESSAGES.handover_started]
    assert [s.kind for s in adapter.sent].count("chips") == 1  # the welcome's only
    started = hh.desk.last("handover.started")
    assert started["reason"] == "the user asked for a person"
    assert started["queue"] == "support"
    assert started["channel"] == "test"
    assert started["user"]["id"] == "user-a"
    roles = [(t["role"], t["text"]) for t in started["transcript"]]
    assert ("user", "hello") in roles
    assert roles[-2:] == [("user", "I want to talk to a human"), ("bot", HANDOVER_TEXT)]
    handover = await hh.h.store.handover(key)
    assert handover is not None and handover.state is HandoverState.OPEN
    conv = await hh.h.store.conversation_by_id(handover.conversation_id)
    assert conv is not None and conv.state is ConversationState.HANDED_OVER


async def test_while_handed_over_the_desk_hears_the_user_and_parloa_does_not(
    hh: HandoverHarness,
) -> None:
    await handed_over(hh)
    asked = len(hh.h.events("a"))
    await hh.h.send("a", "are you there?")
    await hh.desk.wait_for(lambda: "handover.user_message" in hh.desk.types())
    assert hh.desk.last("handover.user_message")["text"] == "are you there?"
    assert len(hh.h.events("a")) == asked


async def test_an_agents_message_reaches_the_user_once_with_the_agents_name(
    hh: HandoverHarness,
) -> None:
    key = await handed_over(hh)
    adapter = hh.h.adapter
    assert await hh.act(key, DeskAction.MESSAGE, "Hi, I am Anna", "m1") is AcceptResult.ACCEPTED
    assert await hh.act(key, DeskAction.MESSAGE, "Hi, I am Anna", "m1") is AcceptResult.DUPLICATE
    await adapter.wait_for(lambda: "Anna: Hi, I am Anna" in adapter.texts("a"))
    await hh.act(key, DeskAction.MESSAGE, "How can I help?", "m2")
    await adapter.wait_for(lambda: "Anna: How can I help?" in adapter.texts("a"))
    assert adapter.texts("a").count("Anna: Hi, I am Anna") == 1
    handover = await hh.h.store.handover(key)
    assert handover is not None
    assert handover.state is HandoverState.TAKEN and handover.taken_by == "Anna"
    assert handover.first_reply_at is not None
    # the desk hears each message as it went out, after the user's copy (the outbox's order)
    await hh.desk.wait_for(lambda: hh.desk.types().count("handover.agent_message") == 2)
    echoes = [e["text"] for e in hh.desk.events if e["type"] == "handover.agent_message"]
    assert echoes == ["Hi, I am Anna", "How can I help?"]
    assert sample(hh, "handover_time_to_first_reply_seconds_count", bot="bot") == 1


async def test_resolve_hands_the_user_back_to_a_new_session_told_so(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    await hh.act(key, DeskAction.TAKE)
    await hh.desk.wait_for(lambda: "handover.taken" in hh.desk.types())
    await hh.act(key, DeskAction.RESOLVE)
    adapter = hh.h.adapter
    await adapter.wait_for(lambda: MESSAGES.handover_ended in adapter.texts("a"))
    await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
    assert hh.desk.last("handover.ended")["outcome"] == "resolved"
    with pytest.raises(HandoverEnded):
        await hh.act(key, DeskAction.MESSAGE, "too late")
    before = len(launches(hh))
    await hh.h.send("a", "thanks, what else?")
    await poll_until(lambda: len(launches(hh)) > before)
    context = launch_context(hh)
    assert context["handoverReturned"] is True
    assert context["handoverOutcome"] == "resolved"
    await poll_until(lambda: hh.h.events("a")[-1] == ("message", "thanks, what else?"))
    handover = await hh.h.store.handover(key)
    assert handover is not None and handover.outcome is HandoverOutcome.RESOLVED
    ended = sample(hh, "handovers_ended_total", bot="bot", desk="console", outcome="resolved")
    assert ended == 1
    assert sample(hh, "handover_time_to_take_seconds_count", bot="bot") == 1
    assert sample(hh, "handovers_started_total", bot="bot", desk="console") == 1
    await hh.h.engine.refresh_gauges()
    assert sample(hh, "handovers_open", bot="bot", desk="console") == 0


async def test_after_end_the_conversation_ends(store: Store, sim: RunningSimulator) -> None:
    settings = HandoverConfig(desk="console", after="end")
    async with handover_harness(store, sim, settings) as hh:
        key = await handed_over(hh)
        await hh.act(key, DeskAction.RESOLVE)
        adapter = hh.h.adapter
        await adapter.wait_for(lambda: MESSAGES.conversation_ended in adapter.texts("a"))
        assert adapter.texts("a")[-2:] == [MESSAGES.handover_ended, MESSAGES.conversation_ended]
        handover = await hh.h.store.handover(key)
        assert handover is not None
        conv = await hh.h.store.conversation_by_id(handover.conversation_id)
        assert conv is not None and conv.state is ConversationState.ENDED
        await hh.h.send("a", "hello again")
        await poll_until(lambda: hh.h.events("a")[-1] == ("message", "hello again"))
        assert "handoverReturned" not in launch_context(hh)


async def test_nobody_takes_it_in_time_the_user_is_back_with_the_bot(
    store: Store, sim: RunningSimulator
) -> None:
    settings = HandoverConfig(desk="console", agent_timeout_seconds=0.2)
    async with handover_harness(store, sim, settings) as hh:
        key = await handed_over(hh)
        adapter = hh.h.adapter

        async def timed_out() -> bool:
            await hh.h.engine.run_housekeeping()
            return MESSAGES.handover_timeout in adapter.texts("a")

        await poll_until(timed_out, within=10)
        await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
        assert hh.desk.last("handover.ended")["outcome"] == "timeout"
        with pytest.raises(HandoverEnded):
            await hh.act(key, DeskAction.MESSAGE, "sorry, I was away")
        await hh.h.send("a", "ok")
        await poll_until(lambda: hh.h.events("a")[-1] == ("message", "ok"))
        assert launch_context(hh)["handoverOutcome"] == "timeout"


async def test_a_taken_handover_does_not_time_out(store: Store, sim: RunningSimulator) -> None:
    settings = HandoverConfig(desk="console", agent_timeout_seconds=0.05)
    async with handover_harness(store, sim, settings) as hh:
        key = await handed_over(hh)
        await hh.act(key, DeskAction.TAKE)
        await hh.desk.wait_for(lambda: "handover.taken" in hh.desk.types())
        handover = await hh.h.store.handover(key)
        assert handover is not None and handover.taken_at is not None
        started = handover.started_at
        await poll_until(lambda: time.time() - started > 0.1)  # past the agent timeout
        await hh.h.engine.run_housekeeping()
        await hh.act(key, DeskAction.MESSAGE, "still here")
        await hh.h.adapter.wait_for(lambda: "Anna: still here" in hh.h.adapter.texts("a"))
        assert "handover.ended" not in hh.desk.types()


async def test_idle_ends_a_handed_over_conversation(store: Store, sim: RunningSimulator) -> None:
    config = EngineConfig(**{**FAST.model_dump(), "idle_timeout_seconds": 0.2})
    async with handover_harness(store, sim, config=config) as hh:
        key = await handed_over(hh)

        async def closed() -> bool:
            await hh.h.engine.run_housekeeping()
            handover = await hh.h.store.handover(key)
            return handover is not None and handover.outcome is HandoverOutcome.IDLE

        await poll_until(closed, within=10)
        await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())


async def test_a_user_command_asks_for_a_person_without_parloa(
    store: Store, sim: RunningSimulator
) -> None:
    settings = HandoverConfig(desk="console", user_commands=["/agent"])
    async with handover_harness(store, sim, settings) as hh:
        await hh.h.send("a", " /AGENT ")
        await hh.started_key()
        await hh.h.adapter.wait_for(lambda: hh.h.adapter.texts("a") == [MESSAGES.handover_started])
        assert hh.h.events("a") == []
        assert hh.desk.last("handover.started")["reason"] == "the user asked for a person"


async def test_stop_while_handed_over_ends_both(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    await hh.h.send("a", kind=InboundKind.STOP)
    await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
    assert hh.desk.last("handover.ended")["outcome"] == "user_left"
    handover = await hh.h.store.handover(key)
    assert handover is not None and handover.outcome is HandoverOutcome.USER_LEFT


async def test_restart_while_handed_over_closes_it_and_launches(hh: HandoverHarness) -> None:
    await handed_over(hh)
    before = len(launches(hh))
    await hh.h.send("a", kind=InboundKind.RESTART)
    await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
    await poll_until(lambda: len(launches(hh)) > before)


async def test_acts_on_unknown_or_foreign_handovers_are_refused(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    with pytest.raises(HandoverUnknown):
        await hh.act("no-such-key", DeskAction.MESSAGE, "hi")
    from bridge.handover.desk import AgentCommand

    with pytest.raises(HandoverUnknown):
        await hh.agents.act("other-bot", AgentCommand(key, "x", DeskAction.MESSAGE, "hi"))


async def test_a_desk_that_fails_gets_the_event_again_in_order(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    hh.desk.failures.append(DeliveryRetryable("desk down", retry_after=0.05))
    await hh.h.send("a", "one")
    await hh.h.send("a", "two")
    said = ["one", "two"]
    await hh.desk.wait_for(
        lambda: [e["text"] for e in hh.desk.events if e["type"] == "handover.user_message"] == said
    )
    assert key


async def test_without_a_desk_the_request_is_ignored(
    store: Store, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "bridge.engine")
    async with harness(store, sim) as h:
        await h.send("a", "a human please")
        await h.adapter.wait_for(lambda: HANDOVER_TEXT in h.adapter.texts("a"))
        await h.send("a", "still the bot?")
        await poll_until(lambda: h.events("a")[-1] == ("message", "still the bot?"))
    assert "desk is not set" in caplog.text


async def test_an_ended_handover_goes_with_the_message_content(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    await hh.h.send("b", "hello")  # another conversation's handover stays while open
    await hh.h.adapter.wait_for(lambda: len(hh.h.adapter.texts("b")) == 2)
    await hh.h.send("b", "a human, please")
    await hh.desk.wait_for(lambda: hh.desk.types().count("handover.started") == 2)
    other = str(hh.desk.last("handover.started")["handover_id"])
    await hh.act(key, DeskAction.RESOLVE)
    await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
    ended = await hh.h.store.handover(key)
    assert ended is not None and ended.ended_at is not None
    ended_at = ended.ended_at
    await poll_until(lambda: time.time() > ended_at)
    await hh.h.store.purge(0.0)
    assert await hh.h.store.handover(key) is None
    assert await hh.h.store.handover(other) is not None


async def test_the_transcript_keeps_the_order_of_one_step(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    handover = await hh.h.store.handover(key)
    assert handover is not None
    turns = await hh.h.store.recent_turns(handover.conversation_id, 20)
    texts = [t.text for t in turns]
    assert texts.index(HANDOVER_TEXT) < texts.index(MESSAGES.handover_started)
    assert texts.index("I want to talk to a human") < texts.index(HANDOVER_TEXT)


async def test_a_desks_retry_of_the_last_act_after_the_end_is_a_duplicate(
    hh: HandoverHarness,
) -> None:
    key = await handed_over(hh)
    assert await hh.act(key, DeskAction.RESOLVE, event_id="resolve-1") is AcceptResult.ACCEPTED
    await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
    assert await hh.act(key, DeskAction.RESOLVE, event_id="resolve-1") is AcceptResult.DUPLICATE
    with pytest.raises(HandoverEnded):
        await hh.act(key, DeskAction.RESOLVE, event_id="resolve-2")


async def test_a_user_who_blocks_the_bot_ends_the_handover(hh: HandoverHarness) -> None:
    key = await handed_over(hh)
    await hh.desk.wait_for(lambda: "handover.started" in hh.desk.types())
    hh.h.adapter.failures.append(RecipientGone("blocked"))
    await hh.act(key, DeskAction.MESSAGE, "are you still there?")
    await hh.desk.wait_for(lambda: "handover.ended" in hh.desk.types())
    assert hh.desk.last("handover.ended")["outcome"] == "user_left"
    handover = await hh.h.store.handover(key)
    assert handover is not None and handover.outcome is HandoverOutcome.USER_LEFT
    conv = await hh.h.store.conversation_by_id(handover.conversation_id)
    assert conv is not None and conv.state is ConversationState.ENDED


async def test_a_photo_reaches_the_desk_as_its_link(store: Store, sim: RunningSimulator) -> None:
    adapter = FakeAdapter(files={"file-1": b"\xff\xd8 a photo"})
    async with handover_harness(store, sim, adapter=adapter, media=media()) as hh:
        key = await handed_over(hh)
        photo = Attachment(AttachmentType.PHOTO, "file-1", name="receipt.jpg")
        await hh.h.engine.intake(CHANNEL).accept(inbound("a", attachments=(photo,)))
        await hh.desk.wait_for(lambda: "handover.user_message" in hh.desk.types())
        said = hh.desk.last("handover.user_message")
        assert said["text"] == "[photo]"
        (sent,) = said["attachments"]
        assert sent["type"] == "photo" and sent["name"] == "receipt.jpg"
        assert str(sent["url"]).startswith(f"{BASE}/media/")
        assert with_links(said["text"], said["attachments"]) == f"[photo]\n{sent['url']}"
        handover = await hh.h.store.handover(key)
        assert handover is not None
        turns = await hh.h.store.recent_turns(handover.conversation_id, 20)
        assert turns[-1].text == "[photo]" and turns[-1].role == "user"
