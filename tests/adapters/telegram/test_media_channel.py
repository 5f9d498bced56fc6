"""Media from Telegram end to end inside one process: the real Service (engine, store, HTTP
server, media worker) with python-telegram-bot fetching files from the fake Bot API (getFile,
then ``/file/bot<token>/…``), and the simulator as Parloa. For every kind of media: the exact
context items Parloa received, the bytes served again at ``attachmentUrl`` without any
credentials, and a tampered signature refused."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest

from bridge.devtools.simulator import RunningSimulator
from bridge.devtools.simulator_state import RecordedRequest
from bridge.service import Service
from tests.fakes.speech import FakeSpeech
from tests.fakes.telegram import JSON, FakeTelegram
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.net import free_port, local_url
from tests.support.service import running_service

TOKEN = "123456:ABC-test-token-0123456789abcdef"
#: what the channel itself tells Parloa about the fake's default private-chat user
OWN = {"platform": "telegram", "chatType": "private", "userName": "Test", "languageCode": "en"}


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN]) as fake:
        yield fake


@contextlib.asynccontextmanager
async def bridge(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator, **sections: Any
) -> AsyncIterator[tuple[Service, str]]:
    """The service serving its media at its own address (``[http] public_url``); ``sections``
    are more top-level configuration tables."""
    port = free_port()
    base = local_url(port)
    channel = {
        "name": "tg",
        "type": "telegram",
        "token": TOKEN,
        "api_base_url": tg.api_root,
        "poll_timeout_seconds": 1,
        "leader_lease_seconds": 3,
        "request_timeout_seconds": 5,
    }
    data = config_data(
        sqlite_url(tmp_path), sim.url, channel, http={"port": port, "public_url": base}
    )
    data.update(sections)
    async with running_service(service_config(data)) as service:
        yield service, base


async def message_event(sim: RunningSimulator, user: int, count: int = 1) -> list[RecordedRequest]:
    """The first ``count`` message events of user ``user`` Parloa received."""

    def mine() -> list[RecordedRequest]:
        return [
            r
            for r in sim.state.requests
            if r.event_type == "message" and r.requester_id == f"tg:{user}" and r.status == 200
        ]

    async with asyncio.timeout(20):
        await sim.state.wait_for(lambda _state: len(mine()) >= count)
    return mine()


def context_of(request: RecordedRequest) -> dict[str, Any]:
    items = request.context or []
    keys = [item["key"] for item in items]
    assert len(keys) == len(set(keys)), keys
    # the channel's own items come first
    assert keys[: len(OWN)] == list(OWN), keys
    return {item["key"]: item["value"] for item in items}


def tampered(url: str) -> str:
    """``url`` with the last character of its signature changed."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    changed = []
    for key, value in query:
        if key.startswith("sig"):
            value = value[:-1] + ("A" if value[-1] != "A" else "B")
        changed.append((key, value))
    assert changed != query, f"no signature in {url}"
    return urlunsplit(parts._replace(query=urlencode(changed)))


