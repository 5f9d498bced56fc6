"""A web chat upload, end to end: the real Service (engine, store, HTTP server) with the
simulator as Parloa. A page's user uploads a file and sends a message naming it; Parloa
receives one message with the contract's context items; attachmentUrl serves the same bytes
without credentials, and a tampered signature is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from bridge.devtools.simulator import RunningSimulator
from tests.adapters.webchat.test_channel import CHANNEL, SECRET
from tests.adapters.webchat.test_uploads import PNG, Socket, form
from tests.adapters.webhook.test_media_end_to_end import context_of, messages, tampered
from tests.support.config import config_data, service_config
from tests.support.net import free_port, local_url
from tests.support.service import running_service, service_url
from tests.support.waiting import poll_until


async def test_an_upload_reaches_parloa_as_a_signed_url(
    tmp_path: Path, sim: RunningSimulator, database_url: str
) -> None:
    port = free_port()
    public = local_url(port)
    channel: dict[str, Any] = {"name": CHANNEL, "type": "webchat", "identity_secret": SECRET}
    config = service_config(
        config_data(database_url, sim.url, channel, http={"port": port, "public_url": public})
    )
    base = f"{public}/webchat/{CHANNEL}/"
    async with running_service(config), aiohttp.ClientSession(trust_env=False) as http:
        async with http.ws_connect(base + "ws") as ws:
            sock = Socket(ws)
            await ws.send_str(json.dumps({"type": "hello", "since": 0, "language": "de-DE"}))
            identity = await sock.frame("identity")
            sock.user, sock.token = identity["user"], identity["token"]
            await sock.frame("ready")

            async with http.post(base + "upload", data=form(), headers=sock.headers) as resp:
                assert resp.status == 200
                upload = await resp.json()
            assert upload["size"] == len(PNG) and upload["content_type"] == "image/png"
            frame = {"type": "message", "id": "m1", "attachments": [upload["id"]]}
            await ws.send_str(json.dumps(frame))
            assert (await sock.frame("ack"))["id"] == "m1"
            (first,) = await poll_until(lambda: messages(sim) or None, within=15)
            # the simulator echoes the placeholder text (after its welcome): it reaches the page
            texts: list[str] = []
            while "You said: [photo]" not in texts:
                reply = await sock.frame("message")
                texts += [e.get("content", "") for e in reply["elements"]]

        assert first.text == "[photo]"
        context = context_of(first)
        url = context.pop("attachmentUrl")
        assert context == {
            "platform": "webchat",
            "language": "de-DE",
            "userAgent": context["userAgent"],
            "attachmentType": "photo",
            "attachmentMimeType": "image/png",
            "attachmentSize": len(PNG),
            "attachmentName": "photo.png",
        }
        assert url.startswith(f"{public}/media/")
        async with aiohttp.ClientSession(trust_env=False) as anonymous:
            async with anonymous.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("image/png")
                assert "photo.png" in resp.headers["Content-Disposition"]
                assert await resp.read() == PNG
            async with anonymous.get(tampered(url)) as resp:
                assert resp.status == 403
                assert await resp.read() != PNG


async def test_an_upload_larger_than_the_server_body_limit_is_streamed(
    tmp_path: Path, sim: RunningSimulator, database_url: str
) -> None:
    data = bytes(range(256)) * (12 * 1024)  # 3 MiB: more than the server reads for a body
    channel: dict[str, Any] = {"name": CHANNEL, "type": "webchat", "identity_secret": SECRET}
    config = service_config(config_data(database_url, sim.url, channel))
    async with running_service(config) as service, aiohttp.ClientSession() as http:
        base = f"{service_url(service)}/webchat/{CHANNEL}/"
        async with http.ws_connect(base + "ws") as ws:
            sock = Socket(ws)
            await ws.send_str(json.dumps({"type": "hello", "since": 0}))
            identity = await sock.frame("identity")
            sock.user, sock.token = identity["user"], identity["token"]
            body = form(data, "big.bin", "application/octet-stream")
            async with http.post(base + "upload", data=body, headers=sock.headers) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["size"] == len(data)
