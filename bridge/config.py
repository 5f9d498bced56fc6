"""Configuration: a TOML file, ``env:NAME`` strings resolved from the environment, validated
into frozen models. Every problem is reported as one line naming the key."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "env:"
DEFAULT_CONFIG_FILE = "bridge.toml"
CONFIG_ENV_VAR = "PARLOA_BRIDGE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds one readable line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Section):
    url: str = "sqlite+aiosqlite:///bridge.db"
    auto_migrate: bool = True
    pool_size: Annotated[int, Field(ge=1, le=200)] = 10
    echo: bool = False


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    public_url: str | None = None
    #: a request body must arrive within this long, or the client is cut off with 408
    body_timeout_seconds: Annotated[float, Field(gt=0, le=300)] = 20.0
    #: /readyz and /metrics on a listener of their own (the public one then serves only
    #: /healthz and the intake routes): admin_port set turns it on (0 picks a free port)
    admin_host: str = "127.0.0.1"
    admin_port: Annotated[int | None, Field(ge=0, le=65535)] = None
    #: /readyz and /metrics need ``Authorization: Bearer <admin_token>`` (on either listener)
    admin_token: SecretStr | None = None

    @model_validator(mode="after")
    def _admin_token_long_enough(self) -> HttpConfig:
        token = self.admin_token.get_secret_value() if self.admin_token else None
        if token is not None and len(token) < 16:
            raise ValueError("admin_token: use at least 16 characters")
        return self


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


PositiveSeconds = Annotated[float, Field(gt=0)]


class ParloaConfig(_Section):
    """Defaults shared by every bot."""

    base_url: str = "https://app.parloa.com"
    timeout_seconds: PositiveSeconds = 30.0
    connect_timeout_seconds: PositiveSeconds = 10.0
    max_connections: Annotated[int, Field(ge=1)] = 1000
    max_response_bytes: Annotated[int, Field(ge=1024)] = 1024 * 1024


ContextScalar = str | bool | int | float


class SpeechToTextConfig(_Section):
    """An OpenAI-compatible transcription endpoint (bridge/media/speech.py) for voice notes."""

    #: the server's base URL: requests go to {url}/v1/audio/transcriptions
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")]
    api_key: SecretStr | None = None
    model: Annotated[str, StringConstraints(min_length=1)] = "whisper-1"
    #: e.g. "de"; unset: the user's language as the channel reports it, else the server's guess
    language: str | None = None
    timeout_seconds: PositiveSeconds = 30.0


class HandoverConfig(_Section):
    """``[bots.<name>.handover]``: how a live agent takes over a conversation of this bot
    (README "Human handover"). Without ``desk`` a handover is never started (a warning at
    start when the bot asks for one)."""

    desk: Literal["slack", "webhook", "console"] | None = None
    #: a payload element whose content has this key starts a handover
    payload_key: Annotated[str, StringConstraints(min_length=1)] = "handover"
    #: texts a user may send to ask for a person directly (compared without case)
    user_commands: list[Annotated[str, StringConstraints(min_length=1)]] = Field(
        default_factory=list
    )
    #: after the agent resolves: "bot" (the next message opens a new Parloa session with
    #: handoverReturned / handoverOutcome) or "end" (the conversation ends)
    after: Literal["bot", "end"] = "bot"
    #: no agent took the handover in this time: the user returns to the bot (0: never)
    agent_timeout_seconds: Annotated[float, Field(ge=0)] = 300.0
    #: agents' messages reach the user as "<agent name>: <text>"
    show_agent_name: bool = True
    #: turns of the transcript shown to the agent when the handover opens
    transcript_turns: Annotated[int, Field(ge=0, le=100)] = 10
    # desk = "slack": the agents' channel, in the workspace of the Slack channel named here
    slack_channel: str | None = None
    agents_channel_id: str | None = None
    #: with an OAuth (multi-workspace) Slack channel: the agents' workspace
    agents_team_id: str | None = None
    # desk = "webhook": where handover events go, signed with ``secret``
    url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$")] | None = None
    secret: SecretStr | None = None
    timeout_seconds: PositiveSeconds = 10.0
    signature_tolerance_seconds: PositiveSeconds = 300.0

    @model_validator(mode="after")
    def _desk_settings(self) -> HandoverConfig:
        problems = []
        if self.desk == "slack":
            if not self.slack_channel:
                problems.append('slack_channel: required with desk = "slack"')
            if not self.agents_channel_id:
                problems.append('agents_channel_id: required with desk = "slack"')
        if self.desk == "webhook":
            if not self.url:
                problems.append('url: required with desk = "webhook"')
            secret = self.secret.get_secret_value() if self.secret else ""
            if len(secret) < 16:
                problems.append('secret: required with desk = "webhook", 16 characters or more')
        if problems:
            raise ValueError("; ".join(problems))
        return self


class BotConfig(_Section):
    """One Parloa TextchatV2 release."""

    release_id: Annotated[str, StringConstraints(min_length=1, strip_whitespace=True)]
    api_token: SecretStr
    base_url: str | None = None
    timeout_seconds: PositiveSeconds | None = None
    context: dict[str, ContextScalar] = Field(default_factory=dict)
    #: this bot's own speech-to-text (else the global [speech_to_text])
    speech_to_text: SpeechToTextConfig | None = None
    handover: HandoverConfig = HandoverConfig()


_PATH_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")

ChannelName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]


class ChannelConfig(BaseModel):
    """The keys every channel has; the rest belongs to the adapter of its ``type``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: ChannelName
    type: str
    bot: str

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class EngineConfig(_Section):
    retry_budget_seconds: PositiveSeconds = 900.0
    retry_initial_seconds: PositiveSeconds = 1.0
    retry_max_seconds: PositiveSeconds = 60.0
    idle_timeout_seconds: Annotated[float, Field(ge=0)] = 1800.0
    lease_seconds: PositiveSeconds = 30.0
    max_concurrent_conversations: Annotated[int, Field(ge=1)] = 2000
    delivery_attempts: Annotated[int, Field(ge=1)] = 10
    retention_days: Annotated[float, Field(ge=0)] = 30.0
    #: a conversation mapping idle this long, with nothing left queued, is purged (0: kept)
    conversation_retention_days: Annotated[float, Field(ge=0)] = 365.0
    drain_timeout_seconds: Annotated[float, Field(ge=0)] = 15.0
    # The circuit breaker per bot (bridge/engine/breaker.py): this many transient Parloa
    # failures in a row (0: never) within the window pause the waiting conversations; probes
    # then go 1 s apart, doubling up to breaker_probe_max_seconds.
    breaker_failures: Annotated[int, Field(ge=0)] = 5
    breaker_window_seconds: PositiveSeconds = 60.0
    breaker_probe_max_seconds: PositiveSeconds = 5.0


