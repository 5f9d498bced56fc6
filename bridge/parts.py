"""The composition root: every part of the bridge built from a :class:`BridgeConfig`, in one
place, for the service and the CLI's commands.

Whatever holds a resource is handed to the caller's :class:`~bridge.lifecycle.Lifecycle` as it
is opened or started, so the caller stops exactly what was started, in reverse order. Start
order in the service: database (and the media signing key) → simulator (when enabled) →
Parloa clients → speech-to-text → HTTP server → engine → channels."""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.admin import AdminDeps
from bridge.admin.api import admin_routes
from bridge.admin.console import console_routes
from bridge.admin.handovers import EventStreams, handover_routes
from bridge.admin.outreach import outreach_routes
from bridge.channel import Adapter, AdapterServices
from bridge.channels import create_adapter
from bridge.config import BridgeConfig, DatabaseConfig, HttpConfig, MediaConfig, SimulatorConfig
from bridge.engine import Bot, Engine
from bridge.engine.media import Media, MediaSettings
from bridge.handover.agents import AgentDesks
from bridge.handover.desk import Agents, Desk
from bridge.handover.desks import handover_settings
from bridge.http_server import HttpServer, Readiness, build_admin_app, build_app
from bridge.lifecycle import Lifecycle
from bridge.media.speech import SpeechSettings, SpeechToText
from bridge.media.urls import KEY_CHANNEL, KEY_NAME, Signer, new_key
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.store.database import check_schema, create_engine, migrate
from bridge.textchat.client import TextchatClient, Timeouts
from bridge.tracing import Tracing, tracing_from_environment
from bridge.vocabulary import DESK_CHANNEL

if TYPE_CHECKING:
    from bridge.devtools.simulator import RunningSimulator

log = logging.getLogger("bridge.parts")


# --- the database -----------------------------------------------------------------------------


def open_sql_engine(
    config: DatabaseConfig, parts: Lifecycle, *, pool_size: int | None = None
) -> AsyncEngine:
    """The SQLAlchemy engine (no connection yet), disposed when ``parts`` stop."""
    engine = create_engine(config.url, pool_size=pool_size or config.pool_size, echo=config.echo)
    parts.on_stop("database", engine.dispose)
    return engine


@dataclass(frozen=True, slots=True)
class Database:
    """The SQLAlchemy engine and the store over it."""

    engine: AsyncEngine
    store: Store


def open_database(
    config: DatabaseConfig, parts: Lifecycle, *, pool_size: int | None = None
) -> Database:
    """The SQL engine and the store over it; the store closes before the engine is disposed."""
    engine = open_sql_engine(config, parts, pool_size=pool_size)
    store = Store(engine)
    parts.on_stop("store", store.close)
    return Database(engine, store)


async def prepare_schema(config: DatabaseConfig, engine: AsyncEngine) -> None:
    """Migrate to the newest schema, or (``auto_migrate = false``) refuse one that is not."""
    if config.auto_migrate:
        await migrate(engine)
    else:
        await check_schema(engine)


# --- Parloa -----------------------------------------------------------------------------------


async def start_simulator_if_enabled(
    config: SimulatorConfig, parts: Lifecycle
) -> RunningSimulator | None:
    """The in-process TextchatV2 simulator when ``[simulator] enabled``; else None."""
    if not config.enabled:
        return None
    # A developer tool: imported only here, so a production process never loads it.
    from bridge.devtools.simulator import Faults, SimulatorState, start_simulator

    token = config.token.get_secret_value() if config.token else None
    simulator = await start_simulator(
        config.host,
        config.port,
        SimulatorState(token=token, faults=Faults(latency=config.latency_seconds)),
    )
    parts.on_stop("simulator", simulator.close)
    log.info("Parloa simulator running at %s", simulator.url)
    return simulator


def textchat_client(
    config: BridgeConfig, bot: str, tracing: Tracing | None = None
) -> TextchatClient:
    """A client (not started) for the release of ``[bots.<bot>]``."""
    settings = config.bots[bot]
    return TextchatClient(
        config.bot_base_url(bot),
        settings.release_id,
        settings.api_token,
        timeouts=Timeouts(
            connect=config.parloa.connect_timeout_seconds,
            read=settings.timeout_seconds or config.parloa.timeout_seconds,
        ),
        max_connections=config.parloa.max_connections,
        max_body_bytes=config.parloa.max_response_bytes,
        tracing=tracing,
    )


async def start_clients(
    config: BridgeConfig,
    parts: Lifecycle,
    bots: Iterable[str] | None = None,
    tracing: Tracing | None = None,
) -> dict[str, TextchatClient]:
    """Started clients for ``bots`` (default: every configured bot), by bot name."""
    clients: dict[str, TextchatClient] = {}
    for name in config.bots if bots is None else bots:
        client = textchat_client(config, name, tracing)
        await parts.start(f"Parloa client {name}", client.start, client.close)
        clients[name] = client
    return clients


def bots_for(config: BridgeConfig, clients: Mapping[str, TextchatClient]) -> dict[str, Bot]:
    """What the engine knows of each bot: its client and its configured context."""
    return {
        name: Bot(name, client, dict(config.bots[name].context)) for name, client in clients.items()
    }


# --- channels, engine, HTTP -------------------------------------------------------------------


def build_adapters(config: BridgeConfig, sql_engine: AsyncEngine) -> dict[str, Adapter]:
    """One adapter per configured channel, by channel name (nothing started)."""
    services = AdapterServices(
        public_url=config.http.public_url,
        unsupported_text=config.messages.unsupported,
        sql_engine=sql_engine,
    )
    return {channel.name: create_adapter(channel, services) for channel in config.channels}


