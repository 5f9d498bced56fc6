"""The speech-to-text client against a fake OpenAI-compatible endpoint on 127.0.0.1: the
request it makes, and every way it fails (always SpeechFailed, never anything else)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from bridge.media.speech import SpeechFailed, SpeechSettings, SpeechToText
from tests.fakes.speech import FakeSpeech
from tests.support.net import serving


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as s:
        yield s


async def test_the_request_and_the_transcript(session: aiohttp.ClientSession) -> None:
    async with FakeSpeech(transcripts={b"OggS": "  where is   my parcel "}) as fake:
        settings = SpeechSettings(fake.url + "/", "large-v3", fake.api_key, language=None)
        text = await SpeechToText(session, settings).transcribe(b"OggS", "v.ogg", "audio/ogg", "de")
        (request,) = fake.requests
    assert text == "where is my parcel"
    assert (request.model, request.language, request.filename) == ("large-v3", "de", "v.ogg")
    assert request.content_type == "audio/ogg"


async def test_a_configured_language_wins(session: aiohttp.ClientSession) -> None:
    async with FakeSpeech() as fake:
        settings = SpeechSettings(fake.url, "m", fake.api_key, language="fr")
        await SpeechToText(session, settings).transcribe(b"x", "v.ogg", "audio/ogg", "de")
        assert fake.requests[0].language == "fr"


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        ({"api_key": "wrong"}, "HTTP 401"),
        ({"fail_with": 503}, "HTTP 503"),
    ],
)
async def test_refusals(session: aiohttp.ClientSession, setup: dict[str, object], why: str) -> None:
    async with FakeSpeech() as fake:
        key = str(setup.get("api_key", fake.api_key))
        fake.fail_with = setup.get("fail_with")  # type: ignore[assignment]
        client = SpeechToText(session, SpeechSettings(fake.url, "m", key))
        with pytest.raises(SpeechFailed, match=why):
            await client.transcribe(b"x", "v.ogg", "audio/ogg")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"not json", "not JSON"),
        (b'{"result": "x"}', "no text"),
        (b'{"text": "   "}', "heard nothing"),
        (b"[1, 2]", "no text"),
    ],
)
async def test_odd_answers(session: aiohttp.ClientSession, body: bytes, why: str) -> None:
    async def odd(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", odd)
    async with serving(app) as url:
        client = SpeechToText(session, SpeechSettings(url, "m"))
        with pytest.raises(SpeechFailed, match=why):
            await client.transcribe(b"x", "v.ogg", "audio/ogg")


async def test_unreachable_and_slow(session: aiohttp.ClientSession) -> None:
    never = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", hang)
    async with serving(app) as url:
        slow = SpeechToText(session, SpeechSettings(url, "m", timeout_seconds=0.2))
        with pytest.raises(SpeechFailed, match="unreachable"):
            await slow.transcribe(b"x", "v.ogg", "audio/ogg")
    gone = SpeechToText(session, SpeechSettings(url, "m"))
    with pytest.raises(SpeechFailed, match="unreachable"):
        await gone.transcribe(b"x", "v.ogg", "audio/ogg")