AttachmentTypeName = Literal[
    "photo", "document", "voice", "audio", "video", "sticker", "location", "contact"
]
DEFAULT_PLACEHOLDERS: dict[AttachmentTypeName, str] = {
    "photo": "[photo]",
    "document": "[document]",
    "voice": "[voice message]",
    "audio": "[audio]",
    "video": "[video]",
    "sticker": "[sticker]",
    "location": "[location]",
    "contact": "[contact]",
}


class MessagesConfig(_Section):
    """Texts the bridge itself says to users (and, for attachments, to Parloa)."""

    unavailable: str = "Sorry, the assistant is not available right now. Please try again later."
    rejected: str = "Sorry, I could not process that message."
    unsupported: str = "Sorry, I can only read text messages."
    conversation_ended: str = "The conversation has ended. Write again to start a new one."
    handover_started: str = "I am connecting you with a person. Please hold on."
    handover_ended: str = "The agent has closed the conversation. Thank you!"
    handover_timeout: str = "Sorry, nobody is available right now. You are back with the assistant."
    #: the message text Parloa gets for an attachment without a caption (or transcript), by
    #: type; the types not named keep their defaults
    attachment_placeholders: dict[AttachmentTypeName, str] = Field(
        default_factory=lambda: dict(DEFAULT_PLACEHOLDERS)
    )

    def placeholders(self) -> dict[str, str]:
        """The attachment placeholders by type name."""
        return {str(kind): text for kind, text in self.attachment_placeholders.items()}

    @field_validator("attachment_placeholders", mode="after")
    @classmethod
    def _complete_placeholders(
        cls, value: dict[AttachmentTypeName, str]
    ) -> dict[AttachmentTypeName, str]:
        return {**DEFAULT_PLACEHOLDERS, **value}


