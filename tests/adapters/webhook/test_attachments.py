"""Attachments of the webhook channel: which URLs an event may name (checked at intake, 400 with
the reason), fetching them from a file server on 127.0.0.1 (streamed; internal addresses only
when listed literally, checked at fetch time), errors mapped, and outbound payloads with
attachments passing through to the receiver as they are."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from adapters.webhook.attachments import (
    AddressRefused,
    CheckedResolver,
    HostPolicy,
    read_attachments,
)
from adapters.webhook.channel import WebhookAdapter, WebhookOptions
from bridge.channel import Delivery
from bridge.media.attachments import (
    Attachment,
    AttachmentRetryable,
    AttachmentType,
    AttachmentUnavailable,
)
from bridge.textchat.models import parse_element
from tests.adapters.webhook.test_channel import (
    SECRET,
    SERVICES,
    MakeAdapter,
    OpenChannel,
    Receiver,
    event,
    post,
)
from tests.support.intake import MemoryIntake
from tests.support.net import free_port, serving

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 64


class FileServer:
    """Files on 127.0.0.1: ``/photo.png`` in two parts, the second only once ``go`` is set
    (the client must have had the first: it streams); ``/status/<n>`` answers n;
    ``/hang`` answers nothing until the test ends; ``/moved`` redirects to the photo."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.release = asyncio.Event()
        self.requests: list[web.Request] = []

    async def photo(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})
        resp.content_length = len(PNG)
        await resp.prepare(request)
        half = len(PNG) // 2
        await resp.write(PNG[:half])
        await self.go.wait()
        await resp.write(PNG[half:])
        await resp.write_eof()
        return resp

    async def status(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        code = int(request.match_info["code"])
        headers = {"Retry-After": "7"} if code in (429, 503) else {}
        return web.Response(status=code, text="no", headers=headers)

    async def hang(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        await self.release.wait()
        return web.Response(text="late")

    async def moved(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        raise web.HTTPFound("/photo.png")


@pytest.fixture
async def files() -> AsyncIterator[tuple[FileServer, str]]:
    server = FileServer()
    app = web.Application()
    app.add_routes(
        [
            web.get("/photo.png", server.photo),
            web.get("/status/{code}", server.status),
            web.get("/hang", server.hang),
            web.get("/moved", server.moved),
        ]
    )
    async with serving(app) as base:
        yield server, base
    server.go.set()
    server.release.set()


def att(url: str, **fields: Any) -> dict[str, Any]:
    return {"url": url, **fields}


# --- intake ---------------------------------------------------------------------------------


async def test_attachments_become_the_inbound_attachments(
    open_channel: OpenChannel, http: aiohttp.ClientSession
) -> None:
    channel = await open_channel(allowed_attachment_hosts=["*.example.com", "files.example.org"])
    body = event(
        text=None,
        attachments=[
            att("https://cdn.example.com/a/broken.jpg?sig=1", mime_type="image/jpeg"),
            att("https://files.example.org/invoice.pdf", name="Invoice 7.pdf"),
            att("https://files.example.org/voice.ogg", mime_type="audio/ogg"),
            att("https://files.example.org/clip", mime_type="video/mp4", name="clip"),
            att("https://files.example.org/blob"),
        ],
    )
    status, answer, _ = await post(http, channel.url, body)
    assert (status, answer) == (200, {"status": "accepted"})
    (inbound,) = channel.intake.accepted
    assert inbound.text == ""
    assert inbound.attachments == (
        Attachment(
            AttachmentType.PHOTO,
            "https://cdn.example.com/a/broken.jpg?sig=1",
            mime_type="image/jpeg",
        ),
        Attachment(
            AttachmentType.DOCUMENT,
            "https://files.example.org/invoice.pdf",
            name="Invoice 7.pdf",
            mime_type="application/pdf",
        ),
        Attachment(AttachmentType.AUDIO, "https://files.example.org/voice.ogg", None, "audio/ogg"),
        Attachment(AttachmentType.VIDEO, "https://files.example.org/clip", "clip", "video/mp4"),
        Attachment(AttachmentType.DOCUMENT, "https://files.example.org/blob"),
    )


async def test_a_caption_comes_with_the_attachment(
    open_channel: OpenChannel, http: aiohttp.ClientSession
) -> None:
    channel = await open_channel(allowed_attachment_hosts=["files.example.com"])
    body = event(text="my broken kettle", attachments=[att("https://files.example.com/k.png")])
    assert (await post(http, channel.url, body))[0] == 200
    (inbound,) = channel.intake.accepted
    assert inbound.text == "my broken kettle"
    assert [a.type for a in inbound.attachments] == [AttachmentType.PHOTO]


@pytest.mark.parametrize(
    ("hosts", "attachments", "reason"),
    [
        pytest.param(
            [],
            [att("https://files.example.com/a.png")],
            "attachments[0].url: host files.example.com is not in the channel's "
            "allowed_attachment_hosts",
            id="nothing-allowed-by-default",
        ),
        pytest.param(
            ["*.example.com"],
            [att("https://files.example.com/a.png"), att("https://example.com/b.png")],
            "attachments[1].url: host example.com is not in the channel's allowed_attachment_hosts",
            id="wildcard-is-subdomains-only",
        ),
        pytest.param(
            ["*.example.com"],
            [att("https://evil.com/?.example.com")],
            "attachments[0].url: host evil.com is not in the channel's allowed_attachment_hosts",
            id="host-not-allowed",
        ),
        pytest.param(
            ["*"],
            [att("http://127.0.0.1:8080/admin")],
            "attachments[0].url: host 127.0.0.1 is an internal address (loopback, private, "
            "link-local, multicast, reserved or unspecified), fetched only when listed literally",
            id="loopback-through-star",
        ),
        pytest.param(
            ["*"],
            [att("http://169.254.169.254/latest/meta-data/")],
            "attachments[0].url: host 169.254.169.254 is an internal address (loopback, "
            "private, link-local, multicast, reserved or unspecified), fetched only when "
            "listed literally",
            id="link-local-metadata",
        ),
        pytest.param(
            ["*"],
            [att("http://[::ffff:10.0.0.1]/x")],
            "attachments[0].url: host ::ffff:a00:1 is an internal address (loopback, private, "
            "link-local, multicast, reserved or unspecified), fetched only when listed literally",
            id="mapped-private",
        ),
        pytest.param(
            ["*"],
            [att("ftp://files.example.com/a.png")],
            "attachments[0].url: must be an absolute http:// or https:// URL",
            id="not-http",
        ),
        pytest.param(
            ["*"],
            [att("/relative/a.png")],
            "attachments[0].url: must be an absolute http:// or https:// URL",
            id="relative",
        ),
        pytest.param(
            ["*"],
            [att("https://user:pw@files.example.com/a.png")],
            "attachments[0].url: must not carry credentials",
            id="credentials",
        ),
        pytest.param(
            ["*"],
            [{"name": "a.png"}],
            "attachments[0].url must be a string",
            id="no-url",
        ),
        pytest.param(
            ["*"],
            [att("https://files.example.com/a.png")] * 11,
            "attachments has more than 10 entries",
            id="too-many",
        ),
        pytest.param(
            ["*"],
            {"url": "https://files.example.com/a.png"},
            "attachments must be a list",
            id="not-a-list",
        ),
        pytest.param(
            ["*"],
            [att("https://files.example.com/a", mime_type="png")],
            "attachments[0].mime_type must look like type/subtype",
            id="bad-mime",
        ),
    ],
)
async def test_an_event_naming_a_url_not_allowed_is_answered_400_with_the_reason(
    open_channel: OpenChannel,
    http: aiohttp.ClientSession,
    hosts: list[str],
    attachments: Any,
    reason: str,
) -> None:
    channel = await open_channel(allowed_attachment_hosts=hosts)
    status, answer, _ = await post(http, channel.url, event(attachments=attachments))
    assert (status, answer) == (400, {"error": reason})
    assert channel.intake.accepted == []


async def test_attachments_only_with_text_events(
    open_channel: OpenChannel, http: aiohttp.ClientSession
) -> None:
    channel = await open_channel(allowed_attachment_hosts=["*"])
    body = event(type="button", attachments=[att("https://files.example.com/a.png")])
    status, answer, _ = await post(http, channel.url, body)
    assert (status, answer) == (400, {"error": "attachments are only accepted with type text"})


def test_an_unusable_host_list_is_refused_at_configuration() -> None:
    for bad in ["*.*.example.com", "example.com/path", "ex*ample.com", ""]:
        with pytest.raises(ValidationError, match="allowed_attachment_hosts"):
            WebhookOptions.model_validate(
                {"secret": SECRET, "deliver_url": "http://x", "allowed_attachment_hosts": [bad]}
            )
    options = WebhookOptions.model_validate(
        {
            "secret": SECRET,
            "deliver_url": "http://x",
            "allowed_attachment_hosts": ["*", "*.Example.COM.", "10.0.0.1", "::1", "[::1]"],
        }
    )
    policy = HostPolicy.of(options.allowed_attachment_hosts)
    assert policy.allows("a.example.com") and policy.listed_literally("::1")


def test_an_ip_is_never_matched_by_a_wildcard() -> None:
    policy = HostPolicy.of(["*.0.0.1"])
    with pytest.raises(ValueError, match="not in the channel's allowed_attachment_hosts"):
        read_attachments([att("http://127.0.0.1/x")], policy)


# --- fetching -------------------------------------------------------------------------------


async def test_a_file_from_a_listed_address_is_streamed(
    make_adapter: MakeAdapter, files: tuple[FileServer, str]
) -> None:
    server, base = files
    adapter = await make_adapter(allowed_attachment_hosts=["127.0.0.1"])
    attachment = Attachment(AttachmentType.PHOTO, f"{base}/photo.png", "photo.png")
    async with adapter.open_attachment(attachment) as download:
        assert (download.content_type, download.size) == ("image/png", len(PNG))
        received = bytearray()
        async for chunk in download.chunks:
            received.extend(chunk)
            # the first half arrived while the server still holds back the second
            server.go.set()
    assert bytes(received) == PNG
    (request,) = server.requests
    assert "Authorization" not in request.headers and "Cookie" not in request.headers


async def test_localhost_listed_literally_is_fetched(
    make_adapter: MakeAdapter, files: tuple[FileServer, str]
) -> None:
    server, base = files
    server.go.set()
    port = base.rsplit(":", 1)[1]
    adapter = await make_adapter(allowed_attachment_hosts=["localhost"])
    attachment = Attachment(AttachmentType.PHOTO, f"http://localhost:{port}/photo.png")
    async with adapter.open_attachment(attachment) as download:
        assert b"".join([c async for c in download.chunks]) == PNG


async def test_a_name_resolving_to_loopback_is_refused_at_fetch_time(
    make_adapter: MakeAdapter, files: tuple[FileServer, str]
) -> None:
    server, base = files
    port = base.rsplit(":", 1)[1]
    # "*" lets any name through intake; localhost is not listed literally, so its address
    # (loopback) is refused when resolved: nothing reaches the server
    adapter = await make_adapter(allowed_attachment_hosts=["*"])
    attachment = Attachment(AttachmentType.PHOTO, f"http://localhost:{port}/photo.png")
    with pytest.raises(AttachmentUnavailable, match="not fetched"):
        async with adapter.open_attachment(attachment):
            pytest.fail("opened")
    assert server.requests == []


async def test_a_host_no_longer_allowed_is_unavailable(make_adapter: MakeAdapter) -> None:
    adapter = await make_adapter(allowed_attachment_hosts=["files.example.com"])
    attachment = Attachment(AttachmentType.PHOTO, "http://127.0.0.1:9/a.png")
    with pytest.raises(AttachmentUnavailable, match="not allowed"):
        async with adapter.open_attachment(attachment):
            pytest.fail("opened")


@pytest.mark.parametrize(
    ("path", "error", "retry_after"),
    [
        ("/status/500", AttachmentRetryable, None),
        ("/status/503", AttachmentRetryable, 7.0),
        ("/status/429", AttachmentRetryable, 7.0),
        ("/status/404", AttachmentUnavailable, None),
        ("/status/403", AttachmentUnavailable, None),
        ("/status/410", AttachmentUnavailable, None),
        ("/moved", AttachmentUnavailable, None),
    ],
)
async def test_answers_are_mapped_to_errors(
    make_adapter: MakeAdapter,
    files: tuple[FileServer, str],
    path: str,
    error: type[Exception],
    retry_after: float | None,
) -> None:
    server, base = files
    adapter = await make_adapter(allowed_attachment_hosts=["127.0.0.1"])
    with pytest.raises(error) as raised:
        async with adapter.open_attachment(Attachment(AttachmentType.DOCUMENT, base + path)):
            pytest.fail("opened")
    if isinstance(raised.value, AttachmentRetryable):
        assert raised.value.retry_after == retry_after
    assert len(server.requests) == 1  # a redirect is not followed


async def test_a_refused_connection_is_retryable(make_adapter: MakeAdapter) -> None:
    adapter = await make_adapter(allowed_attachment_hosts=["127.0.0.1"])
    url = f"http://127.0.0.1:{free_port()}/a.png"
    with pytest.raises(AttachmentRetryable, match="unreachable"):
        async with adapter.open_attachment(Attachment(AttachmentType.PHOTO, url)):
            pytest.fail("opened")


async def test_a_silent_server_is_retryable(
    make_adapter: MakeAdapter, files: tuple[FileServer, str]
) -> None:
    _server, base = files
    adapter = await make_adapter(
        allowed_attachment_hosts=["127.0.0.1"], attachment_timeout_seconds=0.2
    )
    with pytest.raises(AttachmentRetryable, match="in time"):
        async with adapter.open_attachment(Attachment(AttachmentType.PHOTO, base + "/hang")):
            pytest.fail("opened")


# --- outbound -------------------------------------------------------------------------------


async def test_a_payload_with_attachments_reaches_the_receiver_as_it_is(
    receiver: Receiver,
) -> None:
    options = WebhookOptions.model_validate({"secret": SECRET, "deliver_url": receiver.url})
    adapter = WebhookAdapter("web", options, SERVICES)
    await adapter.start(MemoryIntake("web"))
    content = {
        "attachments": [
            {"type": "image", "url": "https://cdn.example.com/a.png", "caption": "Your order"},
            {"type": "file", "url": "https://cdn.example.com/i.pdf", "name": "Invoice.pdf"},
        ]
    }
    progress: list[int] = []

    async def note(i: int, _message_id: str | None) -> None:
        progress.append(i)

    try:
        element = parse_element({"type": "payload", "content": content})
        await adapter.deliver(
            Delivery(7, "c-1", {"conversation_id": "c-1", "user_id": "u-1"}, [element], 0, note)
        )
    finally:
        await adapter.stop()
    (request,) = receiver.requests
    assert request.json["elements"] == [{"type": "payload", "content": content}]
    assert progress == [0]


class FixedResolver(AbstractResolver):
    """DNS answers as a test sets them (what a rebinding name would answer)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0)
            for a in self.answers[host]
        ]

    async def close(self) -> None:
        return None


async def test_only_checked_addresses_are_handed_to_the_connector() -> None:
    answers = {
        "files.example.com": ["93.184.216.34", "127.0.0.1", "10.1.2.3", "fe80::1", "::1"],
        "inside.example.com": ["192.168.1.10", "169.254.169.254"],
        "db.internal": ["10.0.0.7"],
    }
    policy = HostPolicy.of(["*.example.com", "db.internal"])
    resolver = CheckedResolver(policy, FixedResolver(answers))
    kept = await resolver.resolve("files.example.com", 443)
    assert [r["host"] for r in kept] == ["93.184.216.34"]
    with pytest.raises(AddressRefused):
        await resolver.resolve("inside.example.com", 443)
    # listed literally: its internal address is allowed
    assert [r["host"] for r in await resolver.resolve("db.internal", 80)] == ["10.0.0.7"]
    with pytest.raises(AddressRefused):
        await resolver.resolve("elsewhere.org", 80)