async def served(url: str) -> tuple[int, bytes, str | None]:
    """GET ``url`` as anyone can: no credentials, no cookies."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.read(), response.headers.get("Content-Type")


async def assert_served(url: str, base: str, data: bytes, content_type: str) -> None:
    assert url.startswith(f"{base}/media/"), url
    assert TOKEN not in url and "/file/bot" not in url
    status, body, served_type = await served(url)
    assert (status, body) == (200, data)
    assert served_type is not None and served_type.split(";")[0] == content_type
    assert (await served(tampered(url)))[0] == 403


@dataclass(frozen=True)
class Case:
    """One kind of media: how the fake builds it, the bytes it serves, what Parloa is told."""

    id: str
    build: Callable[[FakeTelegram, int, bytes], JSON]
    text: str
    items: dict[str, Any]  # besides attachmentUrl and attachmentSize

    def __repr__(self) -> str:
        return self.id


FILES = [
    Case(
        "photo",
        lambda tg, user, data: tg.photo(user, data=data, caption="What is this plant?"),
        "What is this plant?",
        {"attachmentType": "photo", "attachmentMimeType": "image/jpeg"},
    ),
    Case(
        "document",
        lambda tg, user, data: tg.document(user, data=data, file_name="invoice.pdf"),
        "[document]",
        {
            "attachmentType": "document",
            "attachmentMimeType": "application/pdf",
            "attachmentName": "invoice.pdf",
        },
    ),
    Case(
        "voice",
        lambda tg, user, data: tg.voice(user, data=data),
        "[voice message]",
        {"attachmentType": "voice", "attachmentMimeType": "audio/ogg"},
    ),
    Case(
        "audio",
        lambda tg, user, data: tg.audio(user, data=data, caption="our jingle"),
        "our jingle",
        {
            "attachmentType": "audio",
            "attachmentMimeType": "audio/mpeg",
            "attachmentName": "song.mp3",
        },
    ),
    Case(
        "video",
        lambda tg, user, data: tg.video(user, data=data),
        "[video]",
        {
            "attachmentType": "video",
            "attachmentMimeType": "video/mp4",
            "attachmentName": "clip.mp4",
        },
    ),
    Case(
        "video_note",
        lambda tg, user, data: tg.video_note(user, data=data),
        "[video]",
        {"attachmentType": "video", "attachmentMimeType": "video/mp4"},
    ),
    Case(
        "animation",
        lambda tg, user, data: tg.animation(user, data=data),
        "[video]",
        {
            "attachmentType": "video",
            "attachmentMimeType": "video/mp4",
            "attachmentName": "cat.gif.mp4",
        },
    ),
    Case(
        "sticker",
        lambda tg, user, data: tg.sticker(user, data=data),
        "[sticker]",
        {"attachmentType": "sticker", "attachmentMimeType": "image/webp"},
    ),
    Case(
        "animated_sticker",
        lambda tg, user, data: tg.sticker(user, data=data, is_animated=True),
        "[sticker]",
        {"attachmentType": "sticker", "attachmentMimeType": "application/x-tgsticker"},
    ),
]


@pytest.mark.parametrize("case", FILES, ids=[c.id for c in FILES])
async def test_a_file_reaches_parloa_as_a_url_serving_its_bytes(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator, case: Case
) -> None:
    data = os.urandom(200_000)  # several chunks on every hop
    async with bridge(tmp_path, tg, sim) as (_, base):
        tg.push_update(case.build(tg, 42, data))
        [event] = await message_event(sim, 42)
        assert event.text == case.text
        context = context_of(event)
        url = context.pop("attachmentUrl")
        assert context == {**OWN, **case.items, "attachmentSize": len(data)}
        await assert_served(url, base, data, case.items["attachmentMimeType"])
        # the download went through getFile and the file URL, with the bot's token
        [get_file] = tg.calls_to("getFile")
        [download] = tg.calls_to("downloadFile")
        assert download.token == TOKEN and download.status == 200
        assert get_file.response is not None
        assert get_file.response["result"]["file_path"] == download.params["file_path"]
        # and the user was answered
        await tg.wait_for(
            lambda: any(m.text == f"You said: {case.text}" for m in tg.sent_messages(42))
        )


PLACES = [
    Case(
        "location",
        lambda tg, user, _data: tg.location(user, latitude=52.520008, longitude=13.404954),
        "[location]",
        {"attachmentType": "location", "latitude": 52.520008, "longitude": 13.404954},
    ),
    Case(
        "venue",
        lambda tg, user, _data: tg.venue(user, latitude=52.520815, longitude=13.409419),
        "[location]",
        {"attachmentType": "location", "latitude": 52.520815, "longitude": 13.409419},
    ),
    Case(
        "contact",
        lambda tg, user, _data: tg.contact(user, first_name="Eve", last_name="Example"),
        "[contact]",
        {
            "attachmentType": "contact",
            "contactName": "Eve Example",
            "contactPhone": "+49301234567",
        },
    ),
]


@pytest.mark.parametrize("case", PLACES, ids=[c.id for c in PLACES])
async def test_places_and_contacts_are_context_only(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator, case: Case
) -> None:
    async with bridge(tmp_path, tg, sim):
        tg.push_update(case.build(tg, 42, b""))
        [event] = await message_event(sim, 42)
        assert event.text == case.text
        assert context_of(event) == {**OWN, **case.items}
        assert tg.calls_to("getFile") == []


async def test_an_album_of_three_photos_is_one_event(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    photos = [os.urandom(30_000 + n) for n in range(3)]
    async with bridge(tmp_path, tg, sim) as (_, base):
        updates = [
            tg.photo(42, data=data, media_group_id="album-1", caption="my bike" if n == 0 else None)
            for n, data in enumerate(photos)
        ]
        for update in updates:
            tg.push_update(update)
        [event] = await message_event(sim, 42)
        assert event.text == "my bike"
        context = context_of(event)
        url = context.pop("attachmentUrl")
        urls = str(context.pop("attachmentUrls")).split(" ")
        assert context == {
            **OWN,
            "attachmentType": "photo",
            "attachmentMimeType": "image/jpeg",
            "attachmentSize": len(photos[0]),
            "attachmentCount": 3,
        }
        assert urls[0] == url and len(urls) == 3
        for each, data in zip(urls, photos, strict=True):
            await assert_served(each, base, data, "image/jpeg")
        await tg.wait_for(lambda: any(m.text == "You said: my bike" for m in tg.sent_messages(42)))
        # one event: Parloa got no second message
        messages = [r for r in sim.state.requests if r.event_type == "message"]
        assert len(messages) == 1


async def test_a_file_over_telegrams_download_limit_is_described_not_fetched(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim):
        tg.push_update(
            tg.document(
                42, file_name="huge.zip", mime_type="application/zip", file_size=25 * 1024 * 1024
            )
        )
        [event] = await message_event(sim, 42)
        context = context_of(event)
        assert event.text == "[document]"
        assert context["attachmentTooLarge"] is True
        assert context["attachmentType"] == "document" and "attachmentUrl" not in context
        assert tg.calls_to("downloadFile") == []


async def test_a_voice_note_is_transcribed(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    audio = b"OggS" + os.urandom(10_000)
    async with FakeSpeech(transcripts={audio: "where is my parcel"}) as speech:
        stt = {"url": speech.url, "api_key": speech.api_key, "model": "whisper-1"}
        async with bridge(tmp_path, tg, sim, speech_to_text=stt) as (_, base):
            tg.push_update(tg.voice(42, data=audio))
            [event] = await message_event(sim, 42)
            assert event.text == "where is my parcel"
            context = context_of(event)
            url = context.pop("attachmentUrl")
            assert context == {
                **OWN,
                "attachmentType": "voice",
                "attachmentMimeType": "audio/ogg",
                "attachmentSize": len(audio),
                "transcript": True,
            }
            await assert_served(url, base, audio, "audio/ogg")
        [request] = speech.requests
        assert (request.audio, request.content_type) == (audio, "audio/ogg")


async def test_a_download_failing_for_now_is_retried(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    data = os.urandom(50_000)
    tg.fail_next("getFile", 502)
    tg.fail_next("downloadFile", 503)
    async with bridge(tmp_path, tg, sim) as (_, base):
        tg.push_update(tg.document(42, data=data, file_name="a.pdf"))
        [event] = await message_event(sim, 42)
        url = context_of(event)["attachmentUrl"]
        await assert_served(url, base, data, "application/pdf")
        assert [c.status for c in tg.calls_to("getFile")] == [502, 200, 200]
        assert [c.status for c in tg.calls_to("downloadFile")] == [503, 200]


async def test_a_file_telegram_no_longer_has_goes_on_without_a_url(
    tmp_path: Path, tg: FakeTelegram, sim: RunningSimulator
) -> None:
    async with bridge(tmp_path, tg, sim):
        tg.push_update(tg.document(42, file_name="gone.pdf"))  # the fake has no bytes: 404
        [event] = await message_event(sim, 42)
        context = context_of(event)
        assert event.text == "[document]"
        assert context["attachmentType"] == "document" and "attachmentUrl" not in context
        assert [c.status for c in tg.calls_to("downloadFile")] == [404]
