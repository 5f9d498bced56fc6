"""Speech-to-text over the OpenAI-compatible transcription API: ``POST {url}/v1/audio/
transcriptions`` with a multipart ``file`` and ``model`` (and ``language`` when known), the
answer ``{"text": ...}`` — what OpenAI, Azure OpenAI, faster-whisper servers and whisper.cpp's
server speak. Any failure is a :class:`SpeechFailed`; the caller falls back to the placeholder
text, never loses the message."""

from __future__ import annotations

import json
from dataclasses import dataclass

import aiohttp

#: an answer longer than this is not a transcript of a voice note
MAX_ANSWER_BYTES = 1024 * 1024


class SpeechFailed(Exception):
    """The transcription could not be had (why, in one line)."""


@dataclass(frozen=True, slots=True)
class SpeechSettings:
    url: str  # the server's base URL, without /v1/...
    model: str
    api_key: str | None = None
    language: str | None = None
    timeout_seconds: float = 30.0


def endpoint(base_url: str) -> str:
    return base_url.rstrip("/") + "/v1/audio/transcriptions"


class SpeechToText:
    """One endpoint, on the bridge's shared HTTP session (injected)."""

    def __init__(self, session: aiohttp.ClientSession, settings: SpeechSettings) -> None:
        self._session = session
        self.settings = settings

    async def transcribe(
        self, audio: bytes, filename: str, content_type: str, language: str | None = None
    ) -> str:
        s = self.settings
        form = aiohttp.FormData()
        form.add_field("file", audio, filename=filename, content_type=content_type)
        form.add_field("model", s.model)
        form.add_field("response_format", "json")
        chosen = s.language or language
        if chosen:
            form.add_field("language", chosen)
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        try:
            async with self._session.post(
                endpoint(s.url),
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=s.timeout_seconds),
            ) as resp:
                body = await resp.content.read(MAX_ANSWER_BYTES + 1)
                if resp.status != 200:
                    raise SpeechFailed(f"speech-to-text answered HTTP {resp.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise SpeechFailed(f"speech-to-text unreachable: {exc or type(exc).__name__}") from exc
        return _text(body)


def _text(body: bytes) -> str:
    if len(body) > MAX_ANSWER_BYTES:
        raise SpeechFailed("speech-to-text answer too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise SpeechFailed("speech-to-text answer is not JSON") from None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise SpeechFailed("speech-to-text answer has no text")
    text = " ".join(text.split())
    if not text:
        raise SpeechFailed("speech-to-text heard nothing")
    return text
