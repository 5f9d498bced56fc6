"""A fake OpenAI-compatible speech-to-text server on 127.0.0.1: ``POST
/v1/audio/transcriptions`` with a multipart ``file`` and ``model`` (``language`` optional),
answering ``{"text": ...}`` as OpenAI, faster-whisper servers and whisper.cpp's server do.
It checks the bearer key when one is set, records each request, and can be told to fail."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import BodyPartReader, web

from tests.support.net import LocalServer


@dataclass(frozen=True)
class Transcription:
    model: str
    language: str | None
    filename: str | None
    content_type: str | None
    audio: bytes


@dataclass
class FakeSpeech:
    api_key: str | None = "stt-key-0123"
    #: the transcript of an audio, by its bytes; anything else: "unintelligible"
    transcripts: dict[bytes, str] = field(default_factory=dict)
    #: answer this status (with an error body) instead of a transcript
    fail_with: int | None = None
    requests: list[Transcription] = field(default_factory=list)
    url: str = ""
    _server: LocalServer = field(default_factory=LocalServer)

    async def start(self) -> None:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self._transcribe)
        await self._server.start(app, access_log=False)
        self.url = self._server.url

    async def close(self) -> None:
        await self._server.close()

    async def __aenter__(self) -> FakeSpeech:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _transcribe(self, request: web.Request) -> web.Response:
        expected = f"Bearer {self.api_key}"
        if self.api_key is not None and request.headers.get("Authorization") != expected:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        if not request.content_type.startswith("multipart/"):
            return web.json_response({"error": {"message": "multipart only"}}, status=400)
        fields: dict[str, str] = {}
        audio: bytes | None = None
        filename = content_type = None
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            if part.name == "file":
                filename = part.filename
                content_type = part.headers.get("Content-Type")
                audio = bytes(await part.read())
            elif part.name:
                fields[part.name] = await part.text()
        if audio is None or "model" not in fields:
            return web.json_response({"error": {"message": "file and model required"}}, status=400)
        self.requests.append(
            Transcription(fields["model"], fields.get("language"), filename, content_type, audio)
        )
        if self.fail_with is not None:
            return web.json_response({"error": {"message": "failing"}}, status=self.fail_with)
        return web.json_response({"text": self.transcripts.get(audio, "unintelligible")})
