"""A webhook event with an attachment, end to end: the real Service (engine, store, HTTP server)
with the simulator as Parloa, the file on a server on 127.0.0.1 (listed literally). Parloa
receives one message with the contract's context items; attachmentUrl serves the same bytes
without credentials, and a tampered signature is refused."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web

from bridge.devtools.simulator import RunningSimulator
from bridge.devtools.simulator_state import RecordedRequest
from tests.adapters.webhook.test_channel import SECRET
from tests.support.config import config_data, service_config
from tests.support.net import free_port, local_url, serving
from tests.support.service import running_service
from tests.support.signing import webhook_signed_headers
from tests.support.waiting import poll_until

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 32
PDF = b"%PDF-1.4\n" + b"x" * 3000


@pytest.fixture
async def files() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def photo(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(body=PNG, content_type="image/png")

    async def invoice(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(body=PDF, content_type="application/pdf")

    app = web.Application()
    app.add_routes([web.get("/kettle.png", photo), web.get("/docs/invoice.pdf", invoice)])
    async with serving(app) as base:
        yield base, seen


def messages(sim: RunningSimulator) -> list[RecordedRequest]:
    return [r for r in sim.state.requests if r.event_type == "message" and r.status == 200]


def context_of(request: RecordedRequest) -> dict[str, Any]:
    return {c["key"]: c["value"] for c in request.context or []}


def tampered(url: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    sig = query["sig"]
    query["sig"] = ("A" if sig[0] != "A" else "B") + sig[1:]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def post_event(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> int:
    raw = json.dumps(body).encode()
    async with http.post(url, data=raw, headers=webhook_signed_headers(SECRET, raw)) as resp:
        return resp.status


async def test_attachments_reach_parloa_as_signed_urls(
    tmp_path: Path,
    sim: RunningSimulator,
    files: tuple[str, list[web.Request]],
    database_url: str,
) -> None:
    file_base, seen = files
    port = free_port()
    public = local_url(port)
    channel = {
        "name": "web",
        "type": "webhook",
        "secret": SECRET,
        "deliver_url": f"{file_base}/replies",  # replies are not what this test looks at
        "allowed_attachment_hosts": ["127.0.0.1"],
    }
    config = service_config(
        config_data(database_url, sim.url, channel, http={"port": port, "public_url": public})
    )
    async with running_service(config), aiohttp.ClientSession(trust_env=False) as http:
        events = f"{public}/webhook/web/events"
        one = {
            "event_id": "ev-1",
            "user_id": "u-1",
            "attachments": [{"url": f"{file_base}/kettle.png", "name": "kettle.png"}],
        }
        assert await post_event(http, events, one) == 200
        (first,) = await poll_until(lambda: messages(sim) or None, within=15)
        assert first.text == "[photo]"
        context = context_of(first)
        url = context.pop("attachmentUrl")
        assert context == {
            "platform": "webhook",
            "attachmentType": "photo",
            "attachmentMimeType": "image/png",
            "attachmentSize": len(PNG),
            "attachmentName": "kettle.png",
        }
        assert url.startswith(f"{public}/media/")
        async with http.get(url) as resp:  # no credentials
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("image/png")
            assert "kettle.png" in resp.headers["Content-Disposition"]
            assert await resp.read() == PNG
        async with http.get(tampered(url)) as resp:
            assert resp.status == 403
            assert await resp.read() != PNG

        # two files with a caption: one event, the items of the first, both URLs
        two = {
            "event_id": "ev-2",
            "user_id": "u-1",
            "text": "my invoice and the kettle",
            "attachments": [
                {"url": f"{file_base}/docs/invoice.pdf"},
                {"url": f"{file_base}/kettle.png", "mime_type": "image/png"},
            ],
        }
        assert await post_event(http, events, two) == 200
        second = (await poll_until(lambda: messages(sim)[1:] or None, within=15))[0]
        assert second.text == "my invoice and the kettle"
        context = context_of(second)
        urls = context.pop("attachmentUrls").split(" ")
        assert urls[0] == context.pop("attachmentUrl") and len(urls) == 2
        assert context == {
            "platform": "webhook",
            "attachmentType": "document",
            "attachmentMimeType": "application/pdf",
            "attachmentSize": len(PDF),
            "attachmentName": "invoice.pdf",
            "attachmentCount": 2,
        }
        for link, body in zip(urls, (PDF, PNG), strict=True):
            async with http.get(link) as resp:
                assert (resp.status, await resp.read()) == (200, body)
    # the file server was asked once per attachment, with no credentials
    assert len(seen) == 3
    assert all("Authorization" not in r.headers and "Cookie" not in r.headers for r in seen)
