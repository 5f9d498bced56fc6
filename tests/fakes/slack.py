"""A fake Slack for tests, served by aiohttp on 127.0.0.1.

* :class:`FakeSlack` — the Web API (``POST|GET /api/{method}``, form, query or JSON parameters as
  slack-sdk sends them), a Socket Mode websocket (``GET /socket``), ``response_url`` endpoints
  and shared files (:meth:`FakeSlack.add_file`: ``files.info`` and the ``url_private``
  downloads under ``/files-pri/``, which need the workspace's bot token).
  Errors come back the way Slack sends them: HTTP 200 with ``{"ok": false, "error": ...}``, except
  rate limits (HTTP 429, ``Retry-After``) and injected server errors.
* Builders for Events API / interactivity / slash-command requests as Slack sends them
  (:func:`event_callback`, :func:`dm_message`, :func:`block_actions_payload`, ...), the request
  signature (:func:`sign`) and :func:`post_event` / :func:`deliver_like_slack` to send them.

Point slack-sdk at it with ``AsyncWebClient(token=..., base_url=slack.api_url)``. slack-sdk reads
``HTTPS_PROXY`` but ignores ``NO_PROXY``: tests/conftest.py clears the ``*_PROXY`` variables
(a process using this outside pytest must too). Nothing here waits on a fixed sleep; tests wait
with :meth:`FakeSlack.wait_for`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import json
import math
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypedDict, TypeVar, Unpack
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

from tests.support.net import LocalServer
from tests.support.signing import slack_signed_headers as sign

JSON = dict[str, Any]
T = TypeVar("T")

VERIFICATION_TOKEN = "fake-verification-token"
DEFAULT_BOT_SCOPES = (
    "app_mentions:read",
    "channels:history",
    "chat:write",
    "files:read",
    "im:history",
    "im:read",
    "im:write",
    "users:read",
)
#: the ``fail_next`` method name of file downloads (``url_private``)
FILE_DOWNLOAD = "files-pri"
_DOWNLOAD_CHUNK = 16 * 1024
MAX_SOCKET_CONNECTIONS = 10  # per app, as Slack documents
# The credentials a method takes when it is not a bot token: "none" (any or no token), "app"
# (an app-level xapp- token), "client" (the app's client id and secret).
_METHOD_AUTH = {
    "api.test": "none",
    "apps.connections.open": "app",
    "oauth.v2.access": "client",
    "apps.uninstall": "client",
}
# Methods whose documented content types include application/json. Slack ignores a JSON body on
# the others (users.info, conversations.info, oauth.v2.access, ...): parameters must be form/query.
JSON_METHODS = frozenset(
    {
        "api.test",
        "auth.test",
        "auth.revoke",
        "apps.connections.open",
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
        "chat.delete",
    }
)
INTERACTION_TYPES = frozenset(
    {
        "block_actions",
        "block_suggestion",
        "interactive_message",
        "message_action",
        "shortcut",
        "view_closed",
        "view_submission",
    }
)
KNOWN_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "video",
        "table",
        "context_actions",
    }
)
INTERACTIVE_ELEMENTS = frozenset(
    {
        "button",
        "checkboxes",
        "datepicker",
        "datetimepicker",
        "overflow",
        "radio_buttons",
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
        "timepicker",
        "plain_text_input",
        "email_text_input",
        "number_input",
        "url_text_input",
        "rich_text_input",
        "workflow_button",
        "file_input",
    }
)


class SlackError(Exception):
    """Raised inside a method handler: becomes ``{"ok": false, "error": error, **extra}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# --- state and records ----------------------------------------------------------------------


@dataclass
class Workspace:
    team_id: str
    name: str
    domain: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    app_id: str
    enterprise_id: str | None = None
    scopes: tuple[str, ...] = DEFAULT_BOT_SCOPES
    installed: bool = True


@dataclass
class User:
    team_id: str
    id: str
    name: str
    real_name: str
    display_name: str
    tz: str = "Europe/Berlin"
    tz_label: str = "Central European Time"
    tz_offset: int = 3600
    locale: str = "en-US"
    email: str | None = None
    is_bot: bool = False
    deleted: bool = False


class UserProfile(TypedDict, total=False):
    """The fields of a :class:`User` that :meth:`FakeSlack.add_user` takes as they are."""

    tz: str
    tz_label: str
    tz_offset: int
    locale: str
    email: str | None
    is_bot: bool
    deleted: bool


@dataclass
class Channel:
    team_id: str
    id: str
    name: str
    is_im: bool = False
    is_private: bool = False
    user: str | None = None  # the other party of an IM
    is_archived: bool = False
    bot_is_member: bool = True
    members: set[str] | None = None  # None: anyone
    locale: str = "en-US"


