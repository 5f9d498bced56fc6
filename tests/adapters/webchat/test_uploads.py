"""Web chat uploads: ``POST /webchat/{channel}/upload`` streamed into the intake's
``store_attachment``, and a WebSocket message naming uploads becoming an Inbound with
attachments. The adapter is served over HTTP on 127.0.0.1 with an in-memory intake that stores
media (the core's side), both as the adapter's routes alone and inside the bridge's own app
(whose middleware reads bodies first)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.webchat.channel import WebchatAdapter, WebchatOptions
from adapters.webchat.protocol import file_name, render_elements
from bridge.channel import AdapterServices, IntakeUnavailable, StoredUpload
from bridge.http_server import build_app
from bridge.media.attachments import (
    STORED_PREFIX,
    Attachment,
    AttachmentTooLarge,
    AttachmentType,
)
from bridge.metrics import Metrics
from bridge.textchat.models import parse_element
from tests.support.intake import MemoryIntake
from tests.support.net import local_url, start_app

SECRET = "an-identity-secret-for-tests"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@dataclass
class Stored:
    user: str
    data: bytes
    content_type: str
    name: str | None
    chunks: int


class MediaIntake(MemoryIntake):
    """The in-memory intake with the media store's ``store_attachment``: bytes kept by id,
    nothing kept past ``max_bytes`` (AttachmentTooLarge)."""

    def __init__(self, channel: str, max_bytes: int = 1 << 20) -> None:
        super().__init__(channel)
        self.max_bytes = max_bytes
        self.media: dict[str, Stored] = {}

    async def store_attachment(
        self, user_id: str, chunks: AsyncIterator[bytes], content_type: str, name: str | None
    ) -> str:
        if self.unavailable:
            raise IntakeUnavailable("database is down")
        data = bytearray()
        count = 0
        async for chunk in chunks:
            data.extend(chunk)
            count += 1
            if len(data) > self.max_bytes:
                raise AttachmentTooLarge(f"more than {self.max_bytes} bytes")
        media_id = uuid.uuid4().hex
        self.media[media_id] = Stored(user_id, bytes(data), content_type, name, count)
        return media_id

    async def stored_upload(self, user_id: str, media_id: str) -> StoredUpload | None:
        if self.unavailable:
            raise IntakeUnavailable("database is down")
        found = self.media.get(media_id)
        if found is None or found.user != user_id:
            return None
        return StoredUpload(media_id, found.name, found.content_type, len(found.data))


@dataclass
class Web:
    adapter: WebchatAdapter
    intake: MediaIntake
    base: str  # http://127.0.0.1:PORT/webchat/web/


Open = Callable[..., Awaitable[Web]]


@pytest.fixture
async def open_web() -> AsyncIterator[Open]:
    cleanup: list[Callable[[], Awaitable[None]]] = []

    async def make(*, bridge_app: bool = False, max_bytes: int = 1 << 20, **options: Any) -> Web:
        opts = WebchatOptions.model_validate({"identity_secret": SECRET, **options})
        adapter = WebchatAdapter("web", opts, AdapterServices(None, "text only"))
        intake = MediaIntake("web", max_bytes)
        await adapter.start(intake)
        if bridge_app:

            async def ready() -> tuple[bool, dict[str, Any]]:
                return True, {}

            app = build_app(Metrics(), ready, adapter.routes(), client_max_size=1 << 20)
        else:
            app = web.Application()
            app.add_routes(adapter.routes())
        runner, port = await start_app(app)
        cleanup.extend([adapter.stop, runner.cleanup])
        return Web(adapter, intake, f"{local_url(port)}/webchat/web/")

    yield make
    for step in reversed(cleanup):
        await step()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(trust_env=False) as session:
        yield session


class Socket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.user = ""
        self.token = ""

    async def frame(self, kind: str) -> dict[str, Any]:
        """The next frame of ``kind`` (typing frames and others skipped)."""
        while True:
            msg = await self.ws.receive(timeout=10)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            frame = json.loads(msg.data)
            if frame["type"] == kind:
                return dict(frame)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Webchat-User": self.user, "X-Webchat-Token": self.token}


async def open_socket(http: aiohttp.ClientSession, chat: Web) -> Socket:
    """A new user's socket past its hello (the bridge issues the identity)."""
    ws = await http.ws_connect(chat.base + "ws")
    sock = Socket(ws)
    await ws.send_str(json.dumps({"type": "hello", "since": 0}))
    identity = await sock.frame("identity")
    sock.user, sock.token = identity["user"], identity["token"]
    await sock.frame("ready")
    return sock