class MediaConfig(_Section):
    """Attachments users send (bridge/media/): kept in the database, served by signed URL."""

    #: how long an attachmentUrl works (7 days)
    url_ttl_seconds: Annotated[int, Field(ge=60)] = 7 * 24 * 3600
    #: larger files are not downloaded (attachmentTooLarge = true); 20 MB is Telegram's limit
    max_bytes: Annotated[int, Field(ge=1024)] = 20 * 1024 * 1024
    download_timeout_seconds: PositiveSeconds = 60.0
    #: downloads at once in one process (more wait their turn): bounds the memory and the
    #: store's share a burst of files takes from text messages
    max_concurrent_downloads: Annotated[int, Field(ge=1)] = 16
    #: the key URLs are signed with (at least 32 characters); unset: one is generated and
    #: kept in the database, shared by every replica
    signing_key: SecretStr | None = None

    @model_validator(mode="after")
    def _key_long_enough(self) -> MediaConfig:
        key = self.signing_key.get_secret_value() if self.signing_key else None
        if key is not None and len(key) < 32:
            raise ValueError("signing_key: use at least 32 characters")
        return self


class AdminConfig(_Section):
    """The operator's admin API and console (/admin/): off without a token."""

    #: ``Authorization: Bearer <token>`` on every /admin/api call (at least 16 characters)
    token: SecretStr | None = None

    @model_validator(mode="after")
    def _token_long_enough(self) -> AdminConfig:
        token = self.token.get_secret_value() if self.token else None
        if token is not None and len(token) < 16:
            raise ValueError("token: use at least 16 characters")
        return self


