"""A harness for running ``parloa-bridge run`` as a real subprocess.

In the test process: the TextchatV2 simulator stands in for Parloa, a :class:`Receiver`
stands in for the webhook channel's ``deliver_url`` and a :class:`Sender` plays the chat
platform that posts signed events (and resends every event that was not answered 200).
:class:`BridgeProcess` starts, kills and stops the bridge (``python -m bridge run``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from adapters.webhook.convert import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from bridge.devtools.simulator import RunningSimulator, SimulatorState, start_simulator
from tests.support.config import config_data, toml_text
from tests.support.net import LocalServer, free_port, local_url
from tests.support.paths import ROOT
from tests.support.signing import webhook_signed_headers

SECRET = "whsec-process-0123456789abcdef"
API_TOKEN = "parloa-token-0123456789"
RELEASE_ID = "rel-process-test"
CHANNEL = "web"
ECHO_PREFIX = "You said: "

# A short lease: a killed process's conversations are taken over soon; a long drain: a stopped
# one finishes what it has.
PROCESS_ENGINE: dict[str, Any] = {"lease_seconds": 2, "drain_timeout_seconds": 10}


def run_seed() -> int:
    """A random seed for a test's schedule, printed; ``PARLOA_BRIDGE_TEST_SEED`` replays one."""
    seed = int(os.environ.get("PARLOA_BRIDGE_TEST_SEED") or random.SystemRandom().randrange(10**6))
    print(f"seed={seed} (rerun with PARLOA_BRIDGE_TEST_SEED={seed})")
    return seed


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a bridge subprocess: no proxies, the project on the path."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.pop("PARLOA_BRIDGE_CONFIG", None)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if "PYTHONPATH" in env else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


async def bridge_command(
    *args: str,
    stdin: str = "",
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    within: float = 60,
) -> tuple[int, str, str]:
    """``python -m bridge ARGS`` run to its end as a user would (``stdin`` typed in, then
    closed): its exit code, stdout and stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(env),
        cwd=cwd,
    )
    async with asyncio.timeout(within):
        out, err = await proc.communicate(stdin.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


# --- configuration ------------------------------------------------------------------------------


def webhook_channel(deliver_url: str) -> dict[str, Any]:
    """The options of a webhook channel named ``web`` that delivers to ``deliver_url``."""
    return {"name": CHANNEL, "type": "webhook", "secret": SECRET, "deliver_url": deliver_url}


def write_config(
    path: Path,
    *,
    database_url: str,
    port: int,
    parloa_url: str,
    channel: Mapping[str, Any],
    api_token: str = API_TOKEN,
    engine: Mapping[str, Any] | None = None,
    database: Mapping[str, Any] | None = None,
    bot: Mapping[str, Any] | None = None,
    more_channels: Sequence[Mapping[str, Any]] = (),
) -> Path:
    """A complete bridge configuration: one bot (``bot``: more of its options), one channel
    (its name, type and options) and ``more_channels`` of the same bot."""
    data = config_data(
        database_url,
        parloa_url,
        channel,
        http={"port": port},
        engine={**PROCESS_ENGINE, **(engine or {})},
        bot={"release_id": RELEASE_ID, "api_token": api_token, **(bot or {})},
    )
    bot_name = data["channels"][0]["bot"]
    data["channels"].extend({"bot": bot_name, **more} for more in more_channels)
    data["database"].update(database or {})
    data["logging"] = {"level": "INFO"}
    path.write_text(toml_text(data), encoding="utf-8")
    return path


# --- the receiver (deliver_url) -----------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    at: float
    outbox_id: int
    conversation_id: str
    elements: list[dict[str, Any]]

    @property
    def texts(self) -> list[str]:
        return [str(e.get("content")) for e in self.elements if e.get("type") == "text"]

    @property
    def echoes(self) -> list[str]:
        """The messages this delivery answers (``m3`` for ``You said: m3``)."""
        return [t[len(ECHO_PREFIX) :] for t in self.texts if t.startswith(ECHO_PREFIX)]


@dataclass
class Receiver:
    """The webhook channel's ``deliver_url``: verifies signatures, records in arrival order."""

    secret: str = SECRET
    deliveries: list[Received] = field(default_factory=list)
    typing: int = 0
    bad_signatures: list[str] = field(default_factory=list)
    url: str = ""
    _server: LocalServer = field(default_factory=LocalServer)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/deliver", self._handle)
        await self._server.start(app, access_log=False)
        self.url = f"{self._server.url}/deliver"

    async def close(self) -> None:
        await self._server.close()

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        problem = verify_signature(
            self.secret.encode(),
            request.headers.get(TIMESTAMP_HEADER),
            request.headers.get(SIGNATURE_HEADER),
            raw,
            now=time.time(),
            tolerance=300,
        )
        if problem is not None:
            self.bad_signatures.append(problem)
            return web.json_response({"error": problem}, status=401)
        body = json.loads(raw)
        if body.get("typing"):
            self.typing += 1
            return web.json_response({"ok": True})
        self.deliveries.append(
            Received(
                at=time.monotonic(),
                outbox_id=int(body["outbox_id"]),
                conversation_id=str(body["conversation_id"]),
                elements=list(body["elements"]),
            )
        )
        self._changed.set()
        self._changed = asyncio.Event()
        return web.json_response({"message_id": str(len(self.deliveries))})

    async def wait_for(self, predicate: Callable[[Receiver], bool], within: float) -> None:
        """Wait until ``predicate(self)`` holds (checked on every delivery)."""
        async with asyncio.timeout(within):
            while not predicate(self):
                await self._changed.wait()

    def echoes(self, conversation_id: str) -> list[str]:
        """Every echoed message of one conversation, in arrival order (duplicates included)."""
        return [
            echo
            for d in self.deliveries
            if d.conversation_id == conversation_id
            for echo in d.echoes
        ]

    def first_answers(self, conversation_id: str) -> list[str]:
        return list(dict.fromkeys(self.echoes(conversation_id)))

    def answered(self, expected: Mapping[str, Sequence[str]]) -> bool:
        return all(set(self.echoes(c)) >= set(msgs) for c, msgs in expected.items())