def build_engine(
    config: BridgeConfig,
    store: Store,
    bots: Mapping[str, Bot],
    adapters: Mapping[str, Adapter],
    metrics: Metrics,
    instance_id: str,
    media: Media | None = None,
    tracing: Tracing | None = None,
    desks: Mapping[str, Desk] | None = None,
) -> Engine:
    """The engine (not started), with each channel's bot and each bot's handover desk."""
    return Engine(
        store,
        bots=bots,
        channel_bots={channel.name: channel.bot for channel in config.channels},
        adapters=adapters,
        config=config.engine,
        messages=config.messages,
        metrics=metrics,
        instance_id=instance_id,
        media=media,
        tracing=tracing,
        handover=handover_settings(config),
        desks=desks,
    )


def build_agents(engine: Engine, store: Store) -> AgentDesks:
    """What the desks hand agents' acts to; their shared state lives under DESK_CHANNEL."""
    return AgentDesks(store, engine.intake, engine.intake(DESK_CHANNEL).state)


def build_operator_routes(
    config: BridgeConfig,
    engine: Engine,
    store: Store,
    adapters: Mapping[str, Adapter],
    agents: Agents | None = None,
    streams: EventStreams | None = None,
) -> list[web.RouteDef]:
    """The admin API (bearer token [admin] token; 404 without one), conversations the bot
    starts, and the console page."""
    token = config.admin.token.get_secret_value() if config.admin.token else None
    deps = AdminDeps(
        store=store,
        token=token,
        channel_bots={channel.name: channel.bot for channel in config.channels},
        adapters=adapters,
        notify=engine.notify,
        intake=engine.intake,
        agents=agents,
        console_bots=frozenset(
            bot for bot, settings in config.bots.items() if settings.handover.desk == "console"
        ),
    )
    extra = [*outreach_routes(deps), *handover_routes(deps, streams)]
    return [*admin_routes(deps, extra=extra), *console_routes()]


def start_tracing(parts: Lifecycle, environ: Mapping[str, str] | None = None) -> Tracing:
    """Tracing as the OTEL_* environment variables ask (off unless OTEL_TRACES_EXPORTER names
    an exporter); what is still buffered is exported when ``parts`` stop, after the rest."""
    tracing = tracing_from_environment(os.environ if environ is None else environ)
    if tracing.enabled:
        parts.on_stop("tracing", tracing.shutdown)
    return tracing


# --- media --------------------------------------------------------------------------------------


async def media_signing_key(config: MediaConfig, store: Store) -> bytes:
    """The key media URLs are signed with: configured, else generated once and kept in the
    database, so that every replica signs and checks alike."""
    if config.signing_key is not None:
        return config.signing_key.get_secret_value().encode()
    stored = await store.state_put_if_absent(KEY_CHANNEL, KEY_NAME, new_key())
    return stored.encode()


async def start_speech(config: BridgeConfig, parts: Lifecycle) -> dict[str, SpeechToText]:
    """A speech-to-text client per bot that has an endpoint (its own or the global one), on
    one HTTP session started and stopped with the parts."""
    wanted = {name: config.bot_speech(name) for name in config.bots}
    settings = {name: s for name, s in wanted.items() if s is not None}
    if not settings:
        return {}
    session: aiohttp.ClientSession | None = None

    async def open_session() -> None:
        nonlocal session
        session = aiohttp.ClientSession(trust_env=True)

    async def close_session() -> None:
        if session is not None:
            await session.close()

    await parts.start("speech-to-text session", open_session, close_session)
    assert session is not None
    return {
        name: SpeechToText(
            session,
            SpeechSettings(
                url=s.url,
                model=s.model,
                api_key=s.api_key.get_secret_value() if s.api_key else None,
                language=s.language,
                timeout_seconds=s.timeout_seconds,
            ),
        )
        for name, s in settings.items()
    }


def build_media(
    config: BridgeConfig,
    store: Store,
    adapters: Mapping[str, Adapter],
    key: Callable[[], Awaitable[bytes]],
    base_url: Callable[[], str],
    speech: Mapping[str, SpeechToText],
    metrics: Metrics,
) -> Media:
    """The worker's media step: the adapters fetch, the store keeps, URLs signed with ``key``
    on ``base_url`` ([http] public_url, else the server's own address)."""

    async def signer() -> Signer:
        return Signer(await key(), base_url, config.media.url_ttl_seconds)

    return Media(
        store,
        adapters,
        signer,
        MediaSettings.from_config(
            config.media, config.messages.placeholders(), config.engine.retry_budget_seconds
        ),
        speech,
        metrics=metrics,
    )


def build_http_server(
    config: HttpConfig,
    metrics: Metrics,
    readiness: Readiness,
    adapters: Iterable[Adapter],
    extra_routes: Iterable[web.RouteDef] = (),
    operator_routes: Iterable[web.RouteDef] = (),
) -> HttpServer:
    """The HTTP server: health, readiness, metrics, every adapter's routes and
    ``extra_routes`` (media); with ``admin_port`` readiness, metrics and ``operator_routes``
    (the admin API and console) on an admin listener of their own instead, started and
    stopped with the server."""
    routes = [route for adapter in adapters for route in adapter.routes()]
    routes.extend(extra_routes)
    token = config.admin_token.get_secret_value() if config.admin_token else None
    admin = None
    if config.admin_port is not None:
        admin_app = build_admin_app(
            metrics,
            readiness,
            token,
            list(operator_routes),
            body_timeout_seconds=config.body_timeout_seconds,
        )
        admin = HttpServer(admin_app, config.admin_host, config.admin_port)
    else:
        routes.extend(operator_routes)
    app = build_app(
        metrics,
        readiness,
        routes,
        body_timeout_seconds=config.body_timeout_seconds,
        operational=admin is None,
        admin_token=token,
    )
    return HttpServer(app, config.host, config.port, admin=admin)