class SimulatorConfig(_Section):
    """Start the TextchatV2 simulator in-process (demo and tests only)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765
    token: SecretStr | None = None
    latency_seconds: Annotated[float, Field(ge=0)] = 0.0


class BridgeConfig(_Section):
    database: DatabaseConfig = DatabaseConfig()
    http: HttpConfig = HttpConfig()
    logging: LoggingConfig = LoggingConfig()
    parloa: ParloaConfig = ParloaConfig()
    engine: EngineConfig = EngineConfig()
    messages: MessagesConfig = MessagesConfig()
    media: MediaConfig = MediaConfig()
    speech_to_text: SpeechToTextConfig | None = None
    admin: AdminConfig = AdminConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    bots: dict[str, BotConfig] = Field(default_factory=dict)
    channels: list[ChannelConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_check(self) -> BridgeConfig:
        problems: list[str] = []
        seen: set[str] = set()
        for i, channel in enumerate(self.channels):
            if channel.name in seen:
                problems.append(f"channels[{i}].name: duplicate channel name {channel.name!r}")
            seen.add(channel.name)
            if channel.bot not in self.bots:
                known = ", ".join(sorted(self.bots)) or "none configured"
                problems.append(
                    f"channels[{i}].bot: no bot named {channel.bot!r} under [bots] ({known})"
                )
        problems.extend(self._desk_problems())
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _desk_problems(self) -> list[str]:
        """A Slack desk needs a Slack channel to post through (naming the agents' workspace
        when that channel installs by OAuth), and a room of its own."""
        problems: list[str] = []
        by_name = {channel.name: channel for channel in self.channels}
        rooms: dict[tuple[str, str], str] = {}
        for name, bot in self.bots.items():
            desk = bot.handover
            if desk.desk == "webhook" and not _PATH_SEGMENT.fullmatch(name):
                problems.append(
                    f"bots.{name}.handover: a webhook desk's bot name is a path segment "
                    "(/handover/{bot}/events): letters, digits, '.', '_' and '-' only"
                )
            if desk.desk != "slack" or desk.slack_channel is None:
                continue
            where = f"bots.{name}.handover"
            host = by_name.get(desk.slack_channel)
            if host is None or host.type != "slack":
                problems.append(
                    f"{where}.slack_channel: no Slack channel named {desk.slack_channel!r} "
                    "under [[channels]]"
                )
                continue
            if host.options.get("client_id") and not desk.agents_team_id:
                problems.append(
                    f"{where}.agents_team_id: required when the Slack channel installs by "
                    "OAuth (the agents' workspace)"
                )
            room = (desk.slack_channel, f"{desk.agents_team_id or ''}/{desk.agents_channel_id}")
            if room in rooms:
                problems.append(
                    f"{where}.agents_channel_id: the agents' channel of bot {rooms[room]!r} "
                    "too; each desk needs its own"
                )
            rooms.setdefault(room, name)
        return problems

    def bot_speech(self, bot: str) -> SpeechToTextConfig | None:
        """The speech-to-text endpoint of ``bot``: its own, else the global one."""
        return self.bots[bot].speech_to_text or self.speech_to_text

    def bot_base_url(self, bot: str) -> str:
        return self.bots[bot].base_url or self.parloa.base_url

    def secrets(self) -> list[str]:
        """Every secret value in the configuration, for log redaction: typed secrets, and
        channel options whose names say they are secret (adapters type them later)."""
        found = [s.get_secret_value() for s in _walk_secrets(self) if s.get_secret_value()]
        for channel in self.channels:
            for key, value in channel.options.items():
                if isinstance(value, str) and value and _SECRET_KEY.search(key):
                    found.append(value)
        found.extend(url_password(self.database.url))
        return found

    def summary(self) -> dict[str, Any]:
        """The configuration as plain data with every secret redacted."""
        summary: dict[str, Any] = _redacted(self.model_dump(mode="python"))
        return summary


def _walk_secrets(value: object) -> Iterator[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk_secrets(getattr(value, name))
        for extra in (value.model_extra or {}).values():
            yield from _walk_secrets(extra)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk_secrets(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk_secrets(item)


_SECRET_KEY = re.compile(r"(token|secret|password|key)$", re.IGNORECASE)


def _redacted(value: Any, key: str = "") -> Any:
    if isinstance(value, SecretStr):
        return "***" if value.get_secret_value() else ""
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, key) for v in value]
    if isinstance(value, str) and _SECRET_KEY.search(key) and value:
        return "***"
    if isinstance(value, str) and "://" in value and "@" in value:
        return redact_url(value)
    return value


def _url_credentials(url: str) -> tuple[int, int] | None:
    """Where the password of ``scheme://user:password@host...`` lies in ``url`` (start, end),
    or None when it has none. Split at the LAST ``@``: a password may hold an unencoded
    ``@`` (or ``/``); should a query hold one, more is hidden than needed, never less."""
    scheme = url.find("://")
    at = url.rfind("@")
    if scheme < 0 or at < scheme:
        return None
    colon = url.find(":", scheme + 3, at)
    if colon < 0:
        return None
    return colon + 1, at


def redact_url(url: str) -> str:
    """``url`` with its password (everything between ``://user:`` and the last ``@``) hidden."""
    where = _url_credentials(url)
    if where is None:
        return url
    return url[: where[0]] + "***" + url[where[1] :]


def url_password(url: str) -> list[str]:
    """The password of a URL as written and percent-decoded (both may reach a log line)."""
    where = _url_credentials(url)
    if where is None or where[0] == where[1]:
        return []
    raw = url[where[0] : where[1]]
    return sorted({raw, unquote(raw)})


def resolve_env(
    value: Any, environ: Mapping[str, str], path: str = "", problems: list[str] | None = None
) -> Any:
    """Replace every ``env:NAME`` string with the variable's value; missing ones are problems."""
    problems = problems if problems is not None else []
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :].strip()
        if not name:
            problems.append(f"{path}: 'env:' names no environment variable")
            return value
        if name not in environ:
            problems.append(f"{path}: environment variable {name} is not set")
            return value
        return environ[name]
    if isinstance(value, dict):
        return {
            k: resolve_env(v, environ, f"{path}.{k}" if path else str(k), problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_env(v, environ, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors(include_url=False):
        where = _loc(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
            if not where:
                # model-level cross checks carry their own "where: what" lines
                lines.extend(msg.splitlines())
                continue
        lines.append(f"{where}: {msg}" if where else msg)
    return lines


ChannelValidator = Callable[[ChannelConfig, str], list[str]]


def parse_config(
    data: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    validate_channel: ChannelValidator | None = None,
) -> BridgeConfig:
    """Validate already-parsed TOML data. Raises ConfigError with every problem found."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    resolved = resolve_env(dict(data), environ, "", problems)
    try:
        config = BridgeConfig.model_validate(resolved)
    except ValidationError as exc:
        problems += describe_errors(exc)
        config = None
    if validate_channel is not None:
        # Checked even when the rest is broken: every problem is reported in one go.
        raw_channels = resolved.get("channels")
        for i, raw in enumerate(raw_channels if isinstance(raw_channels, list) else []):
            try:
                channel = ChannelConfig.model_validate(raw)
            except ValidationError:
                continue  # its own problems are already listed
            problems.extend(validate_channel(channel, f"channels[{i}]"))
    if problems or config is None:
        raise ConfigError(problems)
    return config


def config_path(explicit: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(explicit or environ.get(CONFIG_ENV_VAR) or DEFAULT_CONFIG_FILE)


def load_config(
    path: Path,
    environ: Mapping[str, str] | None = None,
    validate_channel: ChannelValidator | None = None,
) -> BridgeConfig:
    """Read and validate a TOML configuration file. Raises ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: configuration file not found"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read configuration file ({exc.strerror})"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    return parse_config(data, environ, validate_channel)