# --- the platform (sender) ----------------------------------------------------------------------


@dataclass
class Sender:
    """Posts signed events to one of the bridge URLs; only a 200 counts as accepted."""

    urls: Sequence[str]
    secret: str = SECRET
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    retry_interval: float = 0.05
    attempts: int = 0
    refused: int = 0
    accepted_by: dict[str, int] = field(default_factory=dict)
    accepted: list[tuple[str, str]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Sender:
        self._session = aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=10)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    def event(self, conversation_id: str, text: str, user_id: str | None = None) -> bytes:
        return json.dumps(
            {
                "event_id": f"{conversation_id}/{text}",
                "user_id": user_id or conversation_id,
                "conversation_id": conversation_id,
                "text": text,
            }
        ).encode()

    async def post_once(self, url: str, raw: bytes) -> int | None:
        """The status of one attempt; None when the bridge could not be reached."""
        assert self._session is not None
        headers = webhook_signed_headers(self.secret, raw)
        self.attempts += 1
        try:
            async with self._session.post(url, data=raw, headers=headers) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def send(
        self, conversation_id: str, text: str, *, deadline: float, pick: bool = True
    ) -> str:
        """Send one event until it is accepted (200); returns the URL that accepted it."""
        raw = self.event(conversation_id, text)
        while True:
            url = self.rng.choice(list(self.urls)) if pick else self.urls[0]
            status = await self.post_once(url, raw)
            if status == 200:
                self.accepted_by[url] = self.accepted_by.get(url, 0) + 1
                self.accepted.append((conversation_id, text))
                return url
            if status not in (None, 503):
                raise AssertionError(f"event {conversation_id}/{text}: unexpected HTTP {status}")
            self.refused += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"event {conversation_id}/{text} was never accepted")
            # A platform's redelivery interval, not a synchronisation.
            await asyncio.sleep(self.retry_interval)

    async def send_conversation(
        self,
        conversation_id: str,
        texts: Iterable[str],
        *,
        deadline: float,
        pause: Callable[[], float] | None = None,
    ) -> None:
        """Send the texts in order, each only after the previous one was accepted."""
        for text in texts:
            await self.send(conversation_id, text, deadline=deadline)
            if pause is not None:
                await asyncio.sleep(pause())


# --- the world of a process test ----------------------------------------------------------------


