"""The daemon: builds every part from the configuration (:mod:`bridge.parts`), starts them in
order, and stops them in reverse order, every stop guarded (:mod:`bridge.lifecycle`).
Startup: database (migrate or check) → simulator (when enabled) → Parloa clients → HTTP server
→ engine → channels. Shutdown: channels stop intake → engine drains → channels close → HTTP
server → clients → simulator → database."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bridge.admin.handovers import EventStreams
from bridge.channel import Adapter
from bridge.channels import validate_channel
from bridge.config import BridgeConfig
from bridge.engine import Engine
from bridge.handover.desk import Desk
from bridge.handover.desks import build_desks
from bridge.http_server import HttpServer
from bridge.lifecycle import Lifecycle
from bridge.media.serve import media_routes
from bridge.media.urls import KeyOnce
from bridge.metrics import Metrics
from bridge.parts import (
    bots_for,
    build_adapters,
    build_agents,
    build_engine,
    build_http_server,
    build_media,
    build_operator_routes,
    media_signing_key,
    open_database,
    prepare_schema,
    start_clients,
    start_simulator_if_enabled,
    start_speech,
    start_tracing,
)
from bridge.textchat.client import TextchatClient

if TYPE_CHECKING:
    from bridge.devtools.simulator import RunningSimulator

__all__ = ["Service", "tune_garbage_collector", "validate_channel"]

log = logging.getLogger("bridge.service")

CHANNEL_RESTART_MAX = 60.0


# Allocations (less deallocations) of container objects between two young collections
# (CPython's default is 700). A message allocates thousands, and with hundreds of
# conversations in flight most of what a young collection walks is still alive: a large share
# of the CPU at 1000 chats went to it (docs/benchmarks.md).
YOUNG_COLLECTION_EVERY = 10_000
# How many generation-1 collections may pass before a full one (CPython's default is 10).
# Under a burst every full collection walked all the conversations in flight and freed nothing
# (docs/benchmarks.md). With the young threshold above, a full collection comes about every
# 700,000 allocations, as it did with CPython's young threshold and 100 here: cyclic garbage
# that reached the oldest generation is freed ten times later than with CPython's defaults.
FULL_COLLECTION_EVERY = 7


def tune_garbage_collector() -> None:
    """For the ``run`` command: move everything alive after start-up (imported modules,
    configuration, clients) out of the garbage collector's sight, and make collections
    rarer. A full collection otherwise walks all of it, pausing the bridge under load several
    times longer than with the heap frozen (docs/benchmarks.md). Not for processes that run
    several services (tests): frozen objects that later become cyclic garbage are never
    freed."""
    gc.collect()
    gc.freeze()
    _young, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, FULL_COLLECTION_EVERY)


class Service:
    def __init__(self, config: BridgeConfig, *, instance_id: str | None = None) -> None:
        self.config = config
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.metrics = Metrics()
        self._parts = Lifecycle(log)
        database = open_database(config.database, self._parts)
        self.db = database.engine
        self.store = database.store
        self.simulator: RunningSimulator | None = None
        self.clients: dict[str, TextchatClient] = {}
        self.adapters: dict[str, Adapter] = {}
        self.desks: dict[str, Desk] = {}
        self.channel_state: dict[str, str] = {}
        self.engine: Engine | None = None
        self.http: HttpServer | None = None
        self._channel_tasks: dict[str, asyncio.Task[None]] = {}
        self._first_attempt: dict[str, asyncio.Event] = {}

    # --- startup ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every part in order; when one fails, those started before it stay
        registered for :meth:`stop`."""
        cfg, parts = self.config, self._parts
        tracing = start_tracing(parts)  # registered first: flushed after everything else
        await prepare_schema(cfg.database, self.db)
        self.simulator = await start_simulator_if_enabled(cfg.simulator, parts)
        self.clients = await start_clients(cfg, parts, tracing=tracing)
        speech = await start_speech(cfg, parts)
        media_key = KeyOnce(functools.partial(media_signing_key, cfg.media, self.store))
        self.adapters = build_adapters(cfg, self.db)
        # Before the adapters start: a Slack desk keeps its room out of its channel's intake.
        self.desks = build_desks(cfg, self.adapters)
        for name in self.adapters:
            self.channel_state[name] = "starting"
            self._first_attempt[name] = asyncio.Event()
        media = build_media(
            cfg, self.store, self.adapters, media_key, self.public_url, speech, self.metrics
        )
        engine = build_engine(
            cfg,
            self.store,
            bots_for(cfg, self.clients),
            self.adapters,
            self.metrics,
            self.instance_id,
            media,
            tracing=tracing,
            desks=self.desks,
        )
        self.engine = engine
        agents = build_agents(engine, self.store)
        streams = EventStreams()  # the agent inbox's live views, ended before the server
        self.http = build_http_server(
            cfg.http,
            self.metrics,
            self.readiness,
            self.adapters.values(),
            [
                *media_routes(self.store, media_key),
                *(route for desk in self.desks.values() for route in desk.routes()),
            ],
            build_operator_routes(cfg, engine, self.store, self.adapters, agents, streams),
        )
        await parts.start("HTTP server", self.http.start, self.http.stop)
        parts.on_stop("console event streams", streams.close)
        if cfg.http.public_url is None and not cfg.simulator.enabled:
            log.warning(
                "[http] public_url is not set: attachment URLs name %s, which Parloa cannot "
                "reach from outside this network",
                self.public_url(),
            )
        # The channels close for good after the engine's drain (which still delivers
        # through them), before the server that serves their routes.
        for name, adapter in self.adapters.items():
            parts.on_stop(f"channel {name}", adapter.stop)
        # The desks, like the channels, still take the drain's deliveries.
        for bot, desk in self.desks.items():
            parts.on_stop(f"desk {bot}", desk.stop)
        drain = functools.partial(engine.stop, cfg.engine.drain_timeout_seconds)
        await parts.start("engine", engine.start, drain)
        for desk in self.desks.values():
            await desk.start(agents)
        for name, adapter in self.adapters.items():
            task = asyncio.create_task(self._start_channel(name, adapter), name=f"start-{name}")
            self._channel_tasks[name] = task
            parts.on_stop(
                f"channel {name} intake", functools.partial(self._stop_intake, task, adapter)
            )
        # Wait for the first attempt of each channel so `run` reports a broken one early.
        await asyncio.gather(*(event.wait() for event in self._first_attempt.values()))
        log.info(
            "parloa-bridge running (instance %s): %d channel(s), %d bot(s)",
            self.instance_id,
            len(self.adapters),
            len(self.clients),
        )

    def public_url(self) -> str:
        """Where users and Parloa reach this bridge: [http] public_url, else the address it
        listens on (enough on one machine; Parloa in the cloud needs the public one)."""
        if self.config.http.public_url:
            return self.config.http.public_url.rstrip("/")
        host = self.config.http.host
        host = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
        port = self.http.port if self.http is not None else self.config.http.port
        return f"http://{host}:{port}"

    async def _start_channel(self, name: str, adapter: Adapter) -> None:
        """Start a channel, retrying with backoff: one broken channel never stops the others."""
        assert self.engine is not None
        delay = 1.0
        while True:
            try:
                await adapter.start(self.engine.intake(name))
                self.channel_state[name] = "started"
                self._first_attempt[name].set()
                log.info("channel %s started", name)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.channel_state[name] = f"failed: {exc}"
                self._first_attempt[name].set()
                log.error("channel %s failed to start: %s; retrying in %.0fs", name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(CHANNEL_RESTART_MAX, delay * 2)

    @staticmethod
    async def _stop_intake(starting: asyncio.Task[None], adapter: Adapter) -> None:
        """Shutdown begins: no more start attempts, and no new events from this channel."""
        starting.cancel()
        await asyncio.wait([starting])
        await adapter.stop_intake()

    async def readiness(self) -> tuple[bool, Mapping[str, Any]]:
        try:
            await asyncio.wait_for(self.store.ping(), 5)
            database = "ok"
        except Exception as exc:
            database = f"unavailable: {type(exc).__name__}"
        channels: dict[str, Any] = {}
        for name, adapter in self.adapters.items():
            channels[name] = {"state": self.channel_state.get(name, "unknown"), **adapter.status()}
        refused = self.engine.health.refused if self.engine else {}
        # The circuit breaker per bot: open means Parloa keeps failing for it. Like a refused
        # bot it does not make the bridge unready: intake goes on durably.
        breakers = self.engine.breaker_status() if self.engine else {}
        bots: dict[str, dict[str, Any]] = {
            name: (
                {"state": "refused", "reason": refused[name]}
                if name in refused
                else {"state": "ok"}
            )
            for name in self.config.bots
        }
        for name, breaker in breakers.items():
            if name in bots:
                bots[name]["breaker"] = dict(breaker)
        ready = database == "ok" and all(
            state == "started" for state in self.channel_state.values()
        )
        return ready, {"database": database, "channels": channels, "bots": bots}

    # --- shutdown ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop every part started, last first; a part that fails to stop is logged and the
        others still stop. Idempotent."""
        failures = await self._parts.stop()
        if failures:
            names = ", ".join(failure.part for failure in failures)
            log.warning("parloa-bridge stopped; not cleanly: %s", names)
        else:
            log.info("parloa-bridge stopped")

    async def run(self, stop: asyncio.Event, *, daemon: bool = False) -> None:
        """Start, run until ``stop`` is set, then stop in order. ``daemon``: this process
        runs nothing else (the ``run`` command), so its start-up heap may be frozen."""
        try:
            await self.start()
            if daemon:
                tune_garbage_collector()
            await stop.wait()
            log.info("shutting down: stopping intake and draining work in flight")
        finally:
            await self.stop()
