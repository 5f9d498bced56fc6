"""The web chat channel end to end inside one process: the real Service (engine, store, HTTP
server) with the simulator as Parloa, talked to over aiohttp's WebSocket client the way the
page does. Plus the pure parts (origins, the mailbox) and ``deliver`` on its own.

Nothing waits on a fixed sleep: tests wait for frames, or poll a condition."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from adapters.webchat.channel import WEBCHAT, WebchatAdapter, WebchatOptions
from adapters.webchat.protocol import Mailbox, normalize_origin, origin_allowed
from bridge.channel import AdapterServices, Delivery, DeliveryRejected
from bridge.channels import channel_type
from bridge.config import BridgeConfig
from bridge.devtools.simulator import Faults, RunningSimulator
from bridge.service import Service
from bridge.textchat.models import parse_element
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.intake import MemoryIntake
from tests.support.service import running_service, service_url
from tests.support.waiting import poll_until

CHANNEL = "web"
SECRET = "an-identity-secret-for-tests"


def config_for(
    database_url: str, sim: RunningSimulator, port: int = 0, **channel: Any
) -> BridgeConfig:
    options = {"name": CHANNEL, "type": "webchat", **channel}
    return service_config(config_data(database_url, sim.url, options, http={"port": port}))


def bridge(
    database_url: str, sim: RunningSimulator, **channel: Any
) -> contextlib.AbstractAsyncContextManager[Service]:
    return running_service(config_for(database_url, sim, **channel))


def base_url(service: Service) -> str:
    return f"{service_url(service)}/webchat/{CHANNEL}/"


@dataclass(frozen=True)
class Identity:
    """A user id and the token the bridge signed it with."""

    user: str
    token: str


class Chat:
    """One socket, as the page uses it; ``frames`` holds what arrived (typing frames too)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    @property
    def identity(self) -> Identity:
        """The identity this socket's hello sent, or the one the bridge issued it."""
        frame = self.of("identity")[0]
        return Identity(frame["user"], frame["token"])

    @property
    def user(self) -> str:
        return self.identity.user

    async def send(self, frame: Mapping[str, Any]) -> None:
        await self.ws.send_str(json.dumps(frame))

    async def say(self, text: str, id: str | None = None) -> str:
        id = id or uuid.uuid4().hex
        await self.send({"type": "message", "id": id, "text": text})
        return id

    async def echo(self, text: str) -> None:
        """Say ``text`` and wait for the simulator's echo of it."""
        await self.say(text)
        await self.until(lambda c: c.said(f"You said: {text}"))

    async def press(self, value: str) -> str:
        id = uuid.uuid4().hex
        await self.send({"type": "button", "id": id, "value": value})
        return id

    async def until(self, predicate: Callable[[Chat], bool], within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            while not predicate(self):
                msg = await self.ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"socket ended: {msg.type.name} {msg.data!r}")
                self.frames.append(json.loads(msg.data))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == kind]

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.of("message")

    def seqs(self) -> list[int]:
        return [int(m["seq"]) for m in self.messages]

    def texts(self) -> list[str]:
        return [
            e["content"] for m in self.messages for e in m["elements"] if e.get("type") == "text"
        ]

    def acked(self, id: str) -> bool:
        return any(f.get("id") == id for f in self.of("ack"))

    def said(self, text: str) -> bool:
        return text in self.texts()


@asynccontextmanager
async def connect(
    session: aiohttp.ClientSession,
    service: Service,
    identity: Identity | None = None,
    since: int = 0,
    headers: Mapping[str, str] | None = None,
    language: str | None = "de-DE",
) -> AsyncIterator[Chat]:
    """A socket past its hello: of ``identity``, or of a new user the bridge issues."""
    async with session.ws_connect(base_url(service) + "ws", headers=headers) as ws:
        chat = Chat(ws)
        hello: dict[str, Any] = {"type": "hello", "since": since}
        if identity is not None:
            hello |= {"user": identity.user, "token": identity.token}
            chat.frames.append({"type": "identity", **hello})
        if language:
            hello["language"] = language
        await chat.send(hello)
        await chat.until(lambda c: bool(c.of("ready")))
        yield chat


