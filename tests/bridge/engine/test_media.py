"""The worker's media step (bridge/engine/media.py) with the real engine and store (SQLite
and PostgreSQL), the simulator as Parloa and a fake adapter serving files: what Parloa is
told, what is stored, and that an attachment never costs the user their message."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.channel import StoredUpload
from bridge.config import MessagesConfig
from bridge.devtools.faults import Faults
from bridge.devtools.simulator import RunningSimulator
from bridge.media.attachments import (
    STORED_PREFIX,
    Attachment,
    AttachmentRetryable,
    AttachmentType,
)
from bridge.media.speech import SpeechSettings, SpeechToText
from bridge.media.urls import check
from bridge.metrics import Metrics
from bridge.store import Store
from tests.fakes.speech import FakeSpeech
from tests.support.engine import CHANNEL, FakeAdapter, Harness, harness, inbound
from tests.support.media import BASE, KEY, media

PHOTO = os.urandom(250_000)  # three of the fake's chunks, and more than one of the store's


def message_context(h: Harness, conversation: str) -> list[dict[str, Any]]:
    """The context items of every message event Parloa answered for the conversation."""
    requester = f"{CHANNEL}:user-{conversation}"
    return [
        {i["key"]: i["value"] for i in (r.context or [])}
        for r in h.simulator.state.requests
        if r.requester_id == requester and r.event_type == "message" and r.status == 200
    ]


async def stored_bytes(store: Store, url: str) -> bytes:
    """The bytes behind a signed URL, after checking its signature as the route does."""
    parts = urlsplit(url)
    media_id = parts.path.rsplit("/", 1)[1]
    query = parse_qs(parts.query)
    check(KEY, media_id, query["exp"][0], query["sig"][0], now=0)
    file = await store.media_file(media_id)
    assert file is not None
    return b"".join([chunk async for chunk in store.media_bytes(file)])


def photo(locator: str = "file-1", **kw: Any) -> Attachment:
    return Attachment(AttachmentType.PHOTO, locator, **{"name": "broken.jpg", **kw})


async def answered(h: Harness, conversation: str, text: str) -> None:
    await h.adapter.wait_for(lambda: f"You said: {text}" in h.adapter.texts(conversation))


async def test_a_photo_with_a_caption(store: Store, sim: RunningSimulator) -> None:
    adapter = FakeAdapter(files={"file-1": PHOTO})
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        await h.engine.intake(CHANNEL).accept(
            inbound("c1", "it broke", attachments=(photo(size=len(PHOTO)),))
        )
        await answered(h, "c1", "it broke")
        (context,) = message_context(h, "c1")
    url = context.pop("attachmentUrl")
    assert context == {
        "platform": "test",
        "brand": "acme",
        "attachmentType": "photo",
        "attachmentMimeType": "image/jpeg",
        "attachmentSize": len(PHOTO),
        "attachmentName": "broken.jpg",
    }
    assert url.startswith(f"{BASE}/media/")
    assert await stored_bytes(store, url) == PHOTO


async def test_without_a_caption_the_placeholder_is_the_text(
    store: Store, sim: RunningSimulator
) -> None:
    adapter = FakeAdapter(files={"f": b"%PDF-1.7 ..."})
    messages = MessagesConfig(attachment_placeholders={"document": "[Dokument]"})
    document = Attachment(AttachmentType.DOCUMENT, "f", name="invoice.pdf")
    with_messages = media(messages=messages)
    async with harness(store, sim, adapter=adapter, media=with_messages, messages=messages) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "", attachments=(document,)))
        await answered(h, "c1", "[Dokument]")
        (context,) = message_context(h, "c1")
    assert context["attachmentMimeType"] == "application/pdf"
    assert context["attachmentName"] == "invoice.pdf"


async def test_locations_and_contacts_carry_their_data(store: Store, sim: RunningSimulator) -> None:
    place = Attachment(AttachmentType.LOCATION, latitude=52.52, longitude=13.405)
    person = Attachment(AttachmentType.CONTACT, contact_name="Ada L", contact_phone="+4930123")
    adapter = FakeAdapter()
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "", attachments=(place,)))
        await h.engine.intake(CHANNEL).accept(inbound("c2", "", attachments=(person,)))
        await answered(h, "c1", "[location]")
        await answered(h, "c2", "[contact]")
        (located,) = message_context(h, "c1")
        (contact,) = message_context(h, "c2")
    assert adapter.fetches == []
    assert {k: located[k] for k in ("attachmentType", "latitude", "longitude")} == {
        "attachmentType": "location",
        "latitude": 52.52,
        "longitude": 13.405,
    }
    assert {k: contact[k] for k in ("attachmentType", "contactName", "contactPhone")} == {
        "attachmentType": "contact",
        "contactName": "Ada L",
        "contactPhone": "+4930123",
    }


async def test_too_large_declared_or_streamed(store: Store, sim: RunningSimulator) -> None:
    adapter = FakeAdapter(files={"big": b"x" * 5000, "liar": b"y" * 5000})
    async with harness(store, sim, adapter=adapter, media=media(max_bytes=4096)) as h:
        intake = h.engine.intake(CHANNEL)
        await intake.accept(inbound("c1", "a", attachments=(photo("big", size=5000),)))
        await intake.accept(inbound("c2", "b", attachments=(photo("liar", size=10),)))
        await answered(h, "c1", "a")
        await answered(h, "c2", "b")
        (declared,) = message_context(h, "c1")
        (streamed,) = message_context(h, "c2")
    assert adapter.fetches == ["liar"], "a file declared too large is not downloaded"
    for context in (declared, streamed):
        assert context["attachmentTooLarge"] is True
        assert "attachmentUrl" not in context
    async with store._core.engine.connect() as conn:  # nothing of the streamed one is kept
        from sqlalchemy import func, select

        from bridge.store.schema import media as media_table
        from bridge.store.schema import media_chunks

        assert (await conn.execute(select(func.count()).select_from(media_table))).scalar() == 0
        assert (await conn.execute(select(func.count()).select_from(media_chunks))).scalar() == 0


async def test_a_transient_failure_is_retried_then_answered(
    store: Store, sim: RunningSimulator
) -> None:
    adapter = FakeAdapter(
        files={"file-1": PHOTO}, file_failures=[AttachmentRetryable("502 from the platform")]
    )
    metrics = Metrics()
    async with harness(store, sim, adapter=adapter, media=media(metrics=metrics)) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "x", attachments=(photo(),)))
        await answered(h, "c1", "x")
        (context,) = message_context(h, "c1")
    assert adapter.fetches == ["file-1", "file-1"]
    counted = metrics.attachments.labels
    assert counted(CHANNEL, "photo", "retry")._value.get() == 1
    assert counted(CHANNEL, "photo", "stored")._value.get() == 1
    assert metrics.attachment_bytes.labels(CHANNEL)._value.get() == len(PHOTO)
    assert await stored_bytes(store, context["attachmentUrl"]) == PHOTO


async def test_a_file_gone_still_reaches_parloa(store: Store, sim: RunningSimulator) -> None:
    adapter = FakeAdapter()  # serves nothing: every file is unavailable
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "", attachments=(photo(),)))
        await answered(h, "c1", "[photo]")
        (context,) = message_context(h, "c1")
    assert context["attachmentType"] == "photo" and "attachmentUrl" not in context


async def test_a_retry_after_parloa_failed_does_not_download_again(
    store: Store, sim: RunningSimulator
) -> None:
    sim.state.faults = Faults(status=503)
    adapter = FakeAdapter(files={"file-1": PHOTO})
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "x", attachments=(photo(),)))
        async with asyncio.timeout(10):
            await sim.state.wait_for(lambda s: s.stats().by_status.get(503, 0) >= 2)
        sim.state.faults = Faults()
        await answered(h, "c1", "x")
    assert adapter.fetches == ["file-1"]


async def test_several_files_become_one_event(store: Store, sim: RunningSimulator) -> None:
    files = {f"p{i}": os.urandom(1000 + i) for i in range(3)}
    adapter = FakeAdapter(files=files)
    several = tuple(photo(name, name=f"{name}.png") for name in files)
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "three", attachments=several))
        await answered(h, "c1", "three")
        (context,) = message_context(h, "c1")
    assert context["attachmentCount"] == 3
    urls = context["attachmentUrls"].split(" ")
    assert urls[0] == context["attachmentUrl"]
    assert [await stored_bytes(store, u) for u in urls] == list(files.values())
    assert context["attachmentName"] == "p0.png" and context["attachmentMimeType"] == "image/png"


async def test_a_slow_download_holds_up_its_own_conversation_only(
    store: Store, sim: RunningSimulator
) -> None:
    adapter = FakeAdapter(files={"file-1": PHOTO}, downloads_wait=asyncio.Event())
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        intake = h.engine.intake(CHANNEL)
        await intake.accept(inbound("slow", "photo", attachments=(photo(),)))
        await intake.accept(inbound("other", "hello"))
        await answered(h, "other", "hello")
        assert h.adapter.texts("slow") == [] or "You said: photo" not in h.adapter.texts("slow")
        assert adapter.downloads_wait is not None
        adapter.downloads_wait.set()
        await answered(h, "slow", "photo")


async def test_an_upload_of_another_user_is_not_served(store: Store, sim: RunningSimulator) -> None:
    adapter = FakeAdapter()
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        intake = h.engine.intake(CHANNEL)

        async def body() -> Any:
            yield b"mine"

        theirs = await intake.store_attachment("user-someone", body(), "image/png", "x.png")
        mine = await intake.store_attachment("user-c1", body(), "image/png", "y.png")
        stolen = Attachment(AttachmentType.PHOTO, STORED_PREFIX + theirs)
        own = Attachment(AttachmentType.PHOTO, STORED_PREFIX + mine)
        await intake.accept(inbound("c1", "a", attachments=(stolen,)))
        await intake.accept(inbound("c1", "b", attachments=(own,)))
        await answered(h, "c1", "b")
        first, second = message_context(h, "c1")
    assert "attachmentUrl" not in first
    assert await stored_bytes(store, second["attachmentUrl"]) == b"mine"
    assert second["attachmentName"] == "y.png"


# --- speech-to-text ---------------------------------------------------------------------------


@pytest.fixture
async def speech() -> Any:
    async with FakeSpeech(transcripts={b"OggS voice": "my order never arrived"}) as fake:
        yield fake


def stt(fake: FakeSpeech, session: Any) -> dict[str, SpeechToText]:
    settings = SpeechSettings(url=fake.url, model="whisper-1", api_key=fake.api_key)
    return {"bot": SpeechToText(session, settings)}


async def test_a_voice_note_is_transcribed(
    store: Store, sim: RunningSimulator, speech: FakeSpeech
) -> None:
    import aiohttp

    voice = Attachment(AttachmentType.VOICE, "v1", mime_type="audio/ogg")
    adapter = FakeAdapter(files={"v1": b"OggS voice"})
    async with aiohttp.ClientSession() as session:
        with_stt = media(speech=stt(speech, session))
        async with harness(store, sim, adapter=adapter, media=with_stt) as h:
            event = inbound("c1", "", attachments=(voice,))
            event = dataclasses.replace(event, context={"languageCode": "pt-br"})
            await h.engine.intake(CHANNEL).accept(event)
            await answered(h, "c1", "my order never arrived")
            (context,) = message_context(h, "c1")
    assert context["transcript"] is True and context["attachmentType"] == "voice"
    (request,) = speech.requests
    assert (request.model, request.audio, request.content_type, request.language) == (
        "whisper-1",
        b"OggS voice",
        "audio/ogg",
        "pt",
    )


async def test_speech_to_text_failing_gives_the_placeholder(
    store: Store, sim: RunningSimulator, speech: FakeSpeech
) -> None:
    import aiohttp

    speech.fail_with = 500
    voice = Attachment(AttachmentType.VOICE, "v1", mime_type="audio/ogg")
    adapter = FakeAdapter(files={"v1": b"OggS voice"})
    async with aiohttp.ClientSession() as session:
        with_stt = media(speech=stt(speech, session))
        async with harness(store, sim, adapter=adapter, media=with_stt) as h:
            await h.engine.intake(CHANNEL).accept(inbound("c1", "", attachments=(voice,)))
            await answered(h, "c1", "[voice message]")
            (context,) = message_context(h, "c1")
    assert "transcript" not in context and "attachmentUrl" in context


async def test_without_media_set_up_attachments_are_described_by_type(
    store: Store, sim: RunningSimulator
) -> None:
    async with harness(store, sim) as h:
        await h.engine.intake(CHANNEL).accept(inbound("c1", "", attachments=(photo(),)))
        await answered(h, "c1", "[photo]")
        (context,) = message_context(h, "c1")
    assert context["attachmentType"] == "photo" and "attachmentUrl" not in context


# --- albums -------------------------------------------------------------------------------------


async def test_an_album_becomes_one_event(store: Store, sim: RunningSimulator) -> None:
    files = {f"a{i}": os.urandom(2000 + i) for i in range(3)}
    adapter = FakeAdapter(files=files)
    parts = [photo(name, group="album-1") for name in files]
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        intake = h.engine.intake(CHANNEL)
        # As a platform sends an album: one event per part, the caption on the first.
        results = await intake.accept_many(
            [
                inbound("c1", "the damage" if i == 0 else "", attachments=(part,))
                for i, part in enumerate(parts)
            ]
        )
        assert len(results) == 3
        await intake.accept(inbound("c1", "and one more thing"))
        await answered(h, "c1", "and one more thing")
        contexts = message_context(h, "c1")
        said = [t for t in h.adapter.texts("c1") if t.startswith("You said:")]
    assert said == ["You said: the damage", "You said: and one more thing"]
    album = contexts[0]
    assert album["attachmentCount"] == 3
    urls = album["attachmentUrls"].split(" ")
    assert [await stored_bytes(store, u) for u in urls] == list(files.values())


async def test_an_album_part_arriving_late_goes_on_its_own(
    store: Store, sim: RunningSimulator
) -> None:
    files = {"a0": b"first", "a1": b"second"}
    adapter = FakeAdapter(files=files)
    async with harness(store, sim, adapter=adapter, media=media()) as h:
        intake = h.engine.intake(CHANNEL)
        await intake.accept(inbound("c1", "one", attachments=(photo("a0", group="g"),)))
        await answered(h, "c1", "one")
        await intake.accept(inbound("c1", "two", attachments=(photo("a1", group="g"),)))
        await answered(h, "c1", "two")
        first, second = message_context(h, "c1")
    assert "attachmentCount" not in first and "attachmentCount" not in second
    assert await stored_bytes(store, second["attachmentUrl"]) == b"second"


async def test_an_upload_is_found_only_for_the_user_who_made_it(
    store: Store, sim: RunningSimulator
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"\x89PNG a picture"

    async with harness(store, sim, media=media()) as h:
        intake = h.engine.intake(CHANNEL)
        media_id = await intake.store_attachment("u1", chunks(), "image/png", "a.png")
        found = await intake.stored_upload("u1", media_id)
        assert found == StoredUpload(media_id, "a.png", "image/png", len(b"\x89PNG a picture"))
        assert await intake.stored_upload("u2", media_id) is None
        assert await h.engine.intake("other").stored_upload("u1", media_id) is None
        assert await intake.stored_upload("u1", "no-such-id") is None
