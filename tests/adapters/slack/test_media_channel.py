"""Slack files end to end: the real Service (engine, store, HTTP server, media worker) with
slack-bolt / slack-sdk against the fake Slack, and the simulator as Parloa. A shared file reaches
Parloa as one message event whose context describes it, and the bridge serves its bytes at the
signed ``attachmentUrl`` without credentials. Waits are on conditions, never fixed sleeps."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import aiohttp
import pytest

from bridge.devtools.simulator import RunningSimulator
from bridge.service import Service
from tests.fakes.slack import (
    FILE_DOWNLOAD,
    FakeSlack,
    dm_message,
    event_callback,
    file_share,
    post_event,
)
from tests.support.config import config_data, service_config
from tests.support.net import free_port, local_url
from tests.support.service import running_service
from tests.support.waiting import poll_until

# slack-sdk's oauth_v2_access still passes aiohttp.BasicAuth, which aiohttp 3.14 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:BasicAuth is deprecated:DeprecationWarning")

TEAM = "T0TEAM"
BOT_USER = "U0BOT"
BOT_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
APP_TOKEN = "xapp-1-A0APP-3333333333333-appTokenSecretValue0123"
USER = "U0ADA"
DM = "D0ADA"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400  # ~100 KB: several chunks
PDF = b"%PDF-1.7\n" + b"0123456789" * 5000
ATTACHMENT_KEYS = ("attachmentType", "attachmentUrl", "attachmentMimeType", "attachmentSize")


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_workspace(TEAM, bot_token=BOT_TOKEN, bot_user_id=BOT_USER, bot_id="B0BOT")
        fake.add_user(TEAM, USER, real_name="Ada Lovelace", display_name="ada", locale="de-DE")
        yield fake


@asynccontextmanager
async def bridge(
    database_url: str, slack: FakeSlack, sim: RunningSimulator, **channel: Any
) -> AsyncIterator[Service]:
    """The service on a port chosen beforehand, so that ``[http] public_url`` (the base of
    ``attachmentUrl``) is the bridge itself."""
    port = free_port()
    options: dict[str, Any] = {
        "name": "sl",
        "type": "slack",
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_base_url": slack.api_url,
        **channel,
    }
    options = {k: v for k, v in options.items() if v is not None}
    http = {"port": port, "public_url": local_url(port)}
    config = service_config(config_data(database_url, sim.url, options, http=http))
    async with running_service(config) as service:
        assert service.channel_state["sl"] == "started", service.channel_state
        yield service


def events_url(service: Service) -> str:
    return f"{public(service)}/slack/sl/events"


def public(service: Service) -> str:
    url = service.config.http.public_url
    assert url is not None
    return str(url).rstrip("/")


async def send(
    service: Service, event: dict[str, Any], team: str = TEAM, bot_user_id: str = BOT_USER
) -> int:
    body = event_callback(team, event, bot_user_id=bot_user_id)
    return (await post_event(events_url(service), body, SIGNING_SECRET)).status


def messages(sim: RunningSimulator) -> list[Any]:
    return [r for r in sim.state.requests if r.event_type == "message"]


def items(request: Any) -> list[tuple[str, Any]]:
    return [(c["key"], c["value"]) for c in request.context or []]


async def received(slack: FakeSlack, sim: RunningSimulator, count: int) -> list[Any]:
    """The first ``count`` message events Parloa received (waits until they are answered)."""
    await poll_until(lambda: len(messages(sim)) >= count, within=15)
    return messages(sim)[:count]


async def get(url: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


def tampered(url: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    signature = query["sig"]
    query["sig"] = ("A" if signature[0] != "A" else "B") + signature[1:]
    return parts._replace(query=urlencode(query)).geturl()


async def own_context(service: Service, slack: FakeSlack, sim: RunningSimulator) -> list[Any]:
    """The context items the channel itself gives a message in the DM (a plain text first)."""
    assert await send(service, dm_message(USER, "hello", channel=DM)) == 200
    [first] = await received(slack, sim, 1)
    return items(first)


# --- one file ---------------------------------------------------------------------------------


async def test_a_shared_photo_reaches_parloa_with_its_url(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        own = await own_context(service, slack, sim)
        shared = slack.add_file(TEAM, PNG, "broken lamp.png", mimetype="image/png", user=USER)
        event = file_share(USER, "it arrived <@U0BOT> like this", [shared], channel=DM)
        assert await send(service, event) == 200

        _, message = await received(slack, sim, 2)
        assert message.text == "it arrived like this"
        got = dict(items(message))
        url = got["attachmentUrl"]
        assert url.startswith(f"{public(service)}/media/")
        assert items(message) == [
            *own,
            ("attachmentType", "photo"),
            ("attachmentUrl", url),
            ("attachmentMimeType", "image/png"),
            ("attachmentSize", len(PNG)),
            ("attachmentName", "broken lamp.png"),
        ]
        # the bridge fetched it with the bot token, and serves it without one
        assert [d.authorization for d in slack.downloads] == [f"Bearer {BOT_TOKEN}"]
        status, body, headers = await get(url)
        assert (status, body, headers["Content-Type"]) == (200, PNG, "image/png")
        assert "broken" in headers["Content-Disposition"]
        assert BOT_TOKEN not in url and "files-pri" not in url
        assert (await get(tampered(url)))[0] == 403
        # the bot's answer came back to the DM
        await slack.wait_for(
            lambda: any("it arrived like this" in (m.text or "") for m in slack.posted(DM))
        )


async def test_a_voice_clip_without_text_gets_the_placeholder(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        clip = slack.add_file(
            TEAM,
            b"OggS" + bytes(2000),
            "audio_message.webm",
            mimetype="audio/webm",
            subtype="slack_audio",
            user=USER,
        )
        assert await send(service, file_share(USER, "", [clip], channel=DM)) == 200
        [message] = await received(slack, sim, 1)
        assert message.text == "[voice message]"
        got = dict(items(message))
        assert (got["attachmentType"], got["attachmentMimeType"]) == ("voice", "audio/webm")
        assert (await get(got["attachmentUrl"]))[1] == b"OggS" + bytes(2000)


async def test_a_deleted_file_is_described_without_a_url_and_a_failing_one_is_retried(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        gone = slack.add_file(TEAM, PDF, "old.pdf", mimetype="application/pdf", user=USER)
        slack.delete_file(gone["id"])
        assert await send(service, file_share(USER, "", [gone], channel=DM)) == 200
        [message] = await received(slack, sim, 1)
        assert message.text == "[document]"
        got = dict(items(message))
        assert got["attachmentType"] == "document" and "attachmentUrl" not in got

        # Slack failing once (503) is tried again: the file still arrives
        shared = slack.add_file(TEAM, PNG, "lamp.png", mimetype="image/png", user=USER)
        slack.fail_next(FILE_DOWNLOAD, status=503)
        assert await send(service, file_share(USER, "again", [shared], channel=DM)) == 200
        _, retried = await received(slack, sim, 2)
        assert (await get(dict(items(retried))["attachmentUrl"]))[1] == PNG
        assert [d.status for d in slack.downloads] == [503, 200]


# --- several files ----------------------------------------------------------------------------


async def test_two_files_in_one_message_are_one_event_with_both_urls(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    async with bridge(database_url, slack, sim) as service:
        own = await own_context(service, slack, sim)
        photo = slack.add_file(TEAM, PNG, "lamp.png", mimetype="image/png", user=USER)
        invoice = slack.add_file(TEAM, PDF, "invoice.pdf", mimetype="application/pdf", user=USER)
        assert await send(service, file_share(USER, "both", [photo, invoice], channel=DM)) == 200

        _, message = await received(slack, sim, 2)
        assert message.text == "both"
        got = dict(items(message))
        urls = got["attachmentUrls"].split(" ")
        assert len(urls) == 2 and urls[0] == got["attachmentUrl"]
        assert items(message) == [
            *own,
            ("attachmentType", "photo"),
            ("attachmentUrl", urls[0]),
            ("attachmentMimeType", "image/png"),
            ("attachmentSize", len(PNG)),
            ("attachmentName", "lamp.png"),
            ("attachmentCount", 2),
            ("attachmentUrls", " ".join(urls)),
        ]
        first, second = [await get(u) for u in urls]
        assert (first[0], first[1]) == (200, PNG)
        assert (second[0], second[1], second[2]["Content-Type"]) == (200, PDF, "application/pdf")
        assert (await get(tampered(urls[1])))[0] == 403


# --- Socket Mode ------------------------------------------------------------------------------


async def test_a_file_over_socket_mode(
    database_url: str, slack: FakeSlack, sim: RunningSimulator
) -> None:
    slack.add_app_token(APP_TOKEN)
    async with bridge(
        database_url, slack, sim, mode="socket", app_token=APP_TOKEN, signing_secret=None
    ):
        await slack.wait_for_socket()
        shared = slack.add_file(TEAM, PDF, "invoice.pdf", mimetype="application/pdf", user=USER)
        body = event_callback(TEAM, file_share(USER, "my invoice", [shared], channel=DM))
        await slack.wait_for_ack(await slack.socket_send_event("events_api", body))
        [message] = await received(slack, sim, 1)
        got = dict(items(message))
        assert (message.text, got["attachmentType"], got["attachmentSize"]) == (
            "my invoice",
            "document",
            len(PDF),
        )
        assert (await get(got["attachmentUrl"]))[1] == PDF


# --- OAuth installs ---------------------------------------------------------------------------


async def install(service: Service, code: str) -> None:
    """One browser install: the install page, its state cookie, the redirect back."""
    pages = f"{public(service)}/slack/sl"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        async with http.get(f"{pages}/install", allow_redirects=False) as resp:
            page = await resp.text()
            location = resp.headers.get("Location")
            cookies = resp.headers.getall("Set-Cookie", [])
        if location is None:
            found = re.search(r'href="(https://slack\.com/oauth/v2/authorize\?[^"]+)"', page)
            assert found, page
            location = html.unescape(found[1])
        state = parse_qs(urlsplit(location).query)["state"][0]
        cookie = "; ".join(c.split(";", 1)[0] for c in cookies)
        async with http.get(
            f"{pages}/oauth_redirect",
            params={"code": code, "state": state},
            headers={"Cookie": cookie},
            allow_redirects=False,
        ) as resp:
            assert resp.status == 200, (resp.status, await resp.text())


async def test_each_workspace_s_files_are_fetched_with_its_own_token(
    database_url: str, sim: RunningSimulator
) -> None:
    async with FakeSlack() as slack:
        entries = {}
        async with bridge(
            database_url,
            slack,
            sim,
            bot_token=None,
            client_id=slack.client_id,
            client_secret=slack.client_secret,
        ) as service:
            redirect = f"{public(service)}/slack/sl/oauth_redirect"
            for team in ("T0ONE", "T0TWO"):
                code = f"code-{team}"
                entries[team] = slack.add_oauth_code(
                    code, team, bot_user_id=f"U0BOT{team[-3:]}", redirect_uri=redirect
                )
                await install(service, code)
            for n, team in enumerate(("T0ONE", "T0TWO"), start=1):
                data = f"file of {team}".encode()
                shared = slack.add_file(team, data, f"{team}.txt", mimetype="text/plain")
                event = file_share("U0USER", "", [shared], channel="D0SAME")
                assert await send(service, event, team, entries[team].bot_user_id) == 200
                message = (await received(slack, sim, n))[-1]
                assert (await get(dict(items(message))["attachmentUrl"]))[1] == data
            assert [d.authorization for d in slack.downloads] == [
                f"Bearer {entries['T0ONE'].bot_token}",
                f"Bearer {entries['T0TWO'].bot_token}",
            ]