async def issued(session: aiohttp.ClientSession, service: Service) -> Identity:
    """A new user's identity, as a page's first visit gets it."""
    async with connect(session, service) as chat:
        return chat.identity


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers={"User-Agent": "webchat-test/1.0"}) as client:
        yield client


def db(tmp_path: Path) -> str:
    return sqlite_url(tmp_path)


@pytest.fixture
async def service(tmp_path: Path, sim: RunningSimulator) -> AsyncIterator[Service]:
    """The service with a web chat channel of default options, for the test's duration."""
    async with bridge(db(tmp_path), sim) as running:
        yield running


# --- the page and the embed script --------------------------------------------------------------


async def test_page_and_embed_are_served_self_contained(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    title = '<b>Shop</b> & "Co"'
    async with bridge(
        db(tmp_path), sim, title=title, allowed_origins=["https://Shop.Example.com"]
    ) as service:
        url = base_url(service)
        async with session.get(url) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/html" and resp.charset == "utf-8"
            page = await resp.text()
            csp = resp.headers["Content-Security-Policy"]
        async with session.get(url + "embed.js") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/javascript"
            embed = await resp.text()
        async with session.get(url.rstrip("/"), allow_redirects=False) as resp:
            assert resp.status == 308 and resp.headers["Location"] == f"/webchat/{CHANNEL}/"

    for body in (page, embed):
        assert not re.search(r"(?i)https?://|//cdn|\bsrc=\"//", body), "external URL"
    # the title is text, never markup
    assert "&lt;b&gt;Shop&lt;/b&gt; &amp; &quot;Co&quot;" in page and "<b>" not in page
    # the inline script and style are exactly what the policy allows
    script = re.search(r"<script>(.*?)</script>", page, re.S)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert script and style
    for block in (script.group(1), style.group(1)):
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "frame-ancestors 'self' https://shop.example.com" in csp
    assert 'aria-live="polite"' in page and '<label for="text"' in page
    assert "document.currentScript" in embed and "iframe" in embed


# --- conversation ---------------------------------------------------------------------------


async def test_hello_message_ack_then_welcome_chips_and_echo_in_order(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with (
        bridge(db(tmp_path), sim) as service,
        connect(session, service) as chat,
        connect(session, service, chat.identity) as second_tab,
    ):
        assert chat.of("ready") == [{"type": "ready", "last": 0}]
        id = await chat.say("hello")
        await chat.until(lambda c: c.acked(id) and len(c.messages) >= 2)
        welcome, echo = chat.messages[:2]
        assert (welcome["seq"], echo["seq"]) == (1, 2)
        assert "demo bot" in welcome["elements"][0]["content"]
        payload = welcome["elements"][1]
        assert payload["type"] == "payload"
        assert [c["title"] for c in payload["chips"]] == [
            "Show me a card",
            "What can you do?",
            "bye",
        ]
        assert echo["elements"][0]["content"] == "You said: hello"
        # the other tab of the same user sees the answers too
        await second_tab.until(lambda c: len(c.messages) >= 2)
        assert second_tab.seqs()[:2] == [1, 2]

    events = [(r.event_type, r.text) for r in sim.state.requests]
    assert events == [("launch", None), ("message", "hello")]
    request = sim.state.requests[1]
    assert request.requester_id == f"{CHANNEL}:{chat.user}"
    context = {c["key"]: c["value"] for c in request.context or []}
    assert context["platform"] == "webchat"
    assert context["language"] == "de-DE"
    assert context["userAgent"] == "webchat-test/1.0"


async def test_chip_press_gets_a_card(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim) as service, connect(session, service) as chat:
        await chat.say("hi")
        await chat.until(lambda c: len(c.messages) >= 2)
        id = await chat.press("Show me a card")
        await chat.until(lambda c: c.acked(id) and len(c.messages) >= 3)
        card = chat.messages[2]["elements"][0]
        assert card["type"] == "cross_card"
        assert card["title"] == "A card from the simulator"
        assert card["image"]["accessibilityText"] == "A colourful gradient"
        assert card["image"]["large"]["url"].startswith(sim.url)
    assert [r.text for r in sim.state.requests if r.event_type == "message"] == [
        "hi",
        "Show me a card",
    ]


async def test_reconnect_gets_newer_entries_and_reload_gets_the_history(
    service: Service, session: aiohttp.ClientSession
) -> None:
    async with connect(session, service) as chat:
        user = chat.identity
        await chat.echo("one")
        await chat.echo("two")
        assert chat.seqs() == [1, 2, 3]
    # a reconnect with the last seq it saw but one: only what is newer
    async with connect(session, service, user, since=2) as again:
        assert again.seqs() == [3]
        assert again.of("ready")[-1]["last"] == 3
    # a reload: everything, in order, before "ready"
    async with connect(session, service, user, since=0) as reload:
        assert reload.seqs() == [1, 2, 3]
        assert reload.frames[-1]["type"] == "ready"
        assert reload.texts()[-2:] == ["You said: one", "You said: two"]


async def test_an_answer_delivered_while_offline_arrives_on_reconnect(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim) as service:
        async with connect(session, service) as chat:
            user = chat.identity
            await chat.echo("first")
            seen = chat.seqs()[-1]
            sim.state.faults = Faults(latency=0.9)  # past the typing delay (0.5 s)
            id = await chat.say("while away")
            await chat.until(lambda c: c.acked(id))
            await chat.until(lambda c: bool(c.of("typing")))  # Parloa is thinking
            await sim.state.wait_for(lambda s: s.stats().in_flight >= 1)
        # the page is gone while Parloa answers; the answer goes to the mailbox

        async def delivered() -> bool:
            raw = await service.store.state_get(CHANNEL, f"tmp:mailbox:{user.user}")
            return Mailbox.load(raw).last_seq > seen

        await poll_until(delivered, within=10)
        sim.state.faults = Faults()
        async with connect(session, service, user, since=seen) as back:
            assert back.texts() == ["You said: while away"]


async def test_the_same_client_id_twice_is_one_parloa_call(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim) as service, connect(session, service) as chat:
        await chat.echo("start")
        await chat.say("again and again", id="m-1")
        await chat.say("again and again", id="m-1")  # re-sent after a lost ack
        await chat.until(lambda c: len([f for f in c.of("ack") if f["id"] == "m-1"]) == 2)
        await chat.echo("last")
        assert chat.texts().count("You said: again and again") == 1
    said = [r.text for r in sim.state.requests if r.event_type == "message"]
    assert said == ["start", "again and again", "last"]


async def test_origins_are_checked(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim, allowed_origins=["https://shop.example.com"]) as service:
        ws_url = base_url(service) + "ws"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with session.ws_connect(ws_url, headers={"Origin": "https://evil.example"}):
                pass
        assert refused.value.status == 403
        with pytest.raises(aiohttp.WSServerHandshakeError):
            async with session.ws_connect(ws_url, headers={"Origin": "null"}):
                pass
        assert service.http is not None
        for origin in ("https://shop.example.com", f"http://127.0.0.1:{service.http.port}"):
            async with connect(session, service, headers={"Origin": origin}) as chat:
                assert chat.of("ready")


async def test_bad_frames_get_error_frames(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim, max_text_length=20) as service:
        async with connect(session, service) as chat:
            id = await chat.say("x" * 21)
            await chat.until(lambda c: bool(c.of("error")))
            assert chat.of("error") == [{"type": "error", "reason": "text_too_long", "id": id}]
            await chat.say("   ", id="blank")
            await chat.send({"type": "dance", "id": "d"})
            await chat.ws.send_str("not json")
            await chat.until(lambda c: len(c.of("error")) == 4)
            reasons = [(f["reason"], f.get("id")) for f in chat.of("error")[1:]]
            assert reasons == [
                ("empty_text", "blank"),
                ("invalid_frame", "d"),
                ("invalid_frame", None),
            ]
            assert not chat.of("ack")
        # a connection must start with a hello
        async with session.ws_connect(base_url(service) + "ws") as ws:
            await ws.send_str(json.dumps({"type": "message", "id": "a", "text": "hi"}))
            frame = json.loads((await ws.receive()).data)
            assert frame == {"type": "error", "reason": "hello_required", "id": "a"}
            closing = await ws.receive()
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1008
    assert sim.state.requests == type(sim.state.requests)()  # nothing reached Parloa


async def test_restart_of_the_service_continues_the_conversation(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    # One identity key across the two processes, as replicas and restarts need.
    service = Service(config_for(db(tmp_path), sim, identity_secret=SECRET))
    await service.start()
    try:
        async with connect(session, service) as chat:
            user = chat.identity
            await chat.echo("before")
            seen = chat.seqs()[-1]
            stopping = asyncio.create_task(service.stop())
            closing = await chat.ws.receive()  # the page is told to go away and reconnect
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1001
    finally:
        await stopping
    # the same database, a new process (a new port, as after a redeploy)
    async with bridge(db(tmp_path), sim, identity_secret=SECRET) as service:
        async with connect(session, service, user, since=seen) as chat:
            assert chat.messages == []
            await chat.echo("after")
            assert chat.seqs() == [seen + 1]
        async with connect(session, service, user) as reload:
            assert reload.texts()[-2:] == ["You said: before", "You said: after"]
    # one Parloa session throughout: no second launch
    assert [r.event_type for r in sim.state.requests] == ["launch", "message", "message"]


async def test_stop_intake_refuses_new_sockets(
    service: Service, session: aiohttp.ClientSession
) -> None:
    adapter = service.adapters[CHANNEL]
    async with connect(session, service) as chat:
        await adapter.stop_intake()
        closing = await chat.ws.receive()
        assert closing.data == 1001
    async with session.get(base_url(service) + "ws") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"]
    async with session.get(base_url(service)) as resp:
        assert resp.status == 200  # the page still loads and keeps reconnecting


# --- deliver on its own, and the pure parts ------------------------------------------------------


async def test_deliver_appends_once_per_outbox_item_and_keeps_history_size() -> None:
    adapter = WEBCHAT.create(
        CHANNEL, {"history_size": 2}, AdapterServices(public_url=None, unsupported_text="")
    )
    assert isinstance(adapter, WebchatAdapter)
    intake = MemoryIntake(CHANNEL)
    await adapter.start(intake)
    user = uuid.uuid4().hex
    progress: list[tuple[int, str | None]] = []

    async def record(index: int, message_id: str | None) -> None:
        progress.append((index, message_id))

    def delivery(outbox_id: int, text: str, address: Mapping[str, Any] | None = None) -> Delivery:
        return Delivery(
            outbox_id=outbox_id,
            conversation_key=user,
            address={"user": user} if address is None else address,
            elements=[parse_element({"type": "text", "content": text})],
            parts_done=0,
            progress=record,
        )

    for outbox_id, text in ((10, "a"), (11, "b"), (11, "b"), (12, "c")):
        await adapter.deliver(delivery(outbox_id, text))
    assert progress == [(0, "1"), (0, "2"), (0, "2"), (0, "3")]  # the retry found its entry
    mailbox = Mailbox.load(await intake.state.get(f"tmp:mailbox:{user}"))
    assert mailbox.last_seq == 3
    assert [e["seq"] for e in mailbox.entries] == [2, 3]
    with pytest.raises(DeliveryRejected):
        await adapter.deliver(delivery(13, "d", address={"chat": 1}))
    assert intake.accepted == []  # delivering takes nothing in
    await adapter.stop()


def test_options_and_origins() -> None:
    assert channel_type("webchat") is WEBCHAT
    options = WebchatOptions.model_validate({"allowed_origins": ["HTTPS://Shop.example.com:443/"]})
    assert options.allowed_origins == ["https://shop.example.com"]
    for bad in (["https://shop.example.com/path"], ["ftp://x"], ["shop.example.com"]):
        with pytest.raises(ValidationError, match="allowed_origins"):
            WebchatOptions.model_validate({"allowed_origins": bad})
    with pytest.raises(ValidationError):
        WebchatOptions.model_validate({"colour": "red"})
    assert normalize_origin("http://[::1]:8080") == "http://[::1]:8080"
    allowed = ["https://shop.example.com"]
    assert origin_allowed("https://shop.example.com", "bridge:8080", allowed)
    assert origin_allowed("http://bridge:8080", "bridge:8080", allowed)  # its own page
    assert origin_allowed("https://chat.example.com", "chat.example.com", [])  # behind TLS proxy
    assert not origin_allowed("https://chat.example.com:8443", "chat.example.com", [])
    assert origin_allowed("https://public.example", "10.0.0.5:8080", [], ["https://public.example"])
    assert not origin_allowed("https://evil.example", "bridge:8080", allowed)
    assert not origin_allowed("null", "bridge:8080", allowed)
    assert origin_allowed("null", "bridge:8080", ["*"])


# --- identity, limits and the greeting (issue 23) -----------------------------------------------


async def refused_with(
    session: aiohttp.ClientSession, service: Service, hello: Mapping[str, Any] | None, **kw: Any
) -> tuple[list[dict[str, Any]], Any, Any]:
    """The frames a socket got before it was closed, and the close code and reason; ``hello``
    None sends nothing (a socket refused at once)."""
    async with session.ws_connect(base_url(service) + "ws", **kw) as ws:
        if hello is not None:
            await ws.send_str(json.dumps(hello))
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return frames, msg.data, msg.extra
                frames.append(json.loads(msg.data))


async def raw_text_frame(service: Service, payload: bytes) -> int:
    """Open a socket by hand, send one masked text frame of ``payload`` bytes (aiohttp's
    client only sends valid text), and return the close code the server answers with."""
    assert service.http is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", service.http.port)
    try:
        key = base64.b64encode(uuid.uuid4().bytes).decode()
        writer.write(
            (
                f"GET /webchat/{CHANNEL}/ws HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101")
        mask = b"\x01\x02\x03\x04"
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        async with asyncio.timeout(10):
            frame = await reader.readexactly(4)  # the server's close frame: code first
        assert frame[0] == 0x88
        return int.from_bytes(frame[2:4], "big")
    finally:
        writer.close()


async def test_identity_is_issued_signed_and_checked(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim) as service:
        async with connect(session, service) as victim:
            issued_to = victim.identity
            assert re.fullmatch(r"[0-9a-f]{32}", issued_to.user)
            assert victim.frames[0]["type"] == "identity"  # before the history and "ready"
            await victim.echo("my secret")
        other = await issued(session, service)
        assert other.user != issued_to.user
        forged = [
            {"user": issued_to.user},  # a known or guessed id, unsigned
            {"user": issued_to.user, "token": "A" * 43},  # a made-up signature
            {"user": issued_to.user, "token": other.token},  # another user's signature
            {"user": uuid.uuid4().hex, "token": issued_to.token},
        ]
        for fields in forged:
            frames, code, reason = await refused_with(
                session, service, {"type": "hello", "since": 0, **fields}
            )
            assert frames == [{"type": "error", "reason": "identity_refused"}], fields
            assert code == 4001 and reason  # a clear code and reason
            assert not [f for f in frames if f["type"] == "message"]  # no history read
        # the issued identity reads its history and writes into its conversation
        async with connect(session, service, issued_to) as again:
            assert again.texts()[-1] == "You said: my secret"
            await again.echo("still me")
    # nothing but the victim's own messages reached Parloa
    assert [r.text for r in sim.state.requests if r.event_type == "message"] == [
        "my secret",
        "still me",
    ]


async def test_identity_signed_with_the_shared_secret_survives_a_new_process(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim, identity_secret=SECRET) as service:
        shared = await issued(session, service)
    async with bridge(db(tmp_path), sim) as service:  # a random key: not accepted
        frames, _, _ = await refused_with(
            session, service, {"type": "hello", "user": shared.user, "token": shared.token}
        )
        assert frames == [{"type": "error", "reason": "identity_refused"}]
    async with (
        bridge(db(tmp_path), sim, identity_secret=SECRET) as service,
        connect(session, service, shared) as chat,
    ):
        assert chat.of("ready")
    with pytest.raises(ValidationError, match="identity_secret"):
        WebchatOptions.model_validate({"identity_secret": "short"})


async def test_the_first_open_greets_once(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim) as service:
        async with connect(session, service) as chat:
            user = chat.identity
            await chat.send({"type": "start", "id": "start"})
            await chat.until(lambda c: c.acked("start") and len(c.messages) == 1)
            assert "demo bot" in chat.messages[0]["elements"][0]["content"]
        # a reload whose page lost the ack asks again: the same event, no second welcome
        async with connect(session, service, user) as reload:
            assert [m["seq"] for m in reload.messages] == [1]
            await reload.send({"type": "start", "id": "another-id"})
            await reload.until(lambda c: c.acked("start"))
            await reload.echo("hi")
            assert reload.seqs() == [1, 2]
    assert [r.event_type for r in sim.state.requests] == ["launch", "message"]


async def test_a_burst_is_rate_limited_and_what_is_accepted_is_answered(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with bridge(db(tmp_path), sim) as service, connect(session, service) as chat:
        ids = [f"m{i}" for i in range(150)]
        started = time.monotonic()
        for id in ids:  # 150 messages as fast as the socket takes them
            await chat.say(id, id=id)
        await chat.until(lambda c: len(c.of("ack")) + len(c.of("error")) == 150)
        elapsed = time.monotonic() - started
        acked = [f["id"] for f in chat.of("ack")]
        refused = chat.of("error")
        assert {f["reason"] for f in refused} == {"rate_limited"}
        # the burst (10), plus at most what refilled meanwhile (1/s)
        assert 10 <= len(acked) <= 10 + math.ceil(elapsed)
        assert acked == ids[: len(acked)]  # the first ones, in order
        await chat.until(lambda c: len(c.texts()) == 1 + len(acked), within=20)
        assert [t.removeprefix("You said: ") for t in chat.texts()[1:]] == acked
    assert [r.text for r in sim.state.requests if r.event_type == "message"] == acked


async def test_one_address_shares_its_rate(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    # Slow refills: what is accepted is the bursts, whatever the machine's speed.
    slow = {"socket_rate_per_second": 0.001, "address_rate_per_second": 0.001}
    async with (
        bridge(db(tmp_path), sim, socket_burst=10, address_burst=15, **slow) as service,
        connect(session, service) as one,
        connect(session, service) as two,
    ):
        for chat in (one, two):
            for i in range(10):
                await chat.say(f"n{i}")
            await chat.until(lambda c: len(c.of("ack")) + len(c.of("error")) == 10)
        assert len(one.of("ack")) == 10
        assert len(two.of("ack")) == 5  # what the address had left
        assert {f["reason"] for f in two.of("error")} == {"rate_limited"}


async def test_sockets_are_capped_per_user_per_address_and_in_total(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    def client(address: str) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))

    too_many = [{"type": "error", "reason": "too_many_connections"}]
    async with (
        bridge(
            db(tmp_path), sim, max_sockets_per_user=2, max_sockets_per_address=3, max_sockets=4
        ) as service,
        client("127.0.0.1") as first,
        client("127.0.0.2") as second,
        client("127.0.0.3") as third,
        connect(first, service) as a,
        connect(first, service, a.identity),
    ):
        # a third socket of the same user (from another address: the user's cap)
        frames, code, reason = await refused_with(
            second, service, {"type": "hello", "user": a.user, "token": a.identity.token}
        )
        assert (frames, code, reason) == (too_many, 4029, "too many connections of this user")
        async with connect(first, service):  # the address's third
            frames, code, reason = await refused_with(first, service, None)
            assert (frames, code) == (too_many, 4029)
            assert reason == "too many connections from this address"
            async with connect(second, service):  # the fourth in total
                frames, code, reason = await refused_with(third, service, None)
                assert (frames, code, reason) == (too_many, 4029, "too many connections")
        # one closed: room again
        async with connect(third, service) as chat:
            assert chat.of("ready")


async def test_pending_events_are_capped(
    tmp_path: Path, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with (
        bridge(db(tmp_path), sim, max_pending_events=3) as service,
        connect(session, service) as chat,
    ):
        sim.state.faults = Faults(latency=0.3)  # the bot is slow: events wait
        for i in range(5):
            await chat.say(f"p{i}", id=f"p{i}")
        await chat.until(lambda c: len(c.of("ack")) + len(c.of("error")) == 5)
        assert [f["id"] for f in chat.of("ack")] == ["p0", "p1", "p2"]
        assert [(f["reason"], f["id"]) for f in chat.of("error")] == [
            ("slow_down", "p3"),
            ("slow_down", "p4"),
        ]
        # answered: room again
        await chat.until(lambda c: c.said("You said: p2"))
        await chat.echo("p5")
    said = [r.text for r in sim.state.requests if r.event_type == "message"]
    assert said == ["p0", "p1", "p2", "p5"]


async def test_bad_values_and_frames_are_refused_with_one_log_line(
    tmp_path: Path,
    sim: RunningSimulator,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="adapters.webchat")
    async with bridge(db(tmp_path), sim, max_text_length=20) as service:
        async with connect(session, service) as chat:
            id = await chat.say("a\x00b")
            await chat.until(lambda c: bool(c.of("error")))
            assert chat.of("error") == [{"type": "error", "reason": "invalid_frame", "id": id}]
            await chat.send({"type": "message", "id": "big", "text": "x" * 100_000})
            closing = await chat.ws.receive()
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1009
        # a text frame that is not UTF-8
        assert await raw_text_frame(service, b"\xff\xfe") == 1007
        # a hello's user over the limit
        frames, code, _ = await refused_with(
            session, service, {"type": "hello", "user": "u" * 65, "token": "A" * 43}
        )
        assert frames == [{"type": "error", "reason": "invalid_frame"}] and code == 1008
    closed = [r for r in caplog.records if "closed a socket" in r.getMessage()]
    assert len(closed) == 2 and not [r for r in closed if r.exc_info]
    assert not [r for r in caplog.records if r.exc_info]
    assert not [r for r in sim.state.requests if r.event_type == "message"]


def test_mailbox_entries_expire_by_their_own_time() -> None:
    day = 86400.0
    mailbox = Mailbox.load(None)
    mailbox.append(1, ["old"], keep=10, now=100 * day)
    mailbox.append(2, ["new"], keep=10, now=129 * day)
    stored = Mailbox.load(mailbox.dump())
    assert [e["at"] for e in stored.entries] == [int(100 * day), int(129 * day)]
    assert not stored.expire(130 * day, 30 * day)  # both within 30 days
    assert stored.expire(131 * day, 30 * day)
    assert [e["outbox"] for e in stored.entries] == [2]
    assert stored.last_seq == 2  # sequence numbers never go back
    legacy = Mailbox.load('{"last": 1, "entries": [{"seq": 1, "elements": []}]}')
    assert legacy.expire(5.0, 1.0)  # an entry without a time gets one, and is kept
    assert legacy.entries[0]["at"] == 5


async def test_deliver_drops_entries_older_than_history_days() -> None:
    adapter = WEBCHAT.create(
        CHANNEL, {"history_days": 1}, AdapterServices(public_url=None, unsupported_text="")
    )
    intake = MemoryIntake(CHANNEL)
    await adapter.start(intake)
    user = uuid.uuid4().hex
    old = {"seq": 7, "outbox": 1, "at": 1000, "elements": [{"type": "text", "content": "x"}]}
    await intake.state.put(f"tmp:mailbox:{user}", json.dumps({"last": 7, "entries": [old]}))

    async def record(index: int, message_id: str | None) -> None:
        pass

    await adapter.deliver(
        Delivery(
            outbox_id=2,
            conversation_key=user,
            address={"user": user},
            elements=[parse_element({"type": "text", "content": "fresh"})],
            parts_done=0,
            progress=record,
        )
    )
    mailbox = Mailbox.load(await intake.state.get(f"tmp:mailbox:{user}"))
    assert [e["seq"] for e in mailbox.entries] == [8]
    await adapter.stop()
