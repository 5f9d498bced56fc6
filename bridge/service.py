"""The daemon: builds every part from the configuration, starts them in order, and stops them
in reverse order. Startup: database (migrate or check) → Parloa clients → engine → HTTP server →
channels. Shutdown: channels stop intake → engine drains → HTTP server → clients → database."""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from adapters import UnknownChannelType, channel_type
from bridge.channel import Adapter, AdapterServices
from bridge.config import BridgeConfig, ChannelConfig, describe_errors
from bridge.engine import Bot, Engine
from bridge.http_server import HttpServer, build_app
from bridge.metrics import Metrics
from bridge.store.database import check_schema, create_engine, migrate
from bridge.store.repository import Store
from bridge.textchat.client import TextchatClient, Timeouts
from bridge.textchat.simulator import Faults, RunningSimulator, SimulatorState, start_simulator

log = logging.getLogger("bridge.service")

CHANNEL_RESTART_MAX = 60.0


def validate_channel(channel: ChannelConfig, where: str) -> list[str]:
    """Check a channel's type-specific options; one line per problem."""
    try:
        entry = channel_type(channel.type)
    except UnknownChannelType as exc:
        return [f"{where}.type: {exc}"]
    try:
        entry.options_model.model_validate(channel.options)
    except ValidationError as exc:
        return [f"{where}.{line}" for line in describe_errors(exc)]
    return []


# Allocations (less deallocations) of container objects between two young collections
# (CPython's default is 700). A message allocates thousands, and with hundreds of
# conversations in flight most of what a young collection walks is still alive: it was 10-15%
# of the CPU at 1000 chats (docs/benchmarks.md). A young collection of 10,000 objects takes
# about a millisecond.
YOUNG_COLLECTION_EVERY = 10_000
# How many generation-1 collections may pass before a full one (CPython's default is 10).
# Under a burst, with 1000 conversations in flight, every full collection walked them all and
# freed nothing: 4 of them, 100-130 ms each, in a 3 s burst (docs/benchmarks.md). With the
# young threshold above, a full collection comes about every 700,000 allocations, as it did
# with CPython's young threshold and 100 here: cyclic garbage that reached the oldest
# generation is freed ten times later than with CPython's defaults.
FULL_COLLECTION_EVERY = 7


def tune_garbage_collector() -> None:
    """For the ``run`` command: move everything alive after start-up (imported modules,
    configuration, clients) out of the garbage collector's sight, and make collections
    rarer. A full collection otherwise walks all of it; under load that paused the bridge
    for 85-98 ms, against 15 ms with the heap frozen (docs/benchmarks.md). Not for processes
    that run several services (tests): frozen objects that later become cyclic garbage are
    never freed."""
    gc.collect()
    gc.freeze()
    _young, middle, _ = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_EVERY, middle, FULL_COLLECTION_EVERY)