@dataclass
class Call:
    """One Web API request as the fake saw it."""

    method: str
    params: JSON  # query + form or JSON body, merged (JSON values keep their types)
    token: str | None
    at: float  # time.monotonic()
    http_method: str
    encoding: str  # "json", "form", "multipart", "query" (no body) or "none"
    headers: dict[str, str]
    team_id: str | None = None
    status: int = 0
    response: JSON | None = None
    injected: bool = False  # answered by fail_next / enforce_rate_limits
    body_ignored: bool = False  # a JSON body on a method that accepts only form/query

    @property
    def ok(self) -> bool:
        return bool(self.response and self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return None if self.response is None else self.response.get("error")


@dataclass
class PostedMessage:
    """A message posted with chat.postMessage. ``text``/``blocks`` are the current content
    (after chat.update); ``versions`` holds every (text, blocks) it had, first one first."""

    team_id: str
    channel: str
    ts: str
    text: str | None
    blocks: list[JSON] | None
    thread_ts: str | None
    token: str
    user: str
    bot_id: str
    app_id: str
    at: float
    params: JSON
    versions: list[tuple[str | None, list[JSON] | None]] = field(default_factory=list)
    deleted: bool = False


@dataclass
class SharedFile:
    """A file a user shared, served by the fake (:meth:`FakeSlack.add_file`)."""

    team_id: str
    id: str
    name: str
    mimetype: str
    data: bytes
    user: str
    subtype: str | None = None
    deleted: bool = False
    redirect_to: str | None = None  # downloads answer 302 to this URL


@dataclass
class FileDownload:
    """One request for a file's bytes, as the fake saw it."""

    path: str
    file_id: str | None
    authorization: str | None
    status: int
    at: float


@dataclass
class Ephemeral:
    team_id: str
    channel: str
    user: str
    message_ts: str
    text: str | None
    blocks: list[JSON] | None
    thread_ts: str | None
    token: str
    at: float


@dataclass
class ResponseUrlPost:
    url: str
    body: JSON
    at: float


@dataclass
class OAuthCode:
    code: str
    team_id: str
    team_name: str
    bot_token: str
    bot_user_id: str
    bot_id: str
    app_id: str
    scopes: tuple[str, ...]
    redirect_uri: str | None
    authed_user_id: str
    user_token: str | None
    user_scopes: tuple[str, ...]
    enterprise_id: str | None
    used: bool = False


@dataclass
class SocketConnection:
    id: int
    app_id: str
    ws: web.WebSocketResponse
    request: web.Request
    opened_at: float
    closed_at: float | None = None
    received: list[JSON] = field(default_factory=list)

    @property
    def open(self) -> bool:
        return self.closed_at is None and not self.ws.closed


@dataclass
class SentEnvelope:
    envelope_id: str
    type: str
    payload: JSON
    connection_id: int
    at: float


@dataclass
class SocketAck:
    envelope_id: str
    payload: JSON | None  # the optional response payload of the ack
    connection_id: int
    at: float
    sent_at: float | None  # when the fake sent the envelope (None: unknown envelope)

    @property
    def latency(self) -> float | None:
        return None if self.sent_at is None else self.at - self.sent_at


@dataclass
class _Failure:
    method: str  # "*" for any
    status: int
    error: str | None
    retry_after: int | str | None  # the Retry-After header as sent (an HTTP date, or odd text)
    remaining: int
    raw_body: str | None
    content_type: str
    drop: bool


@dataclass
class _Bucket:
    capacity: float
    rate: float  # tokens per second
    tokens: float
    updated: float

    def wait_needed(self, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        self.tokens -= 1


@dataclass
class _RateLimits:
    per_channel_per_second: float | None
    channel_burst: int
    workspace_per_minute: float | None
    workspace_burst: int
    methods: frozenset[str]
    channels: dict[tuple[str, str], _Bucket] = field(default_factory=dict)
    workspaces: dict[str, _Bucket] = field(default_factory=dict)


@dataclass
class _Ctx:
    method: str
    params: JSON
    token: str | None
    workspace: Workspace | None = None
    user_id: str | None = None  # the user of an xoxp- token
    app_id: str | None = None  # the app of an xapp- token
    basic_auth: tuple[str, str] | None = None


# --- small helpers --------------------------------------------------------------------------


_last_ts_micros = [0]  # last issued ts in microseconds (shared by the fake and the builders)


def new_ts() -> str:
    """A Slack message timestamp ("1700000000.000100"), strictly increasing in this process."""
    micros = max(int(time.time() * 1_000_000), _last_ts_micros[0] + 1)
    _last_ts_micros[0] = micros
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _slack_id(prefix: str, n: int = 10) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def _digits(k: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(k))


def _token(prefix: str) -> str:
    return f"{prefix}-{_digits(13)}-{_digits(13)}-{secrets.token_urlsafe(18)[:24]}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


# --- Block Kit validation -------------------------------------------------------------------


def validate_blocks(blocks: Any) -> list[str]:
    """Slack-style error strings for a block list ("must be less than 3001 characters
    [json-pointer:/blocks/0/text/text]"); empty when Slack would accept the blocks."""
    errors: list[str] = []
    if not isinstance(blocks, list):
        return ["must provide an array [json-pointer:/blocks]"]
    if len(blocks) > 50:
        errors.append("must be less than 51 items [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        _validate_block(block, f"/blocks/{i}", errors, block_ids)
    return errors


def _max_len(value: Any, limit: int, ptr: str, errors: list[str]) -> None:
    if isinstance(value, str) and len(value) > limit:
        errors.append(f"must be less than {limit + 1} characters [json-pointer:{ptr}]")


def _text_object(
    obj: Any, ptr: str, errors: list[str], *, limit: int, plain_only: bool = False
) -> None:
    if not isinstance(obj, dict):
        errors.append(f"must provide an object [json-pointer:{ptr}]")
        return
    kind = obj.get("type")
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if kind not in allowed:
        errors.append(f"must be one of {list(allowed)} [json-pointer:{ptr}/type]")
    text = obj.get("text")
    if not isinstance(text, str):
        errors.append(f"must provide a string [json-pointer:{ptr}/text]")
    elif not text:
        errors.append(f"must be more than 0 characters [json-pointer:{ptr}/text]")
    else:
        _max_len(text, limit, f"{ptr}/text", errors)


def _validate_element(el: Any, ptr: str, errors: list[str]) -> None:
    if not isinstance(el, dict):
        errors.append(f"must provide an object [json-pointer:{ptr}]")
        return
    kind = el.get("type")
    if kind not in INTERACTIVE_ELEMENTS and kind != "image":
        errors.append(f"unsupported type: {kind} [json-pointer:{ptr}/type]")
        return
    _max_len(el.get("action_id"), 255, f"{ptr}/action_id", errors)
    if kind == "button":
        _text_object(el.get("text"), f"{ptr}/text", errors, limit=75, plain_only=True)
        _max_len(el.get("value"), 2000, f"{ptr}/value", errors)
        _max_len(el.get("url"), 3000, f"{ptr}/url", errors)
        if "style" in el and el["style"] not in ("primary", "danger"):
            errors.append(f"must be one of ['primary', 'danger'] [json-pointer:{ptr}/style]")
    options = el.get("options")
    if isinstance(options, list):
        if len(options) > 100:
            errors.append(f"must be less than 101 items [json-pointer:{ptr}/options]")
        for j, opt in enumerate(options):
            if isinstance(opt, dict):
                _text_object(opt.get("text"), f"{ptr}/options/{j}/text", errors, limit=75)
                _max_len(opt.get("value"), 150, f"{ptr}/options/{j}/value", errors)


def _validate_block(block: Any, ptr: str, errors: list[str], block_ids: set[str]) -> None:
    if not isinstance(block, dict):
        errors.append(f"must provide an object [json-pointer:{ptr}]")
        return
    kind = block.get("type")
    if kind is None:
        errors.append(f"missing required field: type [json-pointer:{ptr}]")
        return
    if kind not in KNOWN_BLOCK_TYPES:
        errors.append(f"unsupported type: {kind} [json-pointer:{ptr}/type]")
        return
    block_id = block.get("block_id")
    if isinstance(block_id, str):
        _max_len(block_id, 255, f"{ptr}/block_id", errors)
        if block_id in block_ids:
            errors.append(f"duplicate block_id [json-pointer:{ptr}/block_id]")
        block_ids.add(block_id)
    if kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"must provide text or fields [json-pointer:{ptr}]")
        if "text" in block:
            _text_object(block["text"], f"{ptr}/text", errors, limit=3000)
        fields = block.get("fields")
        if fields is not None:
            if not isinstance(fields, list):
                errors.append(f"must provide an array [json-pointer:{ptr}/fields]")
            else:
                if len(fields) > 10:
                    errors.append(f"must be less than 11 items [json-pointer:{ptr}/fields]")
                for j, f in enumerate(fields):
                    _text_object(f, f"{ptr}/fields/{j}", errors, limit=2000)
        if "accessory" in block:
            _validate_element(block["accessory"], f"{ptr}/accessory", errors)
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            errors.append(f"must provide at least 1 items [json-pointer:{ptr}/elements]")
            return
        if len(elements) > 25:
            errors.append(f"must be less than 26 items [json-pointer:{ptr}/elements]")
        for j, el in enumerate(elements):
            _validate_element(el, f"{ptr}/elements/{j}", errors)
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            errors.append(f"must provide at least 1 items [json-pointer:{ptr}/elements]")
        elif len(elements) > 10:
            errors.append(f"must be less than 11 items [json-pointer:{ptr}/elements]")
        else:
            for j, el in enumerate(elements):
                if isinstance(el, dict) and el.get("type") in ("plain_text", "mrkdwn"):
                    _text_object(el, f"{ptr}/elements/{j}", errors, limit=3000)
    elif kind == "header":
        _text_object(block.get("text"), f"{ptr}/text", errors, limit=150, plain_only=True)
    elif kind == "image":
        _max_len(block.get("image_url"), 3000, f"{ptr}/image_url", errors)
        if not isinstance(block.get("alt_text"), str):
            errors.append(f"missing required field: alt_text [json-pointer:{ptr}]")
        _max_len(block.get("alt_text"), 2000, f"{ptr}/alt_text", errors)
    elif kind == "markdown":
        if not isinstance(block.get("text"), str):
            errors.append(f"missing required field: text [json-pointer:{ptr}]")
        _max_len(block.get("text"), 12000, f"{ptr}/text", errors)


# --- the fake -------------------------------------------------------------------------------


class FakeSlack:
    """``async with FakeSlack() as slack:`` — the Web API at :attr:`api_url`, Socket Mode at
    ``/socket`` (URL handed out by apps.connections.open)."""

    def __init__(
        self,
        *,
        client_id: str = "1111.2222",
        client_secret: str = "fake-client-secret",
        truncate_long_text: bool = False,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        # Slack's docs say text over 40,000 characters is truncated; some answers say
        # msg_too_long. Default: msg_too_long (the stricter); True: truncate silently.
        self.truncate_long_text = truncate_long_text
        self.workspaces: dict[str, Workspace] = {}
        self.users: dict[tuple[str, str], User] = {}
        self.channels: dict[tuple[str, str], Channel] = {}
        self.calls: list[Call] = []
        self.messages: list[PostedMessage] = []
        self.ephemerals: list[Ephemeral] = []
        self.responses: list[ResponseUrlPost] = []
        self.socket_sent: list[SentEnvelope] = []
        self.socket_acks: list[SocketAck] = []
        self.socket_connections = 0  # connections ever accepted
        self.sockets: list[SocketConnection] = []
        self.latency: dict[str, float] = {}  # method (or "*") -> seconds before answering
        self._bot_tokens: dict[str, Workspace] = {}
        self._user_tokens: dict[str, tuple[Workspace, str]] = {}
        self._app_tokens: dict[str, str] = {}  # xapp- token -> app id
        self._revoked: set[str] = set()
        self._oauth_codes: dict[str, OAuthCode] = {}
        self._tickets: dict[str, str] = {}  # websocket ticket -> app id
        self._failures: list[_Failure] = []
        self._limits: _RateLimits | None = None
        self._response_urls: set[str] = set()
        self._changed = asyncio.Event()
        self._rr = itertools.count()
        self._conn_ids = itertools.count(1)
        self.files: dict[str, SharedFile] = {}
        self.downloads: list[FileDownload] = []
        self._unfetchable_images: list[str] = []  # image_url prefixes Slack cannot download
        self._server = LocalServer()
        self._methods: dict[str, Callable[[_Ctx], JSON]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "auth.revoke": self._auth_revoke,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "conversations.open": self._conversations_open,
            "files.info": self._files_info,
            "apps.connections.open": self._apps_connections_open,
            "oauth.v2.access": self._oauth_v2_access,
            "apps.uninstall": self._apps_uninstall,
        }

    # -- lifecycle --

    async def __aenter__(self) -> FakeSlack:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/socket", self._handle_socket)
        app.router.add_post("/response/{rid}", self._handle_response_url)
        app.router.add_get("/files-pri/{key}/{tail:.+}", self._handle_file_download)
        await self._server.start(app)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in self.sockets:
            if conn.open:
                await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server stop")
        await self._server.close()

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def base_url(self) -> str:
        return self._server.url

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/`` — pass as ``AsyncWebClient(base_url=...)``."""
        return f"{self.base_url}/api/"

    # -- set-up --

    def add_workspace(
        self,
        team_id: str,
        *,
        bot_token: str | None = None,
        bot_user_id: str = "U0BOT",
        bot_id: str | None = None,
        app_id: str = "A0APP",
        name: str | None = None,
        domain: str | None = None,
        enterprise_id: str | None = None,
        app_token: str | None = None,
        scopes: Iterable[str] = DEFAULT_BOT_SCOPES,
    ) -> Workspace:
        """Install the app in a workspace; ``bot_token`` is generated (``xoxb-...``) if omitted.
        ``app_token`` (``xapp-...``) also registers the app for Socket Mode."""
        token = bot_token or _token("xoxb")
        if not token.startswith("xoxb-"):
            raise ValueError("bot tokens start with xoxb-")
        ws = Workspace(
            team_id=team_id,
            name=name or f"Workspace {team_id}",
            domain=domain or team_id.lower(),
            bot_token=token,
            bot_user_id=bot_user_id,
            bot_id=bot_id or "B" + bot_user_id.lstrip("UW"),
            app_id=app_id,
            enterprise_id=enterprise_id,
            scopes=tuple(scopes),
        )
        self.workspaces[team_id] = ws
        self._bot_tokens[token] = ws
        self._revoked.discard(token)
        if app_token is not None:
            self.add_app_token(app_token, app_id)
        return ws

    def add_app_token(self, app_token: str, app_id: str = "A0APP") -> None:
        if not app_token.startswith("xapp-"):
            raise ValueError("app-level tokens start with xapp-")
        self._app_tokens[app_token] = app_id
        self._revoked.discard(app_token)

    def add_user(
        self,
        team_id: str,
        user_id: str,
        *,
        real_name: str = "Test User",
        display_name: str = "",
        name: str | None = None,
        **profile: Unpack[UserProfile],
    ) -> User:
        """A user of the workspace; ``name`` defaults to the real name in lower case, dotted."""
        name = name or real_name.lower().replace(" ", ".")
        user = User(team_id, user_id, name, real_name, display_name, **profile)
        self.users[(team_id, user_id)] = user
        return user

    def add_channel(
        self,
        team_id: str,
        channel_id: str,
        *,
        name: str | None = None,
        is_private: bool = False,
        user: str | None = None,
        is_archived: bool = False,
        bot_is_member: bool = True,
        members: Iterable[str] | None = None,
        locale: str = "en-US",
    ) -> Channel:
        """Register a channel. Once a workspace has registered channels, posting anywhere else
        answers ``channel_not_found`` (until then every channel id is accepted). An id starting
        with ``D`` is an IM with ``user``."""
        is_im = channel_id.startswith("D")
        ch = Channel(
            team_id=team_id,
            id=channel_id,
            name=name or (user or channel_id).lower(),
            is_im=is_im,
            is_private=is_private or is_im,
            user=user,
            is_archived=is_archived,
            bot_is_member=bot_is_member,
            members=None if members is None else set(members),
            locale=locale,
        )
        self.channels[(team_id, channel_id)] = ch
        return ch

    def add_oauth_code(
        self,
        code: str,
        team_id: str,
        *,
        team_name: str | None = None,
        bot_token: str | None = None,
        bot_user_id: str = "U0BOT",
        bot_id: str | None = None,
        app_id: str = "A0APP",
        scopes: Iterable[str] = DEFAULT_BOT_SCOPES,
        redirect_uri: str | None = None,
        authed_user_id: str = "U0INSTALLER",
        user_scopes: Iterable[str] = (),
        enterprise_id: str | None = None,
    ) -> OAuthCode:
        """A code oauth.v2.access will exchange (once) for a bot token; the exchange installs
        the workspace. ``user_scopes`` non-empty also issues an ``xoxp-`` user token."""
        user_scopes = tuple(user_scopes)
        entry = OAuthCode(
            code=code,
            team_id=team_id,
            team_name=team_name or f"Workspace {team_id}",
            bot_token=bot_token or _token("xoxb"),
            bot_user_id=bot_user_id,
            bot_id=bot_id or "B" + bot_user_id.lstrip("UW"),
            app_id=app_id,
            scopes=tuple(scopes),
            redirect_uri=redirect_uri,
            authed_user_id=authed_user_id,
            user_token=_token("xoxp") if user_scopes else None,
            user_scopes=user_scopes,
            enterprise_id=enterprise_id,
        )
        self._oauth_codes[code] = entry
        return entry

    def add_file(
        self,
        team_id: str,
        data: bytes,
        name: str = "report.pdf",
        *,
        mimetype: str = "application/pdf",
        subtype: str | None = None,
        user: str = "U0USER",
        file_id: str | None = None,
    ) -> JSON:
        """A file shared in ``team_id`` whose ``url_private`` serves ``data``; returns the file
        object as it appears in ``files`` of a message (see :func:`file_share`)."""
        fid = file_id or _slack_id("F0", 9)
        self.files[fid] = SharedFile(team_id, fid, name, mimetype, data, user, subtype)
        return self.file_object(fid)

    def file_object(self, file_id: str) -> JSON:
        """The file object of a file added with :meth:`add_file` (``files.info``'s ``file``)."""
        f = self.files[file_id]
        url = f"{self.base_url}/files-pri/{f.team_id}-{f.id}/{quote(f.name)}"
        return slack_file(
            f.name,
            mimetype=f.mimetype,
            size=len(f.data),
            file_id=f.id,
            user=f.user,
            team_id=f.team_id,
            subtype=f.subtype,
            url_private=url,
            url_private_download=f"{self.base_url}/files-pri/{f.team_id}-{f.id}/download/"
            + quote(f.name),
        )

    def delete_file(self, file_id: str) -> None:
        """files.info answers ``file_deleted``, downloads 404."""
        self.files[file_id].deleted = True

    def redirect_file(self, file_id: str, location: str) -> None:
        """Downloads of the file answer 302 to ``location`` (as Slack's CDN may)."""
        self.files[file_id].redirect_to = location

    def refuse_image_urls(self, *prefixes: str) -> None:
        """chat.postMessage refuses image blocks whose ``image_url`` starts with one of
        ``prefixes`` as Slack does when it cannot download the image (``invalid_blocks``,
        "downloading image failed")."""
        self._unfetchable_images.extend(prefixes)

    def revoke_token(self, token: str) -> None:
        """Later calls with ``token`` answer ``token_revoked``."""
        self._revoked.add(token)

    def uninstall(self, team_id: str) -> None:
        """As if the workspace removed the app: all its tokens are revoked."""
        ws = self.workspaces[team_id]
        ws.installed = False
        for token, owner in self._bot_tokens.items():
            if owner is ws:
                self._revoked.add(token)
        for token, (owner, _) in self._user_tokens.items():
            if owner is ws:
                self._revoked.add(token)

    def response_url(self) -> str:
        """A ``response_url`` served by the fake; POSTs to it land in :attr:`responses`."""
        rid = uuid.uuid4().hex
        self._response_urls.add(rid)
        return f"{self.base_url}/response/{rid}"

    # -- fault injection --

    def fail_next(
        self,
        method: str = "*",
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: int | str | None = None,
        count: int = 1,
        raw_body: str | None = None,
        content_type: str = "application/json",
        drop: bool = False,
    ) -> None:
        """Answer the next ``count`` calls of ``method`` ("*": any) with a failure.

        * default: HTTP 429, ``Retry-After: retry_after`` (default 1; a text is sent as it is,
          e.g. an HTTP date or garbage), ``error: ratelimited``;
        * ``error="fatal_error"`` alone: HTTP 200 with ``{"ok": false, "error": ...}``;
        * ``status=500`` (or 503 ...): that status, JSON ``{"ok": false, "error":
          "internal_error"}`` unless ``raw_body``/``content_type`` say otherwise;
        * ``drop=True``: close the connection without an answer.
        """
        if status is None:
            status = 200 if error is not None else 429
        if status == 429:
            error = error or "ratelimited"
            retry_after = 1 if retry_after is None else retry_after
        elif status >= 500:
            error = error or "internal_error"
        self._failures.append(
            _Failure(
                method=method,
                status=status,
                error=error,
                retry_after=retry_after,
                remaining=count,
                raw_body=raw_body,
                content_type=content_type,
                drop=drop,
            )
        )

    def enforce_rate_limits(
        self,
        *,
        per_channel_per_second: float | None = 1.0,
        channel_burst: int = 3,
        workspace_per_minute: float | None = None,
        workspace_burst: int | None = None,
        methods: Iterable[str] = ("chat.postMessage",),
    ) -> None:
        """Token buckets like Slack's chat.postMessage limits: per (team, channel) ``burst``
        messages at once then ``per_channel_per_second``; optionally per workspace. Calls over
        budget get HTTP 429 with ``Retry-After`` (whole seconds, at least 1); see
        :meth:`rate_limited`."""
        self._limits = _RateLimits(
            per_channel_per_second=per_channel_per_second,
            channel_burst=channel_burst,
            workspace_per_minute=workspace_per_minute,
            workspace_burst=workspace_burst or max(1, int((workspace_per_minute or 60) / 6)),
            methods=frozenset(methods),
        )

    def set_latency(self, seconds: float, method: str = "*") -> None:
        self.latency[method] = seconds

    # -- inspection --

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def rate_limited(self) -> list[Call]:
        """Calls answered 429 (injected or over budget)."""
        return [c for c in self.calls if c.status == 429]

    def posted(self, channel: str | None = None, team_id: str | None = None) -> list[PostedMessage]:
        """Messages posted with chat.postMessage, in order (not deleted ones)."""
        return [
            m
            for m in self.messages
            if not m.deleted
            and (channel is None or m.channel == channel)
            and (team_id is None or m.team_id == team_id)
        ]

    def message(self, channel: str, ts: str) -> PostedMessage | None:
        for m in self.messages:
            if m.channel == channel and m.ts == ts:
                return m
        return None

    # -- people and buttons in channels (a handover desk's agents) --

    def user_posts(
        self,
        team_id: str,
        user: str,
        channel: str,
        text: str,
        *,
        thread_ts: str | None = None,
        channel_type: str = "channel",
    ) -> JSON:
        """A person posts ``text`` in ``channel`` (in the thread ``thread_ts``): recorded with
        the messages (``bot_id`` "", ``token`` "") and returned as the ``message`` event Slack
        sends the app for it (send it with :func:`event_callback` / :func:`post_event`)."""
        parent = self.message(channel, thread_ts) if thread_ts else None
        event = channel_message(
            user,
            text,
            channel,
            thread_ts=thread_ts,
            parent_user_id=parent.user if parent else None,
            channel_type=channel_type,
            team=team_id,
        )
        self.messages.append(
            PostedMessage(
                team_id=team_id,
                channel=channel,
                ts=event["ts"],
                text=text,
                blocks=None,
                thread_ts=thread_ts,
                token="",
                user=user,
                bot_id="",
                app_id="",
                at=time.monotonic(),
                params={},
                versions=[(text, None)],
            )
        )
        self._notify()
        return event

    def thread(self, channel: str, thread_ts: str) -> list[PostedMessage]:
        """The message at ``thread_ts`` and its replies (bots' and people's), in order."""
        return [
            m
            for m in self.messages
            if not m.deleted and m.channel == channel and thread_ts in (m.ts, m.thread_ts)
        ]

    def echo(self, message: PostedMessage) -> JSON:
        """The ``message`` event Slack sends the app for its own post ``message`` (no
        subtype; ``bot_id``, ``app_id`` and the bot user set)."""
        return bot_message(
            message.text or "",
            message.channel,
            message.ts,
            bot_id=message.bot_id,
            user=message.user,
            app_id=message.app_id,
            legacy_subtype=False,
            thread_ts=message.thread_ts,
        )

    def press(self, message: PostedMessage, user: str, action_id: str) -> JSON:
        """``block_actions``: ``user`` presses the button ``action_id`` of ``message`` as it
        shows now (LookupError when it has no such button)."""
        buttons = [
            element
            for block in message.blocks or []
            if block.get("type") == "actions"
            for element in block.get("elements") or []
            if element.get("action_id") == action_id
        ]
        if not buttons:
            raise LookupError(f"no button {action_id!r} on the message {message.ts}")
        ws = self.workspaces[message.team_id]
        shown = self._message_json(
            ws, message.text, message.blocks, message.ts, message.thread_ts, None
        )
        return block_actions_payload(
            user,
            message.channel,
            message.ts,
            action_id,
            str(buttons[0].get("value") or ""),
            team_id=message.team_id,
            api_app_id=ws.app_id,
            button_text=str((buttons[0].get("text") or {}).get("text") or "Button"),
            message=shown,
            thread_ts=message.thread_ts,
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T], within: float = 5.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked whenever the fake records
        something) and return its value; ``TimeoutError`` after ``within`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            changed = self._changed
            value = predicate()
            if value:
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {within}s")
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                value = predicate()
                if value:
                    return value
                raise TimeoutError(f"condition not met within {within}s") from None

    # -- the Web API --

    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: JSON = dict(request.query)
        encoding = "query" if request.query else "none"
        body = await request.read()
        ctype = request.content_type
        invalid_json = body_ignored = False
        plain: JSON = dict(params)  # query/form only: Slack never reads a token from JSON
        if body:
            if ctype == "application/json":
                encoding = "json"
                try:
                    parsed = json.loads(body)
                except ValueError:
                    parsed, invalid_json = None, True
                if isinstance(parsed, dict) and method in JSON_METHODS:
                    params.update({k: v for k, v in parsed.items() if k != "token"})
                else:
                    body_ignored = not invalid_json
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                encoding = "form" if ctype.startswith("application") else "multipart"
                form = await request.post()
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                params.update(fields)
                plain.update(fields)
        token, basic = self._credentials(request, plain)
        call = Call(
            method=method,
            params=params,
            token=token,
            at=time.monotonic(),
            http_method=request.method,
            encoding=encoding,
            headers={k: v for k, v in request.headers.items()},
            body_ignored=body_ignored,
        )
        self.calls.append(call)
        self._notify()
        if invalid_json:
            return self._respond(call, {"ok": False, "error": "invalid_json"}, 200)

        delay = self.latency.get(method, self.latency.get("*", 0.0))
        if delay > 0:
            await asyncio.sleep(delay)

        failure = self._take_failure(method)
        if failure is not None:
            call.injected = True
            if failure.drop:
                call.status = -1
                self._notify()
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError  # aiohttp drops the request quietly
            headers = {}
            if failure.retry_after is not None:
                headers["Retry-After"] = str(failure.retry_after)
            if failure.raw_body is not None:
                call.status = failure.status
                self._notify()
                return web.Response(
                    status=failure.status,
                    text=failure.raw_body,
                    content_type=failure.content_type,
                    headers=headers,
                )
            return self._respond(
                call, {"ok": False, "error": failure.error}, failure.status, headers
            )

        handler = self._methods.get(method)
        if handler is None:
            return self._respond(call, {"ok": False, "error": "unknown_method"}, 200)
        ctx = _Ctx(method=method, params=params, token=token, basic_auth=basic)
        try:
            self._authenticate(ctx, _METHOD_AUTH.get(method, "bot"))
            call.team_id = ctx.workspace.team_id if ctx.workspace else None
            wait = self._over_budget(ctx)
            if wait is not None:
                call.injected = True
                return self._respond(
                    call, {"ok": False, "error": "ratelimited"}, 429, {"Retry-After": str(wait)}
                )
            result = handler(ctx)
        except SlackError as exc:
            return self._respond(call, {"ok": False, "error": exc.error, **exc.extra}, 200)
        return self._respond(call, result, 200)

    def _respond(
        self, call: Call | None, body: JSON, status: int, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        if call is not None:
            call.status = status
            call.response = body
            self._notify()
        return web.json_response(body, status=status, headers=headers)

    @staticmethod
    def _credentials(
        request: web.Request, params: JSON
    ) -> tuple[str | None, tuple[str, str] | None]:
        auth = request.headers.get("Authorization", "")
        token: str | None = None
        basic: tuple[str, str] | None = None
        if auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        elif auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
            except (binascii.Error, UnicodeDecodeError):
                decoded = ""
            if ":" in decoded:
                cid, secret = decoded.split(":", 1)
                basic = (cid, secret)
        if token is None and isinstance(params.get("token"), str):
            token = params["token"]
        return token, basic

    def _take_failure(self, method: str) -> _Failure | None:
        for failure in self._failures:
            if failure.method in (method, "*") and failure.remaining > 0:
                failure.remaining -= 1
                if failure.remaining == 0:
                    self._failures.remove(failure)
                return failure
        return None

    def _authenticate(self, ctx: _Ctx, auth: str) -> None:
        if auth in ("none", "client"):
            if ctx.token and ctx.token in self._bot_tokens:
                ctx.workspace = self._bot_tokens[ctx.token]
            return
        token = ctx.token
        if not token:
            raise SlackError("not_authed")
        if token in self._revoked:
            raise SlackError("token_revoked")
        if auth == "app":
            if token.startswith(("xoxb-", "xoxp-")):
                raise SlackError("not_allowed_token_type")
            app_id = self._app_tokens.get(token)
            if app_id is None:
                raise SlackError("invalid_auth")
            ctx.app_id = app_id
            return
        if token in self._bot_tokens:
            ctx.workspace = self._bot_tokens[token]
        elif token in self._user_tokens:
            ctx.workspace, ctx.user_id = self._user_tokens[token]
        elif token.startswith("xapp-") and token in self._app_tokens:
            raise SlackError("not_allowed_token_type")
        else:
            raise SlackError("invalid_auth")
        if not ctx.workspace.installed:
            raise SlackError("token_revoked")

    def _over_budget(self, ctx: _Ctx) -> int | None:
        limits = self._limits
        if limits is None or ctx.method not in limits.methods or ctx.workspace is None:
            return None
        now = time.monotonic()
        team = ctx.workspace.team_id
        waits: list[float] = []
        buckets: list[_Bucket] = []
        if limits.per_channel_per_second:
            key = (team, str(ctx.params.get("channel", "")))
            bucket = limits.channels.setdefault(
                key,
                _Bucket(
                    capacity=limits.channel_burst,
                    rate=limits.per_channel_per_second,
                    tokens=limits.channel_burst,
                    updated=now,
                ),
            )
            buckets.append(bucket)
            waits.append(bucket.wait_needed(now))
        if limits.workspace_per_minute:
            bucket = limits.workspaces.setdefault(
                team,
                _Bucket(
                    capacity=limits.workspace_burst,
                    rate=limits.workspace_per_minute / 60,
                    tokens=limits.workspace_burst,
                    updated=now,
                ),
            )
            buckets.append(bucket)
            waits.append(bucket.wait_needed(now))
        wait = max(waits, default=0.0)
        if wait > 0:
            return max(1, math.ceil(wait))
        for bucket in buckets:
            bucket.take()
        return None

    # -- method handlers --

    def _api_test(self, ctx: _Ctx) -> JSON:
        args = {k: v for k, v in ctx.params.items() if k != "token"}
        if "error" in args:
            raise SlackError(str(args["error"]), args=args)
        return {"ok": True, "args": args} if args else {"ok": True}

    def _auth_test(self, ctx: _Ctx) -> JSON:
        ws = ctx.workspace
        assert ws is not None
        if ctx.user_id is not None:
            user = self.users.get((ws.team_id, ctx.user_id))
            return {
                "ok": True,
                "url": f"https://{ws.domain}.slack.com/",
                "team": ws.name,
                "user": user.name if user else ctx.user_id,
                "team_id": ws.team_id,
                "user_id": ctx.user_id,
                "is_enterprise_install": False,
            }
        return {
            "ok": True,
            "url": f"https://{ws.domain}.slack.com/",
            "team": ws.name,
            "user": "bot",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
            **({"enterprise_id": ws.enterprise_id} if ws.enterprise_id else {}),
        }

    def _auth_revoke(self, ctx: _Ctx) -> JSON:
        if not _truthy(ctx.params.get("test")):
            assert ctx.token is not None
            self._revoked.add(ctx.token)
        return {"ok": True, "revoked": True}

    def _resolve_channel(self, ws: Workspace, raw: Any, *, for_post: bool) -> str:
        if not isinstance(raw, str) or not raw:
            raise SlackError("channel_not_found")
        team = ws.team_id
        if raw[0] in "UW":  # a user id: the bot's IM with that user
            if any(k[0] == team for k in self.users) and (team, raw) not in self.users:
                raise SlackError("channel_not_found")
            for ch in self.channels.values():
                if ch.team_id == team and ch.is_im and ch.user == raw:
                    return ch.id
            ch = self.add_channel(team, "D" + raw[1:], user=raw)
            return ch.id
        registered = [c for c in self.channels.values() if c.team_id == team]
        if not registered:
            return raw
        name = raw.lstrip("#")
        found = self.channels.get((team, raw)) or next(
            (c for c in registered if c.name == name and not c.is_im), None
        )
        if found is None:
            raise SlackError("channel_not_found")
        if not found.bot_is_member:
            if found.is_private:
                raise SlackError("channel_not_found")
            if for_post and "chat:write.public" not in ws.scopes:
                raise SlackError("not_in_channel")
        if for_post and found.is_archived:
            raise SlackError("is_archived")
        return found.id

    def _content(self, params: JSON, *, required: bool) -> tuple[str | None, list[JSON] | None]:
        text = params.get("text")
        text = None if text is None else str(text)
        blocks = params.get("blocks")
        if isinstance(blocks, str):
            try:
                blocks = json.loads(blocks) if blocks.strip() else None
            except ValueError:
                raise SlackError("invalid_blocks_format") from None
        if blocks is not None and not isinstance(blocks, list):
            raise SlackError("invalid_blocks_format")
        attachments = params.get("attachments")
        if required and not text and not blocks and not attachments:
            raise SlackError("no_text")
        if text is not None and len(text) > 40000:
            if not self.truncate_long_text:
                raise SlackError("msg_too_long")
            text = text[:40000]
        if blocks:
            errors = validate_blocks(blocks) or self._image_failures(blocks)
            if errors:
                raise SlackError(
                    "invalid_blocks",
                    errors=errors,
                    response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
                )
        return text, blocks

    def _image_failures(self, blocks: list[JSON]) -> list[str]:
        return [
            f"downloading image failed [json-pointer:/blocks/{i}/image_url]"
            for i, block in enumerate(blocks)
            if block.get("type") == "image"
            and str(block.get("image_url", "")).startswith(tuple(self._unfetchable_images))
        ]

    def _message_json(
        self,
        ws: Workspace,
        text: str | None,
        blocks: list[JSON] | None,
        ts: str,
        thread_ts: str | None,
        parent: PostedMessage | None,
    ) -> JSON:
        message: JSON = {
            "user": ws.bot_user_id,
            "type": "message",
            "ts": ts,
            "bot_id": ws.bot_id,
            "app_id": ws.app_id,
            "text": text or "",
            "team": ws.team_id,
            "bot_profile": {
                "id": ws.bot_id,
                "app_id": ws.app_id,
                "name": "bridge",
                "deleted": False,
                "team_id": ws.team_id,
            },
        }
        if blocks is not None:
            message["blocks"] = blocks
        if thread_ts:
            message["thread_ts"] = thread_ts
            message["parent_user_id"] = parent.user if parent else ws.bot_user_id
        return message

    def _post_target(self, ctx: _Ctx) -> tuple[Workspace, str, str, str | None]:
        """The workspace, token, channel and thread (None: top level) a chat.post* call
        names; the channel checked as Slack does."""
        ws = ctx.workspace
        assert ws is not None and ctx.token is not None
        channel = self._resolve_channel(ws, ctx.params.get("channel"), for_post=True)
        thread_ts = ctx.params.get("thread_ts") or None
        return ws, ctx.token, channel, None if thread_ts is None else str(thread_ts)

    def _chat_post_message(self, ctx: _Ctx) -> JSON:
        ws, token, channel, thread_ts = self._post_target(ctx)
        text, blocks = self._content(ctx.params, required=True)
        ts = new_ts()
        parent = self.message(channel, thread_ts) if thread_ts else None
        self.messages.append(
            PostedMessage(
                team_id=ws.team_id,
                channel=channel,
                ts=ts,
                text=text,
                blocks=blocks,
                thread_ts=thread_ts,
                token=token,
                user=ws.bot_user_id,
                bot_id=ws.bot_id,
                app_id=ws.app_id,
                at=time.monotonic(),
                params=dict(ctx.params),
                versions=[(text, blocks)],
            )
        )
        return {
            "ok": True,
            "channel": channel,
            "ts": ts,
            "message": self._message_json(ws, text, blocks, ts, thread_ts, parent),
        }

    def _own_message(self, ctx: _Ctx) -> tuple[Workspace, PostedMessage]:
        ws = ctx.workspace
        assert ws is not None
        channel = self._resolve_channel(ws, ctx.params.get("channel"), for_post=False)
        ts = ctx.params.get("ts")
        msg = self.message(channel, str(ts)) if ts else None
        if msg is None or msg.deleted or msg.team_id != ws.team_id:
            raise SlackError("message_not_found")
        if msg.user != ws.bot_user_id:
            raise SlackError(
                "cant_update_message" if ctx.method == "chat.update" else "cant_delete_message"
            )
        return ws, msg

    def _chat_update(self, ctx: _Ctx) -> JSON:
        ws, msg = self._own_message(ctx)
        text, blocks = self._content(ctx.params, required=True)
        if text is not None:
            msg.text = text
        if blocks is not None or "blocks" in ctx.params:
            msg.blocks = blocks or None
        msg.versions.append((msg.text, msg.blocks))
        return {
            "ok": True,
            "channel": msg.channel,
            "ts": msg.ts,
            "text": msg.text or "",
            "message": self._message_json(ws, msg.text, msg.blocks, msg.ts, msg.thread_ts, None)
            | {"edited": {"user": ws.bot_user_id, "ts": new_ts()}},
        }

    def _chat_delete(self, ctx: _Ctx) -> JSON:
        _, msg = self._own_message(ctx)
        msg.deleted = True
        return {"ok": True, "channel": msg.channel, "ts": msg.ts}

    def _chat_post_ephemeral(self, ctx: _Ctx) -> JSON:
        ws, token, channel, thread_ts = self._post_target(ctx)
        user = ctx.params.get("user")
        if not isinstance(user, str) or not user:
            raise SlackError("user_not_found")
        if any(k[0] == ws.team_id for k in self.users) and (ws.team_id, user) not in self.users:
            raise SlackError("user_not_found")
        ch = self.channels.get((ws.team_id, channel))
        if ch is not None and ch.members is not None and user not in ch.members:
            raise SlackError("user_not_in_channel")
        text, blocks = self._content(ctx.params, required=True)
        ts = new_ts()
        at = time.monotonic()
        self.ephemerals.append(
            Ephemeral(ws.team_id, channel, user, ts, text, blocks, thread_ts, token, at)
        )
        return {"ok": True, "message_ts": ts}

    def _users_info(self, ctx: _Ctx) -> JSON:
        ws = ctx.workspace
        assert ws is not None
        user_id = ctx.params.get("user")
        user = self.users.get((ws.team_id, str(user_id)))
        if user is None:
            raise SlackError("user_not_found")
        profile: JSON = {
            "real_name": user.real_name,
            "display_name": user.display_name,
            "real_name_normalized": user.real_name,
            "display_name_normalized": user.display_name,
            "first_name": user.real_name.split(" ")[0],
            "status_text": "",
            "status_emoji": "",
            "image_48": f"https://avatars.example/{user.id}_48.png",
            "team": user.team_id,
        }
        if user.email:
            profile["email"] = user.email
        info: JSON = {
            "id": user.id,
            "team_id": user.team_id,
            "name": user.name,
            "deleted": user.deleted,
            "color": "9f69e7",
            "real_name": user.real_name,
            "tz": user.tz,
            "tz_label": user.tz_label,
            "tz_offset": user.tz_offset,
            "profile": profile,
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": user.is_bot,
            "is_app_user": False,
            "updated": 1700000000,
            "has_2fa": False,
        }
        if _truthy(ctx.params.get("include_locale")):
            info["locale"] = user.locale
        return {"ok": True, "user": info}

    def _conversations_info(self, ctx: _Ctx) -> JSON:
        ws = ctx.workspace
        assert ws is not None
        raw = ctx.params.get("channel")
        if not isinstance(raw, str) or not raw:
            raise SlackError("channel_not_found")
        ch = self.channels.get((ws.team_id, raw))
        if ch is None:
            if any(c.team_id == ws.team_id for c in self.channels.values()):
                raise SlackError("channel_not_found")
            ch = Channel(
                team_id=ws.team_id,
                id=raw,
                name=raw.lower(),
                is_im=raw[0] == "D",
                is_private=raw[0] in "DG",
            )
        elif not ch.bot_is_member and ch.is_private:
            raise SlackError("channel_not_found")
        info: JSON = {
            "id": ch.id,
            "created": 1700000000,
            "is_archived": ch.is_archived,
            "is_im": ch.is_im,
            "is_org_shared": False,
            "context_team_id": ws.team_id,
            "updated": 1700000000000,
        }
        if ch.is_im:
            info.update({"user": ch.user, "is_user_deleted": False, "priority": 0})
        else:
            info.update(
                {
                    "name": ch.name,
                    "name_normalized": ch.name,
                    "is_channel": True,
                    "is_group": False,
                    "is_mpim": False,
                    "is_private": ch.is_private,
                    "is_general": False,
                    "is_shared": False,
                    "is_ext_shared": False,
                    "is_member": ch.bot_is_member,
                    "topic": {"value": ""},
                    "purpose": {"value": ""},
                }
            )
        if _truthy(ctx.params.get("include_locale")):
            info["locale"] = ch.locale
        if _truthy(ctx.params.get("include_num_members")) and not ch.is_im:
            info["num_members"] = len(ch.members or ())
        return {"ok": True, "channel": info}

    def _conversations_open(self, ctx: _Ctx) -> JSON:
        """A 1:1 DM with ``users`` (one user id) opened or resumed, as Slack answers without
        ``return_im``; ``channel`` resumes an IM. Multi-person DMs are not faked."""
        ws = ctx.workspace
        assert ws is not None
        if not {"im:write", "mpim:write", "channels:manage", "groups:write"} & set(ws.scopes):
            raise SlackError("missing_scope", needed="im:write", provided=",".join(ws.scopes))
        raw_channel = ctx.params.get("channel")
        if raw_channel:
            ch = self.channels.get((ws.team_id, str(raw_channel)))
            if ch is None or not ch.is_im:
                raise SlackError("channel_not_found")
            return {"ok": True, "no_op": True, "already_open": True, "channel": {"id": ch.id}}
        ids = [u.strip() for u in str(ctx.params.get("users") or "").split(",") if u.strip()]
        if not ids:
            raise SlackError("users_list_not_supplied")
        if len(ids) > 1:
            raise SlackError("method_not_supported_for_channel_type")
        [user_id] = ids
        if user_id == ws.bot_user_id:
            raise SlackError("cannot_dm_bot")
        user = self.users.get((ws.team_id, user_id))
        known_users = any(k[0] == ws.team_id for k in self.users)
        if user_id[0] not in "UW" or (user is None and known_users):
            raise SlackError("user_not_found")
        if user is not None and user.deleted:
            raise SlackError("user_disabled")
        if user is not None and user.is_bot:
            raise SlackError("cannot_dm_bot")
        existing = next(
            (
                c
                for c in self.channels.values()
                if c.team_id == ws.team_id and c.is_im and c.user == user_id
            ),
            None,
        )
        ch = existing or self.add_channel(ws.team_id, "D" + user_id[1:], user=user_id)
        opened: JSON = {"ok": True, "channel": {"id": ch.id}}
        if existing is not None:
            opened.update({"no_op": True, "already_open": True})
        return opened

    def _files_info(self, ctx: _Ctx) -> JSON:
        ws = ctx.workspace
        assert ws is not None
        if "files:read" not in ws.scopes:
            raise SlackError("missing_scope", needed="files:read", provided=",".join(ws.scopes))
        found = self.files.get(str(ctx.params.get("file", "")))
        if found is None or found.team_id != ws.team_id:
            raise SlackError("file_not_found")
        if found.deleted:
            raise SlackError("file_deleted")
        return {
            "ok": True,
            "file": self.file_object(found.id),
            "comments": [],
            "response_metadata": {"next_cursor": ""},
        }

    async def _handle_file_download(self, request: web.Request) -> web.StreamResponse:
        """``url_private`` / ``url_private_download``: the bytes, for the owning workspace's
        bot token only (none or an unknown one: 401; another workspace's or revoked: 403)."""
        team, _, fid = request.match_info["key"].partition("-")
        found = self.files.get(fid)
        auth = request.headers.get("Authorization")
        token = auth[7:].strip() if auth and auth.lower().startswith("bearer ") else None
        ws = self._bot_tokens.get(token or "")
        record = FileDownload(request.path, fid or None, auth, 0, time.monotonic())
        self.downloads.append(record)

        def answer(status: int, **kwargs: Any) -> web.Response:
            record.status = status
            self._notify()
            return web.Response(status=status, **kwargs)

        failure = self._take_failure(FILE_DOWNLOAD)
        if failure is not None:
            retry = failure.retry_after
            headers = {} if retry is None else {"Retry-After": str(retry)}
            body = failure.raw_body or ""
            ctype = failure.content_type if failure.raw_body is not None else "text/plain"
            return answer(failure.status, text=body, content_type=ctype, headers=headers)
        if ws is None:
            return answer(401, text="not_authed")
        if token in self._revoked:
            return answer(403, text="token_revoked")
        if found is None or found.team_id != team:
            return answer(404, text="file_not_found")
        if ws.team_id != found.team_id:
            return answer(403, text="access_denied")
        if found.deleted:
            return answer(404, text="file_deleted")
        if found.redirect_to is not None:
            return answer(302, headers={"Location": found.redirect_to})
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": found.mimetype,
                "Content-Length": str(len(found.data)),
                "Content-Disposition": f"attachment; filename*=UTF-8''{quote(found.name)}",
            },
        )
        record.status = 200
        await response.prepare(request)
        for start in range(0, len(found.data), _DOWNLOAD_CHUNK):
            await response.write(found.data[start : start + _DOWNLOAD_CHUNK])
        await response.write_eof()
        self._notify()
        return response

    def _apps_connections_open(self, ctx: _Ctx) -> JSON:
        assert ctx.app_id is not None
        ticket = uuid.uuid4().hex
        self._tickets[ticket] = ctx.app_id
        return {
            "ok": True,
            "url": f"ws://127.0.0.1:{self.port}/socket?ticket={ticket}&app_id={ctx.app_id}",
        }

    def _client_auth(self, ctx: _Ctx) -> None:
        client_id, secret = ctx.basic_auth or (
            ctx.params.get("client_id"),
            ctx.params.get("client_secret"),
        )
        if client_id != self.client_id:
            raise SlackError("invalid_client_id")
        if secret != self.client_secret:
            raise SlackError("bad_client_secret")

    def _oauth_v2_access(self, ctx: _Ctx) -> JSON:
        self._client_auth(ctx)
        code = ctx.params.get("code")
        entry = self._oauth_codes.get(str(code)) if code else None
        if entry is None:
            raise SlackError("invalid_code")
        if entry.used:
            raise SlackError("code_already_used")
        if entry.redirect_uri is not None and ctx.params.get("redirect_uri") != entry.redirect_uri:
            raise SlackError("bad_redirect_uri")
        entry.used = True
        ws = self.add_workspace(
            entry.team_id,
            bot_token=entry.bot_token,
            bot_user_id=entry.bot_user_id,
            bot_id=entry.bot_id,
            app_id=entry.app_id,
            name=entry.team_name,
            enterprise_id=entry.enterprise_id,
            scopes=entry.scopes,
        )
        authed_user: JSON = {"id": entry.authed_user_id}
        if entry.user_token:
            self._user_tokens[entry.user_token] = (ws, entry.authed_user_id)
            authed_user.update(
                {
                    "scope": ",".join(entry.user_scopes),
                    "access_token": entry.user_token,
                    "token_type": "user",
                }
            )
        return {
            "ok": True,
            "app_id": entry.app_id,
            "authed_user": authed_user,
            "scope": ",".join(entry.scopes),
            "token_type": "bot",
            "access_token": entry.bot_token,
            "bot_user_id": entry.bot_user_id,
            "team": {"id": entry.team_id, "name": entry.team_name},
            "enterprise": (
                {"id": entry.enterprise_id, "name": "Enterprise"} if entry.enterprise_id else None
            ),
            "is_enterprise_install": False,
        }

    def _apps_uninstall(self, ctx: _Ctx) -> JSON:
        self._client_auth(ctx)
        if ctx.token is None:
            raise SlackError("not_authed")
        if ctx.token in self._revoked:
            raise SlackError("token_revoked")
        if ctx.workspace is None:
            raise SlackError("invalid_auth")
        self.uninstall(ctx.workspace.team_id)
        return {"ok": True}

    # -- response_url --

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if rid not in self._response_urls:
            return web.Response(status=404, text="no_such_url")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400, text="invalid_payload")
        self.responses.append(ResponseUrlPost(url=str(request.url), body=body, at=time.monotonic()))
        self._notify()
        return web.json_response({"ok": True})

    # -- Socket Mode --

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        app_id = self._tickets.get(request.query.get("ticket", ""))
        if app_id is None:
            return web.Response(status=401, text="invalid ticket")
        ws = web.WebSocketResponse(autoping=True, timeout=2.0)  # autoping: answer sdk pings
        await ws.prepare(request)
        conn = SocketConnection(
            id=next(self._conn_ids),
            app_id=app_id,
            ws=ws,
            request=request,
            opened_at=time.monotonic(),
        )
        self.sockets.append(conn)
        self.socket_connections += 1
        open_for_app = [c for c in self.sockets if c.open and c.app_id == app_id]
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(open_for_app),
                "debug_info": {
                    "host": f"applink-fake-{conn.id}",
                    "build_number": 1,
                    "approximate_connection_time": 18060,
                },
                "connection_info": {"app_id": app_id},
            }
        )
        self._notify()
        if len(open_for_app) > MAX_SOCKET_CONNECTIONS:
            await ws.send_json(
                {
                    "type": "disconnect",
                    "reason": "too_many_websockets",
                    "debug_info": {"host": f"applink-fake-{conn.id}"},
                }
            )
            await ws.close()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(msg.data)
                except ValueError:
                    continue
                if not isinstance(data, dict):
                    continue
                conn.received.append(data)
                envelope_id = data.get("envelope_id")
                if isinstance(envelope_id, str):
                    sent = next((s for s in self.socket_sent if s.envelope_id == envelope_id), None)
                    self.socket_acks.append(
                        SocketAck(
                            envelope_id=envelope_id,
                            payload=data.get("payload"),
                            connection_id=conn.id,
                            at=time.monotonic(),
                            sent_at=None if sent is None else sent.at,
                        )
                    )
                self._notify()
        finally:
            conn.closed_at = time.monotonic()
            self._notify()
        return ws

    def socket_open(self) -> list[SocketConnection]:
        """Currently open Socket Mode connections."""
        return [c for c in self.sockets if c.open]

    def _pick(self, connection: SocketConnection | int | None) -> SocketConnection:
        if isinstance(connection, SocketConnection):
            return connection
        open_conns = self.socket_open()
        if connection is not None:
            for c in open_conns:
                if c.id == connection:
                    return c
            raise LookupError(f"no open socket connection {connection}")
        if not open_conns:
            raise LookupError("no open socket connection")
        return open_conns[next(self._rr) % len(open_conns)]

    async def wait_for_socket(self, within: float = 5.0) -> SocketConnection:
        await self.wait_for(lambda: bool(self.socket_open()), within=within)
        return self.socket_open()[-1]

    async def socket_send_event(
        self,
        payload_type: str = "events_api",
        payload: JSON | None = None,
        *,
        connection: SocketConnection | int | None = None,
        retry_attempt: int = 0,
        retry_reason: str = "",
        accepts_response_payload: bool | None = None,
        envelope_id: str | None = None,
        within: float = 5.0,
    ) -> str:
        """Send an envelope to a connected client (round robin over open connections, like
        Slack's "any of them"; waits up to ``within`` for one) and return its envelope_id."""
        if payload_type not in ("events_api", "interactive", "slash_commands"):
            raise ValueError(f"unknown envelope type {payload_type}")
        payload = payload or {}
        if connection is None:
            await self.wait_for(lambda: bool(self.socket_open()), within=within)
        conn = self._pick(connection)
        if accepts_response_payload is None:
            accepts_response_payload = payload_type == "slash_commands" or (
                payload_type == "interactive"
                and payload.get("type") in ("view_submission", "block_suggestion")
            )
        envelope: JSON = {
            "envelope_id": envelope_id or str(uuid.uuid4()),
            "payload": payload,
            "type": payload_type,
            "accepts_response_payload": accepts_response_payload,
        }
        if payload_type == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        self.socket_sent.append(
            SentEnvelope(
                envelope_id=envelope["envelope_id"],
                type=payload_type,
                payload=payload,
                connection_id=conn.id,
                at=time.monotonic(),
            )
        )
        await conn.ws.send_json(envelope)
        self._notify()
        return str(envelope["envelope_id"])

    async def wait_for_ack(self, envelope_id: str, within: float = 3.0) -> SocketAck:
        def found() -> SocketAck | None:
            return next((a for a in self.socket_acks if a.envelope_id == envelope_id), None)

        ack = await self.wait_for(found, within=within)
        assert ack is not None
        return ack

    async def socket_disconnect(
        self,
        reason: str = "refresh_requested",
        *,
        connection: SocketConnection | int | None = None,
        close_after: float = 5.0,
    ) -> SocketConnection:
        """Send ``{"type": "disconnect", "reason": ...}``; like Slack, close the socket after
        the client closed it or ``close_after`` seconds, whichever is first."""
        conn = self._pick(connection)
        await conn.ws.send_json(
            {
                "type": "disconnect",
                "reason": reason,
                "debug_info": {"host": f"applink-fake-{conn.id}"},
            }
        )
        self._notify()
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda: conn.closed_at is not None, within=close_after)
        if not conn.ws.closed:
            await conn.ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        return conn

    async def socket_drop(
        self, connection: SocketConnection | int | None = None
    ) -> SocketConnection:
        """Cut the TCP connection without a close frame."""
        conn = self._pick(connection)
        transport = conn.request.transport
        if transport is not None:
            transport.abort()
        await self.wait_for(lambda: conn.closed_at is not None, within=5.0)
        return conn


# --- Events API: signing and building requests ----------------------------------------------


def new_event_id() -> str:
    return _slack_id("Ev0", 9)


def event_callback(
    team_id: str,
    event: JSON,
    *,
    event_id: str | None = None,
    api_app_id: str = "A0APP",
    authorizations: list[JSON] | None = None,
    bot_user_id: str = "U0BOT",
    event_time: int | None = None,
    enterprise_id: str | None = None,
    token: str = VERIFICATION_TOKEN,
) -> JSON:
    """The Events API envelope around ``event``. Message-like events without ``team`` get
    ``team_id`` as their team, as Slack's do."""
    if (
        event.get("type") in ("message", "app_mention")
        and "team" not in event
        and event.get("subtype") not in ("message_changed", "message_deleted")
    ):
        event = {**event, "team": team_id}
    return {
        "token": token,
        "team_id": team_id,
        "context_team_id": team_id,
        "context_enterprise_id": enterprise_id,
        "api_app_id": api_app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_event_id(),
        "event_time": int(time.time()) if event_time is None else event_time,
        "authorizations": authorizations
        if authorizations is not None
        else [
            {
                "enterprise_id": enterprise_id,
                "team_id": team_id,
                "user_id": bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
        "event_context": "4-"
        + base64.urlsafe_b64encode(json.dumps({"tid": team_id, "aid": api_app_id}).encode())
        .decode()
        .rstrip("="),
    }


def url_verification(challenge: str, token: str = VERIFICATION_TOKEN) -> JSON:
    return {"token": token, "challenge": challenge, "type": "url_verification"}


def _rich_text(text: str) -> list[JSON]:
    return [
        {
            "type": "rich_text",
            "block_id": _slack_id("", 5).lower(),
            "elements": [
                {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
            ],
        }
    ]


def _typed_by_user(
    event_type: str,
    user: str,
    text: str,
    channel: str,
    ts: str | None,
    thread_ts: str | None,
    team: str | None,
) -> JSON:
    """What a user's post looks like in a ``message`` or an ``app_mention`` event."""
    ts = ts or new_ts()
    event: JSON = {
        "client_msg_id": str(uuid.uuid4()),
        "type": event_type,
        "text": text,
        "user": user,
        "ts": ts,
        "blocks": _rich_text(text),
        "channel": channel,
        "event_ts": ts,
    }
    if team is not None:
        event["team"] = team
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def _user_message(
    user: str,
    text: str,
    channel: str,
    ts: str | None,
    thread_ts: str | None,
    channel_type: str,
    parent_user_id: str | None,
    team: str | None,
) -> JSON:
    event = _typed_by_user("message", user, text, channel, ts, thread_ts, team)
    event["channel_type"] = channel_type
    if thread_ts:
        event["parent_user_id"] = parent_user_id or user
    return event


def dm_message(
    user: str,
    text: str,
    channel: str = "D0DM",
    ts: str | None = None,
    *,
    thread_ts: str | None = None,
    team: str | None = None,
) -> JSON:
    """message.im: a user's direct message to the bot (``channel_type: "im"``)."""
    return _user_message(user, text, channel, ts, thread_ts, "im", None, team)


def channel_message(
    user: str,
    text: str,
    channel: str = "C0CHAN",
    ts: str | None = None,
    *,
    thread_ts: str | None = None,
    parent_user_id: str | None = None,
    channel_type: str = "channel",
    team: str | None = None,
) -> JSON:
    """message.channels (``channel_type="group"``: message.groups), possibly a thread reply."""
    return _user_message(user, text, channel, ts, thread_ts, channel_type, parent_user_id, team)


def app_mention(
    user: str,
    text: str,
    channel: str = "C0CHAN",
    ts: str | None = None,
    *,
    thread_ts: str | None = None,
    bot_user_id: str | None = None,
    team: str | None = None,
) -> JSON:
    """app_mention. ``bot_user_id`` prefixes ``<@BOT> `` to the text unless already there."""
    if bot_user_id and f"<@{bot_user_id}>" not in text:
        text = f"<@{bot_user_id}> {text}"
    return _typed_by_user("app_mention", user, text, channel, ts, thread_ts, team)


def bot_message(
    text: str,
    channel: str = "C0CHAN",
    ts: str | None = None,
    *,
    bot_id: str = "B0OTHER",
    user: str | None = None,
    app_id: str | None = None,
    channel_type: str = "channel",
    legacy_subtype: bool = True,
    thread_ts: str | None = None,
) -> JSON:
    """A bot's message. ``legacy_subtype=True``: ``subtype: "bot_message"`` (integrations);
    False: how an app's own chat.postMessage echoes back — no subtype, but ``bot_id``, ``user``
    (the bot user) and ``app_id`` set."""
    ts = ts or new_ts()
    event: JSON = {
        "type": "message",
        "text": text,
        "ts": ts,
        "bot_id": bot_id,
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
    }
    if legacy_subtype:
        event.update({"subtype": "bot_message", "username": "otherbot"})
    if user is not None:
        event["user"] = user
    if app_id is not None:
        event["app_id"] = app_id
        event["bot_profile"] = {"id": bot_id, "app_id": app_id, "name": "bot", "deleted": False}
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def message_changed(
    channel: str,
    message: JSON,
    previous_message: JSON | None = None,
    *,
    channel_type: str = "channel",
    ts: str | None = None,
) -> JSON:
    """``subtype: "message_changed"``; ``message`` is the new version (give it user/text/ts)."""
    ts = ts or new_ts()
    new = {"type": "message", **message}
    new.setdefault("edited", {"user": new.get("user"), "ts": ts})
    before = {k: v for k, v in message.items() if k in ("user", "ts", "team")}
    return _hidden_message(
        "message_changed",
        channel,
        channel_type,
        ts,
        message=new,
        previous_message=previous_message or {"type": "message", **before, "text": ""},
    )


def message_deleted(
    channel: str,
    deleted_ts: str,
    previous_message: JSON | None = None,
    *,
    channel_type: str = "channel",
    ts: str | None = None,
) -> JSON:
    return _hidden_message(
        "message_deleted",
        channel,
        channel_type,
        ts or new_ts(),
        deleted_ts=deleted_ts,
        previous_message=previous_message or {"type": "message", "ts": deleted_ts},
    )


def _hidden_message(subtype: str, channel: str, channel_type: str, ts: str, **fields: Any) -> JSON:
    """A ``hidden`` message event: a change to a message rather than a message."""
    return {
        "type": "message",
        "subtype": subtype,
        "hidden": True,
        "channel": channel,
        "ts": ts,
        "event_ts": ts,
        "channel_type": channel_type,
        **fields,
    }


def member_joined_channel(
    user: str,
    channel: str = "C0CHAN",
    *,
    team: str = "T0TEAM",
    inviter: str | None = None,
    channel_type: str = "C",
) -> JSON:
    event: JSON = {
        "type": "member_joined_channel",
        "user": user,
        "channel": channel,
        "channel_type": channel_type,
        "team": team,
        "event_ts": new_ts(),
    }
    if inviter is not None:
        event["inviter"] = inviter
    return event


def channel_join_message(user: str, channel: str = "C0CHAN", ts: str | None = None) -> JSON:
    """The ``message``/``channel_join`` subtype that accompanies member_joined_channel."""
    ts = ts or new_ts()
    return {
        "type": "message",
        "subtype": "channel_join",
        "user": user,
        "text": f"<@{user}> has joined the channel",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "channel_type": "channel",
    }


def slack_file(
    name: str = "report.pdf",
    *,
    mimetype: str = "application/pdf",
    size: int = 1024,
    file_id: str | None = None,
    user: str = "U0USER",
    team_id: str = "T0TEAM",
    subtype: str | None = None,
    url_private: str | None = None,
    url_private_download: str | None = None,
) -> JSON:
    """A file object as in ``files`` of a file_share message (``subtype="slack_audio"``: a
    voice clip recorded in Slack). Its URLs point at Slack unless given: use
    :meth:`FakeSlack.add_file` for a file the fake serves."""
    fid = file_id or _slack_id("F0", 9)
    ext = name.rsplit(".", 1)[-1] if "." in name else "binary"
    url = url_private or f"https://files.slack.com/files-pri/{team_id}-{fid}/{name}"
    obj: JSON = {
        "id": fid,
        "created": int(time.time()),
        "timestamp": int(time.time()),
        "name": name,
        "title": name,
        "mimetype": mimetype,
        "filetype": ext,
        "pretty_type": ext.upper(),
        "user": user,
        "user_team": team_id,
        "editable": False,
        "size": size,
        "mode": "hosted",
        "is_external": False,
        "external_type": "",
        "is_public": False,
        "public_url_shared": False,
        "display_as_bot": False,
        "username": "",
        "url_private": url,
        "url_private_download": url_private_download or url + "?download=1",
        "permalink": f"https://example.slack.com/files/{user}/{fid}/{name}",
        "file_access": "visible",
    }
    if subtype is not None:
        obj["subtype"] = subtype
    return obj


def file_share(
    user: str,
    text: str,
    files: Sequence[JSON],
    channel: str = "D0DM",
    ts: str | None = None,
    *,
    channel_type: str = "im",
    thread_ts: str | None = None,
) -> JSON:
    """``subtype: "file_share"`` message carrying ``files`` (see :func:`slack_file`)."""
    ts = ts or new_ts()
    event: JSON = {
        "type": "message",
        "subtype": "file_share",
        "text": text,
        "user": user,
        "files": list(files),
        "upload": False,
        "display_as_bot": False,
        "ts": ts,
        "blocks": _rich_text(text) if text else [],
        "channel": channel,
        "event_ts": ts,
        "channel_type": channel_type,
        "client_msg_id": str(uuid.uuid4()),
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return event


def app_uninstalled() -> JSON:
    return {"type": "app_uninstalled", "event_ts": new_ts()}


def tokens_revoked(bot: Sequence[str] = ("U0BOT",), oauth: Sequence[str] = ()) -> JSON:
    """tokens_revoked carries the *user ids* whose tokens were revoked, not the tokens."""
    tokens: JSON = {}
    if oauth:
        tokens["oauth"] = list(oauth)
    if bot:
        tokens["bot"] = list(bot)
    return {"type": "tokens_revoked", "tokens": tokens, "event_ts": new_ts()}


def block_actions_payload(
    user: str,
    channel: str,
    message_ts: str,
    action_id: str,
    value: str,
    *,
    response_url: str | None = None,
    team_id: str = "T0TEAM",
    api_app_id: str = "A0APP",
    block_id: str = "actions",
    button_text: str = "Button",
    message: JSON | None = None,
    thread_ts: str | None = None,
    is_ephemeral: bool = False,
    token: str = VERIFICATION_TOKEN,
) -> JSON:
    """A ``block_actions`` interaction (a button click) on the message at ``message_ts``.
    Over HTTP send it as :func:`interactive_body`; over Socket Mode as the payload of an
    ``interactive`` envelope."""
    container: JSON = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel,
        "is_ephemeral": is_ephemeral,
    }
    if thread_ts:
        container["thread_ts"] = thread_ts
    payload: JSON = {
        "type": "block_actions",
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team_id},
        "api_app_id": api_app_id,
        "token": token,
        "container": container,
        "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
        "team": {"id": team_id, "domain": team_id.lower()},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": channel.lower()},
        "state": {"values": {}},
        "response_url": response_url
        or f"https://hooks.slack.com/actions/{team_id}/1/{secrets.token_hex(12)}",
        "actions": [
            {
                "action_id": action_id,
                "block_id": block_id,
                "text": {"type": "plain_text", "text": button_text, "emoji": True},
                "value": value,
                "type": "button",
                "action_ts": new_ts(),
            }
        ],
    }
    if not is_ephemeral:
        payload["message"] = message or {
            "type": "message",
            "user": "U0BOT",
            "ts": message_ts,
            "bot_id": "B0BOT",
            "text": "",
            "team": team_id,
        }
    return payload


def interactive_body(payload: JSON) -> bytes:
    """An interaction as Slack POSTs it: form-encoded ``payload=<json>``."""
    return urlencode({"payload": json.dumps(payload)}).encode()


def slash_command(
    command: str,
    text: str = "",
    *,
    user_id: str = "U0USER",
    channel_id: str = "C0CHAN",
    team_id: str = "T0TEAM",
    response_url: str | None = None,
    api_app_id: str = "A0APP",
    channel_name: str = "general",
    user_name: str = "user",
    token: str = VERIFICATION_TOKEN,
) -> dict[str, str]:
    """Slash-command fields (a Socket Mode ``slash_commands`` payload as is; over HTTP send
    :func:`form_body` of it)."""
    return {
        "token": token,
        "team_id": team_id,
        "team_domain": team_id.lower(),
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": api_app_id,
        "is_enterprise_install": "false",
        "response_url": response_url
        or f"https://hooks.slack.com/commands/{team_id}/1/{secrets.token_hex(12)}",
        "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}",
    }


def form_body(fields: Mapping[str, str]) -> bytes:
    return urlencode(dict(fields)).encode()


def ssl_check_body(token: str = VERIFICATION_TOKEN) -> bytes:
    """The periodic ``ssl_check=1`` POST Slack sends to slash-command URLs."""
    return form_body({"ssl_check": "1", "token": token})


class PostResult(NamedTuple):
    status: int  # 0: no answer within ``within`` (Slack would count an http_timeout)
    body: str
    elapsed: float


async def post_event(
    url: str,
    body: bytes | str | Mapping[str, Any],
    signing_secret: str,
    *,
    retry_num: int | None = None,
    retry_reason: str | None = None,
    timestamp: int | None = None,
    content_type: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    within: float = 10.0,
) -> PostResult:
    """POST a signed request as Slack does and return ``(status, body, elapsed)``.

    A dict body is encoded the way Slack sends it: an interaction payload (``type`` such as
    ``block_actions``) as form ``payload=<json>``, slash-command fields (``command``) as a form,
    anything else (event_callback, url_verification) as JSON. ``content_type`` defaults to JSON
    for ``{...}`` bodies, form otherwise. ``retry_num`` adds ``X-Slack-Retry-Num`` and
    ``X-Slack-Retry-Reason`` (default ``http_timeout``)."""
    if isinstance(body, Mapping):
        if body.get("type") in INTERACTION_TYPES:
            raw = interactive_body(dict(body))
        elif "command" in body and "type" not in body:
            raw = form_body({k: str(v) for k, v in body.items()})
        else:
            raw = json.dumps(body).encode()
    else:
        raw = body.encode() if isinstance(body, str) else body
    if content_type is None:
        content_type = (
            "application/json"
            if raw.lstrip().startswith(b"{")
            else "application/x-www-form-urlencoded"
        )
    headers = {
        "Content-Type": content_type,
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        **sign(signing_secret, raw, timestamp),
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason or "http_timeout"
    headers.update(extra_headers or {})
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with aiohttp.ClientSession(trust_env=False) as session:
        try:
            async with session.post(
                url, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=within)
            ) as resp:
                text = await resp.text()
                return PostResult(resp.status, text, loop.time() - start)
        except TimeoutError:
            return PostResult(0, "", loop.time() - start)


async def deliver_like_slack(
    url: str,
    body: bytes | str | Mapping[str, Any],
    signing_secret: str,
    *,
    retries: int = 3,
    ack_within: float = 3.0,
    delays: Sequence[float] = (0.0, 0.0, 0.0),
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> list[PostResult]:
    """Deliver an event the way Slack does: a non-2xx answer or none within ``ack_within``
    seconds is retried (``retries`` times, after ``delays`` — Slack waits ≈0 s, 1 min, 5 min;
    the default here does not wait) with X-Slack-Retry-Num/-Reason. Returns every attempt."""
    attempts: list[PostResult] = []
    reason: str | None = None
    for attempt in range(retries + 1):
        if attempt:
            await sleep(delays[min(attempt - 1, len(delays) - 1)])
        result = await post_event(
            url,
            body,
            signing_secret,
            retry_num=attempt or None,
            retry_reason=reason,
            within=ack_within,
        )
        attempts.append(result)
        if 200 <= result.status < 300 and result.elapsed <= ack_within:
            break
        reason = (
            "http_timeout"
            if result.status == 0 or result.elapsed > ack_within
            else ("too_many_requests" if result.status == 429 else "http_error")
        )
    return attempts


__all__ = [
    "FILE_DOWNLOAD",
    "JSON_METHODS",
    "VERIFICATION_TOKEN",
    "Call",
    "Channel",
    "Ephemeral",
    "FakeSlack",
    "FileDownload",
    "PostResult",
    "PostedMessage",
    "ResponseUrlPost",
    "SentEnvelope",
    "SharedFile",
    "SlackError",
    "SocketAck",
    "SocketConnection",
    "User",
    "Workspace",
    "app_mention",
    "app_uninstalled",
    "block_actions_payload",
    "bot_message",
    "channel_join_message",
    "channel_message",
    "deliver_like_slack",
    "dm_message",
    "event_callback",
    "file_share",
    "form_body",
    "interactive_body",
    "member_joined_channel",
    "message_changed",
    "message_deleted",
    "new_event_id",
    "new_ts",
    "post_event",
    "sign",
    "slack_file",
    "slash_command",
    "ssl_check_body",
    "tokens_revoked",
    "url_verification",
    "validate_blocks",
]