class World:
    """The simulator and every bridge process a test started, all with one channel; the test
    modules add the platform's side."""

    def __init__(
        self, tmp_path: Path, simulator: RunningSimulator, channel: Mapping[str, Any]
    ) -> None:
        self.tmp_path = tmp_path
        self.simulator = simulator
        self.channel = channel
        self.processes: list[BridgeProcess] = []
        #: more of the bot's options, and more channels of it, in every configuration
        self.bot_options: dict[str, Any] = {}
        self.more_channels: list[Mapping[str, Any]] = []

    def config(
        self,
        name: str,
        database_url: str,
        *,
        api_token: str = API_TOKEN,
        engine: Mapping[str, Any] | None = None,
        database: Mapping[str, Any] | None = None,
    ) -> tuple[Path, int]:
        """A configuration file of its own for one bridge, and the port it names."""
        port = free_port()
        config = write_config(
            self.tmp_path / f"{name}.toml",
            database_url=database_url,
            port=port,
            parloa_url=self.simulator.url,
            channel=self.channel,
            api_token=api_token,
            engine=engine,
            database=database,
            bot=self.bot_options,
            more_channels=self.more_channels,
        )
        return config, port

    def bridge(
        self,
        database_url: str,
        *,
        name: str = "bridge",
        api_token: str = API_TOKEN,
        engine: Mapping[str, Any] | None = None,
        database: Mapping[str, Any] | None = None,
    ) -> BridgeProcess:
        """A process (not started yet) with its own configuration file and port."""
        config, port = self.config(
            name, database_url, api_token=api_token, engine=engine, database=database
        )
        process = BridgeProcess(config=config, port=port, log_dir=self.tmp_path, name=name)
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(p.stderr() for p in self.processes)

    async def cleanup(self) -> None:
        """Kill whatever is still running (teardown)."""
        for process in self.processes:
            await process.cleanup()


class WebhookWorld(World):
    """A :class:`World` whose channel is a webhook delivering to :attr:`receiver`."""

    def __init__(self, tmp_path: Path, simulator: RunningSimulator, receiver: Receiver) -> None:
        super().__init__(tmp_path, simulator, webhook_channel(receiver.url))
        self.receiver = receiver


WebhookWorldT = TypeVar("WebhookWorldT", bound=WebhookWorld)


@asynccontextmanager
async def webhook_world(
    tmp_path: Path, make: Callable[[Path, RunningSimulator, Receiver], WebhookWorldT]
) -> AsyncIterator[WebhookWorldT]:
    """A seeded simulator and a started receiver around a world built by ``make``; on exit the
    world's processes are killed, then the receiver closed."""
    receiver = Receiver()
    async with await start_simulator(state=SimulatorState(seed=1)) as simulator:
        await receiver.start()
        world = make(tmp_path, simulator, receiver)
        try:
            yield world
        finally:
            await world.cleanup()
            await receiver.close()


# --- the bridge process -------------------------------------------------------------------------


@dataclass
class BridgeProcess:
    """One ``python -m bridge run`` subprocess; stderr goes to a file for the failure report."""

    config: Path
    port: int
    log_dir: Path
    name: str = "bridge"
    proc: asyncio.subprocess.Process | None = None
    starts: int = 0
    logs: list[Path] = field(default_factory=list)

    @property
    def url(self) -> str:
        return local_url(self.port)

    @property
    def events_url(self) -> str:
        return f"{self.url}/webhook/{CHANNEL}/events"

    async def start(self) -> None:
        assert self.proc is None or self.proc.returncode is not None, "already running"
        self.starts += 1
        log = self.log_dir / f"{self.name}-{self.starts}.stderr.log"
        self.logs.append(log)
        with log.open("wb") as stderr:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge",
                "run",
                "--config",
                str(self.config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=child_env(),
                cwd=str(self.log_dir),
            )

    async def wait_ready(self, within: float = 20.0) -> dict[str, Any]:
        """Poll ``GET /readyz`` until 200 (a process start: polling is the only way)."""
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=2)
        ) as session:
            while True:
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise AssertionError(
                        f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                        + self.stderr()
                    )
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            body: dict[str, Any] = await resp.json()
                            return body
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.name} not ready in {within}s:\n" + self.stderr())
                await asyncio.sleep(0.05)

    async def start_ready(self, within: float = 20.0) -> dict[str, Any]:
        await self.start()
        return await self.wait_ready(within)

    async def kill(self) -> None:
        """SIGKILL and reap."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, within: float) -> int:
        """SIGTERM; the exit code, or AssertionError when it did not exit in time."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(within):
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name} did not exit within {within}s of SIGTERM:\n" + self.stderr()
            ) from None

    async def cleanup(self) -> None:
        """Kill whatever is still running (teardown)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def stderr(self, tail: int = 8000) -> str:
        parts = []
        for log in self.logs:
            try:
                text = log.read_text("utf-8", "replace")
            except OSError:
                continue
            parts.append(f"--- {log.name} ---\n{text[-tail:]}")
        return "\n".join(parts)

    async def get(self, path: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(
                trust_env=False, timeout=aiohttp.ClientTimeout(total=5)
            ) as session,
            session.get(f"{self.url}{path}") as resp,
        ):
            return resp.status, await resp.text()


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