class Service:
    def __init__(self, config: BridgeConfig, *, instance_id: str | None = None) -> None:
        self.config = config
        self.instance_id = instance_id or uuid.uuid4().hex[:12]
        self.metrics = Metrics()
        self.db = create_engine(
            config.database.url, pool_size=config.database.pool_size, echo=config.database.echo
        )
        self.store = Store(self.db)
        self.simulator: RunningSimulator | None = None
        self.clients: dict[str, TextchatClient] = {}
        self.adapters: dict[str, Adapter] = {}
        self.channel_state: dict[str, str] = {}
        self.engine: Engine | None = None
        self.http: HttpServer | None = None
        self._channel_tasks: list[asyncio.Task[None]] = []
        self._first_attempt: dict[str, asyncio.Event] = {}
        self._stopped = asyncio.Event()

    # --- startup ---------------------------------------------------------------------------

    async def start(self) -> None:
        cfg = self.config
        if cfg.database.auto_migrate:
            await migrate(self.db)
        else:
            await check_schema(self.db)
        if cfg.simulator.enabled:
            token = cfg.simulator.token.get_secret_value() if cfg.simulator.token else None
            self.simulator = await start_simulator(
                cfg.simulator.host,
                cfg.simulator.port,
                SimulatorState(token=token, faults=Faults(latency=cfg.simulator.latency_seconds)),
            )
            log.info("Parloa simulator running at %s", self.simulator.url)
        bots: dict[str, Bot] = {}
        for name, bot in cfg.bots.items():
            client = TextchatClient(
                cfg.bot_base_url(name),
                bot.release_id,
                bot.api_token,
                timeouts=Timeouts(
                    connect=cfg.parloa.connect_timeout_seconds,
                    read=bot.timeout_seconds or cfg.parloa.timeout_seconds,
                ),
                max_connections=cfg.parloa.max_connections,
                max_body_bytes=cfg.parloa.max_response_bytes,
            )
            await client.start()
            self.clients[name] = client
            bots[name] = Bot(name, client, dict(bot.context))
        services = AdapterServices(
            public_url=cfg.http.public_url,
            unsupported_text=cfg.messages.unsupported,
            sql_engine=self.db,
        )
        for channel in cfg.channels:
            entry = channel_type(channel.type)
            options = entry.options_model.model_validate(channel.options)
            self.adapters[channel.name] = entry.create(channel.name, options, services)
            self.channel_state[channel.name] = "starting"
            self._first_attempt[channel.name] = asyncio.Event()
        self.engine = Engine(
            self.store,
            bots=bots,
            channel_bots={c.name: c.bot for c in cfg.channels},
            adapters=self.adapters,
            config=cfg.engine,
            messages=cfg.messages,
            metrics=self.metrics,
            instance_id=self.instance_id,
        )
        routes = [route for adapter in self.adapters.values() for route in adapter.routes()]
        self.http = HttpServer(
            build_app(self.metrics, self.readiness, routes), cfg.http.host, cfg.http.port
        )
        await self.http.start()
        await self.engine.start()
        for name, adapter in self.adapters.items():
            self._channel_tasks.append(
                asyncio.create_task(self._start_channel(name, adapter), name=f"start-{name}")
            )
        # Wait for the first attempt of each channel so `run` reports a broken one early.
        await asyncio.gather(*(self._first_start(n) for n in self.adapters))
        log.info(
            "parloa-bridge running (instance %s): %d channel(s), %d bot(s)",
            self.instance_id,
            len(self.adapters),
            len(bots),
        )

    async def _first_start(self, name: str) -> None:
        await self._first_attempt[name].wait()

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
        bots = {
            name: (
                {"state": "refused", "reason": refused[name]}
                if name in refused
                else {"state": "ok"}
            )
            for name in self.config.bots
        }
        ready = database == "ok" and all(
            state == "started" for state in self.channel_state.values()
        )
        return ready, {"database": database, "channels": channels, "bots": bots}

    # --- shutdown ---------------------------------------------------------------------------

    async def stop(self) -> None:
        for task in self._channel_tasks:
            task.cancel()
        await asyncio.gather(*self._channel_tasks, return_exceptions=True)
        # Intake first; the drain still delivers answers; then the channels close for good.
        for name, adapter in reversed(list(self.adapters.items())):
            try:
                await adapter.stop_intake()
            except Exception:
                log.exception("channel %s did not stop its intake cleanly", name)
        if self.engine is not None:
            await self.engine.stop(self.config.engine.drain_timeout_seconds)
        for name, adapter in reversed(list(self.adapters.items())):
            try:
                await adapter.stop()
            except Exception:
                log.exception("channel %s did not stop cleanly", name)
        if self.http is not None:
            await self.http.stop()
        for client in self.clients.values():
            await client.close()
        if self.simulator is not None:
            await self.simulator.close()
        await self.store.close()
        await self.db.dispose()
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
            try:
                await self.stop()
            except Exception:
                log.exception("shutdown did not complete cleanly")