def form(data: bytes = PNG, name: str = "photo.png", content_type: str = "image/png") -> Any:
    body = aiohttp.FormData()
    body.add_field("file", data, filename=name, content_type=content_type)
    return body


async def upload(
    http: aiohttp.ClientSession, chat: Web, headers: dict[str, str], body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with http.post(chat.base + "upload", data=body or form(), headers=headers) as resp:
        return resp.status, await resp.json()


@pytest.mark.parametrize("bridge_app", [False, True], ids=["streamed", "bridge-app"])
async def test_an_upload_is_stored_and_described(
    open_web: Open, http: aiohttp.ClientSession, bridge_app: bool
) -> None:
    chat = await open_web(bridge_app=bridge_app)
    sock = await open_socket(http, chat)
    status, answer = await upload(http, chat, sock.headers)
    assert status == 200
    media_id = answer["id"]
    assert answer == {
        "id": media_id,
        "name": "photo.png",
        "size": len(PNG),
        "content_type": "image/png",
    }
    stored = chat.intake.media[media_id]
    assert (stored.user, stored.data, stored.content_type, stored.name) == (
        sock.user,
        PNG,
        "image/png",
        "photo.png",
    )
    await sock.ws.close()


async def test_a_file_is_streamed_to_the_store_in_chunks(
    open_web: Open, http: aiohttp.ClientSession
) -> None:
    chat = await open_web()
    sock = await open_socket(http, chat)
    data = bytes(range(256)) * 2048  # 512 KiB
    status, answer = await upload(http, chat, sock.headers, form(data, "a.bin", ""))
    assert status == 200
    stored = chat.intake.media[answer["id"]]
    assert stored.data == data and stored.chunks > 1
    assert answer["content_type"] == "application/octet-stream"
    await sock.ws.close()


async def test_an_upload_without_a_valid_identity_is_refused(
    open_web: Open, http: aiohttp.ClientSession
) -> None:
    chat = await open_web()
    sock = await open_socket(http, chat)
    for headers in (
        {},
        {"X-Webchat-User": sock.user},
        {"X-Webchat-User": sock.user, "X-Webchat-Token": "A" * 43},
        {"X-Webchat-User": "f" * 32, "X-Webchat-Token": sock.token},
    ):
        assert await upload(http, chat, headers) == (401, {"error": "identity_refused"})
    assert chat.intake.media == {}
    await sock.ws.close()


async def test_an_upload_from_a_foreign_page_is_refused(
    open_web: Open, http: aiohttp.ClientSession
) -> None:
    chat = await open_web()
    sock = await open_socket(http, chat)
    headers = {**sock.headers, "Origin": "https://evil.example"}
    assert await upload(http, chat, headers) == (403, {"error": "origin not allowed"})
    assert chat.intake.media == {}
    await sock.ws.close()


@pytest.mark.parametrize("bridge_app", [False, True], ids=["streamed", "bridge-app"])
async def test_a_file_too_large_is_413(
    open_web: Open, http: aiohttp.ClientSession, bridge_app: bool
) -> None:
    chat = await open_web(bridge_app=bridge_app, max_bytes=1000)
    sock = await open_socket(http, chat)
    assert await upload(http, chat, sock.headers) == (413, {"error": "file too large"})
    assert chat.intake.media == {}
    await sock.ws.close()


async def test_a_store_that_cannot_take_it_is_503(
    open_web: Open, http: aiohttp.ClientSession
) -> None:
    chat = await open_web()
    sock = await open_socket(http, chat)
    chat.intake.unavailable = True
    async with http.post(chat.base + "upload", data=form(), headers=sock.headers) as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    await sock.ws.close()


async def test_a_malformed_upload_is_400(open_web: Open, http: aiohttp.ClientSession) -> None:
    chat = await open_web()
    sock = await open_socket(http, chat)
    no_file = aiohttp.FormData(default_to_multipart=True)
    no_file.add_field("caption", "hello")
    cases = [
        (json.dumps({"file": "x"}), "expected multipart/form-data"),
        (no_file, "no file in the upload"),
        (form(b""), "the file is empty"),
    ]
    for body, reason in cases:
        headers = dict(sock.headers)
        if isinstance(body, str):
            headers["Content-Type"] = "application/json"
        assert await upload(http, chat, headers, body) == (400, {"error": reason})
    assert chat.intake.media == {}
    await sock.ws.close()


async def test_uploads_are_rate_limited(open_web: Open, http: aiohttp.ClientSession) -> None:
    chat = await open_web(socket_burst=2, socket_rate_per_second=0.001)
    sock = await open_socket(http, chat)
    statuses = [(await upload(http, chat, sock.headers))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    await sock.ws.close()


async def test_a_message_naming_uploads_is_an_inbound_with_attachments(
    open_web: Open, http: aiohttp.ClientSession
) -> None:
    chat = await open_web()
    sock = await open_socket(http, chat)
    _, photo = await upload(http, chat, sock.headers)
    _, invoice = await upload(http, chat, sock.headers, form(b"%PDF-1.4 ...", "invoice.pdf", ""))
    frame = {"type": "message", "id": "m1", "attachments": [photo["id"], invoice["id"]]}
    await sock.ws.send_str(json.dumps(frame))
    assert (await sock.frame("ack"))["id"] == "m1"
    (inbound,) = chat.intake.accepted
    assert (inbound.event_id, inbound.text) == (f"wc:{sock.user}:m1", "")
    assert inbound.attachments == (
        Attachment(
            AttachmentType.PHOTO, STORED_PREFIX + photo["id"], "photo.png", "image/png", len(PNG)
        ),
        Attachment(
            AttachmentType.DOCUMENT,
            STORED_PREFIX + invoice["id"],
            "invoice.pdf",
            "application/pdf",
            12,
        ),
    )
    # with a caption
    await sock.ws.send_str(
        json.dumps({"type": "message", "id": "m2", "text": "look", "attachments": [photo["id"]]})
    )
    assert (await sock.frame("ack"))["id"] == "m2"
    assert chat.intake.accepted[1].text == "look"
    await sock.ws.close()


async def test_a_message_naming_another_users_upload_is_refused(
    open_web: Open, http: aiohttp.ClientSession
) -> None:
    chat = await open_web()
    owner = await open_socket(http, chat)
    other = await open_socket(http, chat)
    _, photo = await upload(http, chat, owner.headers)
    for i, ids in enumerate([[photo["id"]], ["not-an-upload"]]):
        await other.ws.send_str(json.dumps({"type": "message", "id": f"x{i}", "attachments": ids}))
        error = await other.frame("error")
        assert error == {"type": "error", "reason": "invalid_attachment", "id": f"x{i}"}
    await other.ws.send_str(json.dumps({"type": "message", "id": "x9", "attachments": ["a b"]}))
    assert (await other.frame("error"))["reason"] == "invalid_attachment"
    too_many = {"type": "message", "id": "x10", "attachments": [photo["id"]] * 11}
    await other.ws.send_str(json.dumps(too_many))
    assert (await other.frame("error"))["reason"] == "invalid_frame"
    assert chat.intake.accepted == []
    await owner.ws.close()
    await other.ws.close()


def test_an_uploaded_name_is_its_last_path_part() -> None:
    assert file_name("C:\\docs\\invoice.pdf") == "invoice.pdf"
    assert file_name("../../etc/passwd") == "passwd"
    assert file_name("a\x00b\nc.txt") == "abc.txt"
    assert file_name("") is None and file_name("/") is None


def test_payload_attachments_are_normalised_for_the_page() -> None:
    element = parse_element(
        {
            "type": "payload",
            "content": {
                "attachments": [
                    {"type": "image", "url": "https://cdn.example.com/a.png", "caption": "Yours"},
                    {"type": "file", "url": "https://cdn.example.com/docs/i.pdf"},
                    {"type": "audio", "url": "https://cdn.example.com/v.ogg", "name": "Voice"},
                    {"type": "video", "url": "javascript:alert(1)"},
                ]
            },
        }
    )
    (wire,) = render_elements([element])
    assert wire["files"] == [
        {
            "kind": "image",
            "url": "https://cdn.example.com/a.png",
            "label": "a.png",
            "caption": "Yours",
        },
        {"kind": "file", "url": "https://cdn.example.com/docs/i.pdf", "label": "i.pdf"},
        {"kind": "audio", "url": "https://cdn.example.com/v.ogg", "label": "Voice"},
    ]


async def test_uploads_can_be_turned_off(open_web: Open, http: aiohttp.ClientSession) -> None:
    chat = await open_web(uploads=False)
    sock = await open_socket(http, chat)
    assert await upload(http, chat, sock.headers) == (404, {"error": "uploads are off"})
    async with http.get(chat.base) as resp:
        page = await resp.text()
    assert '"uploads": false' in page
    await sock.ws.close()
