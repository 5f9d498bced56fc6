"""The fake Slack checked against the real client libraries: slack-sdk's AsyncWebClient, retry
handlers, SignatureVerifier and aiohttp SocketModeClient, and a slack-bolt AsyncApp receiving
the signed requests the builders make. Waits are on conditions, never on fixed sleeps."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import (
    FILE_DOWNLOAD,
    FakeSlack,
    app_mention,
    block_actions_payload,
    bot_message,
    channel_message,
    deliver_like_slack,
    dm_message,
    event_callback,
    file_share,
    form_body,
    interactive_body,
    message_changed,
    post_event,
    sign,
    slack_file,
    slash_command,
    ssl_check_body,
    url_verification,
    validate_blocks,
)
from tests.support.net import serving

TOKEN_A = "xoxb-1111-2222-aaaaaaaaaaaaaaaaaaaaaaaa"
TOKEN_B = "xoxb-3333-4444-bbbbbbbbbbbbbbbbbbbbbbbb"
APP_TOKEN = "xapp-1-A0APP-5555-cccccccccccccccccccccccc"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
# slack-sdk's oauth_v2_access still passes aiohttp.BasicAuth, which aiohttp 3.14 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_workspace(
            "T0AAA", bot_token=TOKEN_A, bot_user_id="U0BOTA", app_id="A0APP", app_token=APP_TOKEN
        )
        fake.add_workspace("T0BBB", bot_token=TOKEN_B, bot_user_id="U0BOTB", app_id="A0APP")
        yield fake


def client(slack: FakeSlack, token: str = TOKEN_A, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=slack.api_url, **kwargs)


def button(text: str = "Yes", value: str = "yes", action_id: str = "answer") -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "value": value,
        "action_id": action_id,
    }


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


# --- Web API -----------------------------------------------------------------------------------


async def test_auth_test_per_workspace_token(slack: FakeSlack) -> None:
    a = await client(slack, TOKEN_A).auth_test()
    b = await client(slack, TOKEN_B).auth_test()
    assert (a["team_id"], a["user_id"], a["bot_id"]) == ("T0AAA", "U0BOTA", "B0BOTA")
    assert (b["team_id"], b["user_id"]) == ("T0BBB", "U0BOTB")
    assert a.status_code == 200

    with pytest.raises(SlackApiError) as bad:
        await client(slack, "xoxb-0-0-unknown").auth_test()
    assert bad.value.response.status_code == 200
    assert bad.value.response["error"] == "invalid_auth"

    slack.revoke_token(TOKEN_B)
    with pytest.raises(SlackApiError) as revoked:
        await client(slack, TOKEN_B).auth_test()
    assert revoked.value.response["error"] == "token_revoked"

    with pytest.raises(SlackApiError) as missing:
        await AsyncWebClient(base_url=slack.api_url).auth_test()
    assert missing.value.response["error"] == "not_authed"
    assert [c.token for c in slack.calls_to("auth.test")][:2] == [TOKEN_A, TOKEN_B]


async def test_wire_encoding_as_slack_sdk_sends_it(slack: FakeSlack) -> None:
    """Documents (and pins) how slack-sdk puts each method on the wire."""
    slack.add_user("T0AAA", "U0USER", real_name="Ada Lovelace")
    web_client = client(slack)
    await web_client.auth_test()
    await web_client.chat_postMessage(channel="C0CHAN", text="plain text only")
    await web_client.users_info(user="U0USER", include_locale=True)
    await web_client.conversations_info(channel="C0CHAN")
    await AsyncWebClient(base_url=slack.api_url).apps_connections_open(app_token=APP_TOKEN)
    slack.add_oauth_code("code-1", "T0NEW")
    await AsyncWebClient(base_url=slack.api_url).oauth_v2_access(
        client_id=slack.client_id, client_secret=slack.client_secret, code="code-1"
    )
    await web_client.api_call("chat.postMessage", data={"channel": "C0CHAN", "text": "form"})

    seen = [(c.method, c.http_method, c.encoding) for c in slack.calls]
    assert seen == [
        ("auth.test", "POST", "none"),
        ("chat.postMessage", "POST", "json"),  # JSON even without blocks
        ("users.info", "GET", "query"),  # include_locale=True travels as "1"
        ("conversations.info", "GET", "query"),
        ("apps.connections.open", "POST", "none"),  # the xapp- token in the header only
        ("oauth.v2.access", "POST", "form"),  # client id/secret as HTTP Basic auth
        ("chat.postMessage", "POST", "form"),
    ]
    assert slack.calls[2].params == {"user": "U0USER", "include_locale": "1"}
    assert slack.calls[0].headers["Authorization"] == f"Bearer {TOKEN_A}"
    assert slack.calls[4].headers["Authorization"] == f"Bearer {APP_TOKEN}"
    assert slack.calls[5].headers["Authorization"].startswith("Basic ")
    assert slack.calls[1].headers["Content-Type"].startswith("application/json")

    # Slack reads no token from a JSON body, and no parameters from one on form-only methods
    async with aiohttp.ClientSession() as session:
        raw = await session.post(f"{slack.api_url}auth.test", json={"token": TOKEN_A})
        assert (await raw.json())["error"] == "not_authed"
    with pytest.raises(SlackApiError):
        await web_client.api_call("users.info", json={"user": "U0USER"})
    assert slack.calls[-1].body_ignored


async def test_post_message_text_blocks_threads(slack: FakeSlack) -> None:
    web_client = client(slack)
    first = await web_client.chat_postMessage(channel="D0DM", text="hello")
    blocks = [section("*bold*"), {"type": "actions", "elements": [button()]}]
    second = await web_client.chat_postMessage(
        channel="D0DM", text="fallback", blocks=blocks, thread_ts=first["ts"]
    )
    assert first["ok"] and first["channel"] == "D0DM"
    assert float(second["ts"]) > float(first["ts"])
    assert second["message"]["thread_ts"] == first["ts"]
    assert second["message"]["blocks"] == blocks
    assert second["message"]["bot_id"] == "B0BOTA"
    await client(slack, TOKEN_B).chat_postMessage(channel="C0OTHER", text="other team")

    posted = slack.posted(channel="D0DM")
    assert [(m.text, m.thread_ts, m.token) for m in posted] == [
        ("hello", None, TOKEN_A),
        ("fallback", first["ts"], TOKEN_A),
    ]
    assert posted[1].blocks == blocks
    assert [m.team_id for m in slack.posted()] == ["T0AAA", "T0AAA", "T0BBB"]
    assert [m.text for m in slack.posted(team_id="T0BBB")] == ["other team"]

    # a user id as channel opens the IM, as Slack does
    dm = await web_client.chat_postMessage(channel="U0SOMEONE", text="hi")
    assert dm["channel"] == "D0SOMEONE"


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([section("x")] * 51, "/blocks"),
        ([section("x" * 3001)], "/blocks/0/text/text"),
        (
            [{"type": "actions", "elements": [button(action_id=f"a{i}") for i in range(26)]}],
            "/blocks/0/elements",
        ),
        (
            [{"type": "actions", "elements": [button(text="x" * 76)]}],
            "/blocks/0/elements/0/text/text",
        ),
        (
            [{"type": "actions", "elements": [button(value="v" * 2001)]}],
            "/blocks/0/elements/0/value",
        ),
        (
            [{"type": "actions", "elements": [button(action_id="a" * 256)]}],
            "/blocks/0/elements/0/action_id",
        ),
        ([{"type": "sektion", "text": {"type": "mrkdwn", "text": "x"}}], "/blocks/0/type"),
        ([section("")], "/blocks/0/text/text"),
    ],
)
async def test_invalid_blocks_raise(slack: FakeSlack, blocks: list[Any], pointer: str) -> None:
    with pytest.raises(SlackApiError) as err:
        await client(slack).chat_postMessage(channel="C0CHAN", text="t", blocks=blocks)
    assert err.value.response["error"] == "invalid_blocks"
    assert any(f"[json-pointer:{pointer}]" in e for e in err.value.response["errors"])
    assert slack.posted() == []


async def test_blocks_at_the_limits_are_accepted(slack: FakeSlack) -> None:
    at_limits = [section("x" * 3000)] * 48 + [
        {
            "type": "actions",
            "elements": [button(action_id=f"b{i}") for i in range(24)]
            + [button(text="t" * 75, value="v" * 2000, action_id="a" * 255)],
        },
        {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}},
    ]
    assert validate_blocks(at_limits) == []
    answer = await client(slack).chat_postMessage(channel="C0CHAN", text="t", blocks=at_limits)
    assert answer["ok"]


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_text_errors_and_channels(slack: FakeSlack) -> None:
    web_client = client(slack)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"channel": "C0CHAN"}, "no_text"),
        ({"channel": "C0CHAN", "text": ""}, "no_text"),
        ({"channel": "C0CHAN", "text": "x" * 40001}, "msg_too_long"),
        ({"channel": "C0CHAN", "text": "t", "blocks": "[not json"}, "invalid_blocks_format"),
    ]
    for kwargs, error in cases:
        with pytest.raises(SlackApiError) as err:
            await web_client.chat_postMessage(**kwargs)
        assert err.value.response["error"] == error
    assert (await web_client.chat_postMessage(channel="C0CHAN", text="x" * 40000))["ok"]

    slack.add_channel("T0AAA", "C0GENERAL", name="general")
    slack.add_channel("T0AAA", "C0ELSE", name="else", bot_is_member=False)
    slack.add_channel("T0AAA", "C0OLD", name="old", is_archived=True)
    assert (await web_client.chat_postMessage(channel="#general", text="t"))[
        "channel"
    ] == "C0GENERAL"
    for channel, error in [
        ("C0NOPE", "channel_not_found"),
        ("C0ELSE", "not_in_channel"),
        ("C0OLD", "is_archived"),
    ]:
        with pytest.raises(SlackApiError) as err:
            await web_client.chat_postMessage(channel=channel, text="t")
        assert err.value.response["error"] == error
    info = await web_client.conversations_info(channel="C0GENERAL", include_locale=True)
    assert info["channel"]["name"] == "general" and info["channel"]["locale"] == "en-US"
    with pytest.raises(SlackApiError) as err:
        await web_client.conversations_info(channel="C0NOPE")
    assert err.value.response["error"] == "channel_not_found"


async def test_update_ephemeral_delete(slack: FakeSlack) -> None:
    web_client = client(slack)
    posted = await web_client.chat_postMessage(channel="C0CHAN", text="v1", blocks=[section("v1")])
    updated = await web_client.chat_update(
        channel="C0CHAN", ts=posted["ts"], text="v2", blocks=[section("v2")]
    )
    assert updated["ts"] == posted["ts"] and updated["text"] == "v2"
    message = slack.message("C0CHAN", posted["ts"])
    assert message is not None
    assert (message.text, message.blocks) == ("v2", [section("v2")])
    assert [v[0] for v in message.versions] == ["v1", "v2"]
    with pytest.raises(SlackApiError) as err:
        await web_client.chat_update(channel="C0CHAN", ts="1.000001", text="x")
    assert err.value.response["error"] == "message_not_found"

    eph = await web_client.chat_postEphemeral(channel="C0CHAN", user="U0USER", text="psst")
    assert eph["message_ts"]
    assert [(e.user, e.text) for e in slack.ephemerals] == [("U0USER", "psst")]

    await web_client.chat_delete(channel="C0CHAN", ts=posted["ts"])
    assert slack.posted() == []


async def test_users_info(slack: FakeSlack) -> None:
    profile = {"real_name": "Ada Lovelace", "display_name": "ada"}
    slack.add_user("T0AAA", "U0ADA", **profile, tz="Europe/London", locale="en-GB")
    web_client = client(slack)
    with_locale = await web_client.users_info(user="U0ADA", include_locale=True)
    user = with_locale["user"]
    assert user["profile"]["real_name"] == "Ada Lovelace"
    assert user["profile"]["display_name"] == "ada"
    assert (user["tz"], user["locale"]) == ("Europe/London", "en-GB")
    assert "locale" not in (await web_client.users_info(user="U0ADA"))["user"]
    with pytest.raises(SlackApiError) as err:
        await client(slack, TOKEN_B).users_info(user="U0ADA")  # other workspace
    assert err.value.response["error"] == "user_not_found"
    # users.info does not read JSON bodies (only form/query), like Slack
    with pytest.raises(SlackApiError) as err:
        await web_client.api_call("users.info", json={"user": "U0ADA"})
    assert err.value.response["error"] == "user_not_found"


async def test_oauth_v2_access(slack: FakeSlack) -> None:
    slack.add_oauth_code(
        "the-code",
        "T0NEW",
        team_name="New Co",
        bot_user_id="U0NEWBOT",
        redirect_uri="https://bridge.example/slack/oauth_redirect",
        user_scopes=["identify"],
    )
    anonymous = AsyncWebClient(base_url=slack.api_url)
    with pytest.raises(SlackApiError) as err:
        await anonymous.oauth_v2_access(
            client_id=slack.client_id, client_secret="wrong", code="the-code"
        )
    assert err.value.response["error"] == "bad_client_secret"
    with pytest.raises(SlackApiError) as err:
        await anonymous.oauth_v2_access(
            client_id=slack.client_id,
            client_secret=slack.client_secret,
            code="the-code",
            redirect_uri="https://elsewhere.example/",
        )
    assert err.value.response["error"] == "bad_redirect_uri"

    answer = await anonymous.oauth_v2_access(
        client_id=slack.client_id,
        client_secret=slack.client_secret,
        code="the-code",
        redirect_uri="https://bridge.example/slack/oauth_redirect",
    )
    assert answer["access_token"].startswith("xoxb-")
    assert answer["token_type"] == "bot"
    assert answer["team"] == {"id": "T0NEW", "name": "New Co"}
    assert answer["bot_user_id"] == "U0NEWBOT" and answer["app_id"] == "A0APP"
    assert answer["authed_user"]["id"] == "U0INSTALLER"
    assert answer["authed_user"]["access_token"].startswith("xoxp-")
    assert "chat:write" in answer["scope"].split(",")
    assert answer["enterprise"] is None and answer["is_enterprise_install"] is False

    auth = await client(slack, answer["access_token"]).auth_test()
    assert (auth["team_id"], auth["user_id"]) == ("T0NEW", "U0NEWBOT")
    with pytest.raises(SlackApiError) as err:
        await anonymous.oauth_v2_access(
            client_id=slack.client_id, client_secret=slack.client_secret, code="the-code"
        )
    assert err.value.response["error"] == "code_already_used"

    await client(slack, answer["access_token"]).apps_uninstall(
        client_id=slack.client_id, client_secret=slack.client_secret
    )
    with pytest.raises(SlackApiError) as err:
        await client(slack, answer["access_token"]).auth_test()
    assert err.value.response["error"] == "token_revoked"


async def test_apps_connections_open_needs_an_app_token(slack: FakeSlack) -> None:
    opened = await AsyncWebClient(base_url=slack.api_url).apps_connections_open(app_token=APP_TOKEN)
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.port}/socket?ticket=")
    for token, error in [
        (TOKEN_A, "not_allowed_token_type"),
        ("xapp-1-A0X-1-unknown", "invalid_auth"),
    ]:
        with pytest.raises(SlackApiError) as err:
            await AsyncWebClient(base_url=slack.api_url).apps_connections_open(app_token=token)
        assert err.value.response["error"] == error


# --- failures, rate limits ---------------------------------------------------------------------


async def test_429_raises_with_retry_after(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client(slack).chat_postMessage(channel="C0CHAN", text="t")
    response = err.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response["error"] == "ratelimited"
    assert (await client(slack).chat_postMessage(channel="C0CHAN", text="t"))["ok"]
    assert [c.status for c in slack.calls] == [429, 200]


async def test_rate_limit_retry_handler_waits_and_succeeds(slack: FakeSlack) -> None:
    slack.fail_next("chat.postMessage", retry_after=1)
    web_client = client(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    answer = await web_client.chat_postMessage(channel="C0CHAN", text="after a wait")
    assert answer["ok"]
    attempts = slack.calls_to("chat.postMessage")
    assert [c.status for c in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 1.0  # Retry-After honoured
    assert [m.text for m in slack.posted()] == ["after a wait"]


async def test_other_failures(slack: FakeSlack) -> None:
    web_client = client(slack)
    slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(SlackApiError) as err:
        await web_client.chat_postMessage(channel="C0CHAN", text="t")
    assert err.value.response.status_code == 500

    slack.fail_next("chat.postMessage", error="fatal_error")
    with pytest.raises(SlackApiError) as err:
        await web_client.chat_postMessage(channel="C0CHAN", text="t")
    assert (err.value.response.status_code, err.value.response["error"]) == (200, "fatal_error")

    slack.fail_next("*", status=503, raw_body="<html>upstream</html>", content_type="text/html")
    with pytest.raises(SlackApiError) as err:
        await web_client.auth_test()
    assert err.value.response.status_code == 503

    # a dropped connection: slack-sdk's default handler retries connection errors once
    slack.fail_next("chat.postMessage", drop=True)
    assert (await web_client.chat_postMessage(channel="C0CHAN", text="survives"))["ok"]
    slack.fail_next("chat.postMessage", drop=True)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client(slack, retry_handlers=[]).chat_postMessage(channel="C0CHAN", text="lost")
    assert [m.text for m in slack.posted()] == ["survives"]

    slack.set_latency(0.3, "auth.test")
    start = time.monotonic()
    await web_client.auth_test()
    assert time.monotonic() - start >= 0.3


async def test_enforced_rate_limits(slack: FakeSlack) -> None:
    slack.enforce_rate_limits(
        per_channel_per_second=1, channel_burst=3, workspace_per_minute=300, workspace_burst=5
    )
    web_client = client(slack)
    for i in range(3):
        await web_client.chat_postMessage(channel="C0ONE", text=f"burst {i}")
    with pytest.raises(SlackApiError) as err:
        await web_client.chat_postMessage(channel="C0ONE", text="too fast")
    assert err.value.response.status_code == 429
    assert int(err.value.response.headers["Retry-After"]) >= 1
    # another channel has its own budget, but the workspace budget (burst 5) is shared
    await web_client.chat_postMessage(channel="C0TWO", text="a")
    await web_client.chat_postMessage(channel="C0TWO", text="b")
    with pytest.raises(SlackApiError) as err:
        await web_client.chat_postMessage(channel="C0THREE", text="c")
    assert err.value.response.status_code == 429
    # another workspace is not affected
    assert (await client(slack, TOKEN_B).chat_postMessage(channel="C0ONE", text="B"))["ok"]
    assert [c.params["text"] for c in slack.rate_limited()] == ["too fast", "c"]
    assert len(slack.posted()) == 6


# --- signatures and Events API requests, checked by slack-sdk and slack-bolt ------------------


def test_signature_verifier_accepts_signed_and_rejects_tampered() -> None:
    body = json.dumps(event_callback("T0AAA", dm_message("U0USER", "hi"))).encode()
    now = int(time.time())
    headers = sign(SECRET, body, now)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid(
        body + b" ", headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert not verifier.is_valid(body, str(now + 1), headers["X-Slack-Signature"])
    assert not SignatureVerifier("other-secret").is_valid_request(body, headers)
    old = sign(SECRET, body, now - 301)
    assert not verifier.is_valid_request(body, old)


@pytest.fixture
async def bolt(slack: FakeSlack) -> AsyncIterator[tuple[str, dict[str, list[Any]]]]:
    """A slack-bolt app (HTTP mode, aiohttp adapter) recording what its listeners see."""
    seen: dict[str, list[Any]] = {
        "message": [],
        "mention": [],
        "action": [],
        "command": [],
        "retry": [],
    }
    app = AsyncApp(client=client(slack), signing_secret=SECRET)

    @app.event("message")
    async def on_message(event: dict[str, Any], request: AsyncBoltRequest) -> None:
        seen["message"].append(event)
        seen["retry"].append(request.headers.get("x-slack-retry-num", [None])[0])

    @app.event("app_mention")
    async def on_mention(event: dict[str, Any]) -> None:
        seen["mention"].append(event)

    @app.action("answer")
    async def on_action(ack: Any, body: dict[str, Any], respond: Any) -> None:
        await ack()
        seen["action"].append(body)
        await respond("thanks")

    @app.command("/bridge")
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        await ack(f"got {command['text']}")
        seen["command"].append(command)

    async def handle(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await app.async_dispatch(await to_bolt_request(request)))

    web_app = web.Application()
    web_app.router.add_post("/slack/events", handle)
    async with serving(web_app) as base:
        yield f"{base}/slack/events", seen


async def test_bolt_accepts_the_built_requests(
    slack: FakeSlack, bolt: tuple[str, dict[str, list[Any]]]
) -> None:
    url, seen = bolt
    # url_verification
    status, body, _ = await post_event(url, url_verification("chal-123"), SECRET)
    assert (status, json.loads(body)) == (200, {"challenge": "chal-123"})

    dm = event_callback("T0AAA", dm_message("U0USER", "hello bot"), bot_user_id="U0BOTA")
    status, _, elapsed = await post_event(url, dm, SECRET)
    assert status == 200 and elapsed < 3
    # a Slack retry of the same event: Bolt acks it again and does not dedup it itself
    assert (await post_event(url, dm, SECRET, retry_num=1, retry_reason="http_timeout"))[0] == 200
    mention = app_mention("U0USER", "help", channel="C0CHAN", bot_user_id="U0BOTA")
    await post_event(url, event_callback("T0AAA", mention, bot_user_id="U0BOTA"), SECRET)
    # the app's own message echo and an edit arrive too; Bolt drops its own messages
    own = bot_message("echo", bot_id="B0BOTA", user="U0BOTA", app_id="A0APP", legacy_subtype=False)
    await post_event(url, event_callback("T0AAA", own, bot_user_id="U0BOTA"), SECRET)
    edit = message_changed("C0CHAN", {"user": "U0USER", "text": "new", "ts": "1.000001"})
    await post_event(url, event_callback("T0AAA", edit, bot_user_id="U0BOTA"), SECRET)
    files = file_share("U0USER", "see file", [slack_file("a.png", mimetype="image/png")])
    await post_event(url, event_callback("T0AAA", files, bot_user_id="U0BOTA"), SECRET)
    reply = channel_message("U0USER", "in thread", thread_ts=mention["ts"])
    await post_event(url, event_callback("T0AAA", reply, bot_user_id="U0BOTA"), SECRET)

    await slack.wait_for(lambda: len(seen["message"]) == 5 and len(seen["mention"]) == 1)
    texts = [(e.get("subtype"), e.get("text"), e.get("channel_type")) for e in seen["message"]]
    assert texts == [
        (None, "hello bot", "im"),
        (None, "hello bot", "im"),
        ("message_changed", None, "channel"),
        ("file_share", "see file", "im"),
        (None, "in thread", "channel"),
    ]
    assert seen["message"][4]["thread_ts"] == mention["ts"]
    assert seen["retry"][:2] == [None, "1"]
    assert seen["mention"][0]["text"] == "<@U0BOTA> help"
    assert seen["message"][0]["team"] == "T0AAA"

    # a bad signature is refused
    status, _, _ = await post_event(url, dm, "not-the-secret")
    assert status == 401

    # a button click: form-encoded payload=<json>; respond() posts to the response_url
    click = block_actions_payload(
        "U0USER",
        "C0CHAN",
        "1700000000.000100",
        "answer",
        "yes",
        team_id="T0AAA",
        response_url=slack.response_url(),
    )
    status, _, _ = await post_event(url, interactive_body(click), SECRET)
    assert status == 200
    assert (await post_event(url, click, SECRET))[0] == 200  # a dict is form-encoded too
    await slack.wait_for(lambda: len(slack.responses) == 2)
    assert slack.responses[0].body["text"] == "thanks"
    assert seen["action"][0]["actions"][0]["value"] == "yes"

    # a slash command, and Slack's ssl_check
    cmd = slash_command("/bridge", "status", team_id="T0AAA")
    status, body, _ = await post_event(url, form_body(cmd), SECRET)
    assert status == 200 and "got status" in body
    assert (await post_event(url, ssl_check_body(), SECRET))[0] == 200


async def test_deliver_like_slack_retries_failures() -> None:
    answers = [500, 200]
    got: list[tuple[str | None, str | None]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(
            (request.headers.get("X-Slack-Retry-Num"), request.headers.get("X-Slack-Retry-Reason"))
        )
        return web.Response(status=answers[len(got) - 1])

    web_app = web.Application()
    web_app.router.add_post("/e", handle)
    async with serving(web_app) as base:
        attempts = await deliver_like_slack(f"{base}/e", url_verification("x"), SECRET)
    assert [a.status for a in attempts] == [500, 200]
    assert got == [(None, None), ("1", "http_error")]


# --- Socket Mode with slack-sdk's aiohttp SocketModeClient ---------------------------------------


async def test_socket_mode_client_round_trip_and_reconnects(slack: FakeSlack) -> None:
    requests: list[SocketModeRequest] = []

    async def listener(socket_client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        requests.append(req)
        ack = SocketModeResponse(envelope_id=req.envelope_id)
        await socket_client.send_socket_mode_response(ack)

    socket_client = SocketModeClient(
        app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=slack.api_url), ping_interval=0.3
    )
    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()  # type: ignore[no-untyped-call]
        first = await slack.wait_for_socket()
        assert slack.socket_connections == 1
        assert [c.method for c in slack.calls] == ["apps.connections.open"]

        payload = event_callback("T0AAA", dm_message("U0USER", "over the socket"))
        envelope_id = await slack.socket_send_event("events_api", payload)
        ack = await slack.wait_for_ack(envelope_id, within=3)
        assert ack.connection_id == first.id and ack.latency is not None
        assert requests[0].type == "events_api"
        assert requests[0].payload["event"]["text"] == "over the socket"
        assert (requests[0].retry_attempt, requests[0].retry_reason) == (0, "")
        assert requests[0].accepts_response_payload is False

        # Slack asks for a refresh: the client opens a new connection, closes the old one
        await slack.socket_disconnect("refresh_requested")
        second = await slack.wait_for_socket()
        await slack.wait_for(
            lambda: slack.socket_connections == 2 and len(slack.socket_open()) == 1
        )
        assert second.id != first.id and first.closed_at is not None
        assert slack.calls_to("apps.connections.open")[-1].status == 200

        cmd_id = await slack.socket_send_event("slash_commands", slash_command("/bridge", "hi"))
        assert (await slack.wait_for_ack(cmd_id)).connection_id == second.id
        assert requests[1].accepts_response_payload is True

        # the connection dies without a close frame: the client notices and reconnects
        await slack.socket_drop()
        await slack.wait_for(
            lambda: slack.socket_connections == 3 and slack.socket_open(), within=5
        )
        click = block_actions_payload("U0USER", "C0CHAN", "1.000001", "answer", "yes")
        click_id = await slack.socket_send_event("interactive", click)
        await slack.wait_for_ack(click_id)
        assert [r.type for r in requests] == ["events_api", "slash_commands", "interactive"]
    finally:
        await socket_client.close()  # type: ignore[no-untyped-call]
    await slack.wait_for(lambda: not slack.socket_open())


async def test_socket_server_details(slack: FakeSlack) -> None:
    opened = await AsyncWebClient(base_url=slack.api_url).apps_connections_open(app_token=APP_TOKEN)
    async with aiohttp.ClientSession() as session:
        bad = await session.get(f"http://127.0.0.1:{slack.port}/socket?ticket=nope")
        assert bad.status == 401
        sockets = []
        for _ in range(11):
            sockets.append(await session.ws_connect(opened["url"]))
        hellos = [await ws.receive_json(timeout=2) for ws in sockets]
        assert hellos[0]["type"] == "hello"
        assert hellos[0]["connection_info"] == {"app_id": "A0APP"}
        assert [h["num_connections"] for h in hellos][:3] == [1, 2, 3]
        assert await sockets[10].receive_json(timeout=2) == {
            "type": "disconnect",
            "reason": "too_many_websockets",
            "debug_info": {"host": "applink-fake-11"},
        }

        envelope_id = await slack.socket_send_event("events_api", {"x": 1}, connection=1)
        envelope = await sockets[0].receive_json(timeout=2)
        assert envelope == {
            "envelope_id": envelope_id,
            "payload": {"x": 1},
            "type": "events_api",
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        # the server closes by itself when the client ignores a disconnect
        closed = await slack.socket_disconnect("warning", connection=2, close_after=0.2)
        assert (await sockets[1].receive_json(timeout=2))["reason"] == "warning"
        assert closed.ws.closed
        for ws in sockets:
            await ws.close()
    with pytest.raises(TimeoutError):
        await slack.wait_for(lambda: False, within=0.05)


# --- shared files ------------------------------------------------------------------------------


async def fetch(url: str, token: str | None = None) -> tuple[int, bytes, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, allow_redirects=False) as resp,
    ):
        return resp.status, await resp.read(), dict(resp.headers)


async def test_files_info_and_downloads_need_the_workspace_bot_token(slack: FakeSlack) -> None:
    data = bytes(range(256)) * 300  # several chunks
    shared = slack.add_file("T0AAA", data, "scan 1.png", mimetype="image/png", user="U0USER")
    described = (shared["name"], shared["mimetype"], shared["size"])
    assert described == ("scan 1.png", "image/png", len(data))
    assert shared["url_private_download"].startswith(f"{slack.base_url}/files-pri/T0AAA-")

    info = await client(slack).files_info(file=shared["id"])
    assert info["file"] == shared
    assert slack.calls_to("files.info")[0].http_method == "GET"  # slack-sdk's verb
    for url in (shared["url_private"], shared["url_private_download"]):
        status, body, headers = await fetch(url, TOKEN_A)
        assert (status, body, headers["Content-Type"]) == (200, data, "image/png")
        assert "scan%201.png" in headers["Content-Disposition"]
    assert slack.downloads[0].authorization == f"Bearer {TOKEN_A}"

    assert (await fetch(shared["url_private"]))[0] == 401  # no token
    assert (await fetch(shared["url_private"], "xoxb-0-0-unknown"))[0] == 401
    assert (await fetch(shared["url_private"], TOKEN_B))[0] == 403  # another workspace's
    with pytest.raises(SlackApiError) as other:
        await client(slack, TOKEN_B).files_info(file=shared["id"])
    assert other.value.response["error"] == "file_not_found"
    with pytest.raises(SlackApiError) as unknown:
        await client(slack).files_info(file="F0NOSUCHFILE")
    assert unknown.value.response["error"] == "file_not_found"

    slack.delete_file(shared["id"])
    with pytest.raises(SlackApiError) as deleted:
        await client(slack).files_info(file=shared["id"])
    assert deleted.value.response["error"] == "file_deleted"
    assert (await fetch(shared["url_private"], TOKEN_A))[0] == 404

    slack.revoke_token(TOKEN_A)
    assert (await fetch(shared["url_private"], TOKEN_A))[0] == 403
    assert [d.status for d in slack.downloads] == [200, 200, 401, 401, 403, 404, 403]


async def test_files_info_needs_the_files_read_scope(slack: FakeSlack) -> None:
    slack.add_workspace("T0CCC", bot_token="xoxb-5-6-cccc", scopes=("chat:write",))
    shared = slack.add_file("T0CCC", b"x")
    with pytest.raises(SlackApiError) as missing:
        await client(slack, "xoxb-5-6-cccc").files_info(file=shared["id"])
    assert missing.value.response["error"] == "missing_scope"
    assert missing.value.response["needed"] == "files:read"


async def test_file_download_faults_and_redirects(slack: FakeSlack) -> None:
    shared = slack.add_file("T0AAA", b"%PDF-1.7", "a.pdf")
    slack.fail_next(FILE_DOWNLOAD, retry_after=7)
    status, _, headers = await fetch(shared["url_private_download"], TOKEN_A)
    assert (status, headers["Retry-After"]) == (429, "7")
    slack.fail_next(FILE_DOWNLOAD, status=503)
    assert (await fetch(shared["url_private_download"], TOKEN_A))[0] == 503
    assert (await fetch(shared["url_private_download"], TOKEN_A))[:2] == (200, b"%PDF-1.7")

    slack.redirect_file(shared["id"], "http://127.0.0.1:9/elsewhere")
    status, _, headers = await fetch(shared["url_private_download"], TOKEN_A)
    assert (status, headers["Location"]) == (302, "http://127.0.0.1:9/elsewhere")

    # a built file object for a voice clip
    clip = slack.add_file("T0AAA", b"OggS", "c.webm", mimetype="audio/webm", subtype="slack_audio")
    assert clip["subtype"] == "slack_audio"
    assert "subtype" not in slack_file()


async def test_image_blocks_slack_cannot_download_are_refused(slack: FakeSlack) -> None:
    slack.refuse_image_urls("https://unreachable.example/")
    web_client = client(slack)
    good = {"type": "image", "image_url": "https://ok.example/a.png", "alt_text": "a"}
    bad = {"type": "image", "image_url": "https://unreachable.example/b.png", "alt_text": "b"}
    await web_client.chat_postMessage(channel="C0CHAN", text="ok", blocks=[good])
    with pytest.raises(SlackApiError) as refused:
        await web_client.chat_postMessage(channel="C0CHAN", text="no", blocks=[section("x"), bad])
    assert refused.value.response["error"] == "invalid_blocks"
    assert refused.value.response["errors"] == [
        "downloading image failed [json-pointer:/blocks/1/image_url]"
    ]
    assert [m.text for m in slack.posted()] == ["ok"]


async def test_file_share_over_socket_mode(slack: FakeSlack) -> None:
    requests: list[SocketModeRequest] = []

    async def listener(socket_client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        requests.append(req)
        await socket_client.send_socket_mode_response(SocketModeResponse(req.envelope_id))

    socket_client = SocketModeClient(
        app_token=APP_TOKEN, web_client=AsyncWebClient(base_url=slack.api_url)
    )
    socket_client.socket_mode_request_listeners.append(listener)
    try:
        await socket_client.connect()  # type: ignore[no-untyped-call]
        shared = slack.add_file("T0AAA", b"\x89PNG", "a.png", mimetype="image/png")
        payload = event_callback("T0AAA", file_share("U0USER", "look", [shared]))
        await slack.wait_for_ack(await slack.socket_send_event("events_api", payload))
        event = requests[0].payload["event"]
        assert (event["subtype"], event["text"], event["files"]) == ("file_share", "look", [shared])
    finally:
        await socket_client.close()  # type: ignore[no-untyped-call]
