"""The start and broadcast routes' own rules (bridge/admin/outreach.py): what a request body
may say, what a start's rows mean as a broadcast outcome, and a channel that cannot start
conversations. The platforms end to end: tests/adapters/telegram/test_outreach.py and
tests/adapters/slack/test_outreach.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.admin import AdminDeps
from bridge.admin.api import admin_routes
from bridge.admin.outreach import (
    MAX_RECIPIENTS,
    outreach_routes,
    parse_broadcast,
    parse_start,
    settled,
    start_event_id,
)
from bridge.channel import UnreadableBody
from bridge.devtools.simulator import RunningSimulator
from bridge.vocabulary import EndReason, InboxStatus, OutboxStatus
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.net import serving
from tests.support.service import running_service

ADMIN_TOKEN = "admin-token-0123456789"
START = {"channel": "web", "recipient": "ada", "idempotency_key": "k1"}


def test_a_start_body_is_read_strictly() -> None:
    wanted = parse_start({**START, "context": {"plan": "gold", "n": 2, "x": 1.5, "vip": True}})
    assert (wanted.channel, wanted.recipient, wanted.idempotency_key) == ("web", "ada", "k1")
    assert wanted.context == {"plan": "gold", "n": 2, "x": 1.5, "vip": True}
    assert parse_start({**START, "recipient": "  ada "}).recipient == "ada"
    for bad, reason in (
        ({k: v for k, v in START.items() if k != "channel"}, "channel"),
        ({**START, "recipient": 42}, "recipient"),
        ({**START, "idempotency_key": ""}, "idempotency_key"),
        ({**START, "idempotency_key": "k" * 129}, "longer than 128"),
        ({**START, "context": {"a": None}}, "'a'"),
        ({**START, "context": {"a": [1]}}, "'a'"),
        ({**START, "context": {"": "x"}}, "keys"),
        ({**START, "context": {"a": "x" * 2001}}, "longer than 2000"),
        ({**START, "context": {f"k{n}": n for n in range(51)}}, "more than 50"),
        ({**START, "context": "plan=gold"}, "context"),
    ):
        with pytest.raises(UnreadableBody, match=reason):
            parse_start(bad)


def test_a_broadcast_body_is_read_strictly() -> None:
    body = {"channel": "tg", "recipients": ["41", 42, "41", " 43 "], "idempotency_key": "b"}
    wanted = parse_broadcast(body)
    assert wanted.recipients == ("41", "42", "43")  # distinct, in order, numeric ids as text
    assert wanted.wait_seconds == 0
    assert parse_broadcast({**body, "wait_seconds": 60}).wait_seconds == 60
    too_many = [str(n) for n in range(MAX_RECIPIENTS + 1)]
    for bad, reason in (
        ({**body, "recipients": too_many}, "more than 1000"),
        ({**body, "recipients": []}, "recipients"),
        ({**body, "recipients": "41,42"}, "recipients"),
        ({**body, "recipients": [True]}, "recipients"),
        ({**body, "recipients": [""]}, "recipients"),
        ({**body, "wait_seconds": -1}, "wait_seconds"),
        ({**body, "wait_seconds": 61}, "wait_seconds"),
        ({**body, "wait_seconds": "5"}, "wait_seconds"),
    ):
        with pytest.raises(UnreadableBody, match=reason):
            parse_broadcast(bad)


def test_a_start_key_names_the_event() -> None:
    assert start_event_id("spring") == "start:spring"
    assert start_event_id("spring", "42") == "start:spring:42"


SENT, FAILED, PENDING = OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.PENDING


@pytest.mark.parametrize(
    ("inbox", "deliveries", "end_reason", "outcome"),
    [
        (InboxStatus.DONE, [(SENT, None), (SENT, None)], None, "sent"),
        (InboxStatus.DONE, [], None, "sent"),  # Parloa had no welcome: nothing to deliver
        (InboxStatus.DONE, [(SENT, None), (PENDING, None)], None, "pending"),
        (InboxStatus.PENDING, [], None, "pending"),
        (
            InboxStatus.DONE,
            [(FAILED, "recipient gone: Forbidden: bot was blocked")],
            None,
            "blocked",
        ),
        (InboxStatus.DONE, [(FAILED, "rejected: message is too long")], None, "failed"),
        (InboxStatus.DONE, [(PENDING, None)], EndReason.RECIPIENT_GONE, "blocked"),
        (InboxStatus.DEAD, [], None, "failed"),
        (None, [], None, "pending"),
    ],
)
def test_what_a_starts_rows_mean(
    inbox: InboxStatus | None,
    deliveries: list[tuple[str, str | None]],
    end_reason: EndReason | None,
    outcome: str,
) -> None:
    assert settled(inbox, deliveries, end_reason) == outcome


@contextlib.asynccontextmanager
async def webchat_admin(tmp_path: Path, sim: RunningSimulator, **deps: Any) -> AsyncIterator[str]:
    """A bridge with a web chat channel (which has no recipient hook) and the routes."""
    channel = {"name": "web", "type": "webchat"}
    config = service_config(config_data(sqlite_url(tmp_path), sim.url, channel))
    async with running_service(config) as service:
        given: dict[str, Any] = {
            "store": service.store,
            "token": ADMIN_TOKEN,
            "channel_bots": {"web": "demo"},
            "adapters": service.adapters,
            "notify": service.engine.notify,
            "intake": service.engine.intake,
            **deps,
        }
        app = web.Application()
        deps = AdminDeps(**given)
        app.add_routes(admin_routes(deps, extra=outreach_routes(deps)))
        async with serving(app) as url:
            yield url


async def post(url: str, path: str, body: Any, token: str | None = ADMIN_TOKEN) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{url}{path}", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_a_channel_without_the_hook_cannot_start_conversations(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    async with webchat_admin(tmp_path, sim) as url:
        status, answer = await post(url, "/admin/api/conversations/start", START)
        assert (status, answer["error"]) == (422, "recipient_unknown")
        assert "cannot start conversations" in answer["detail"]
        body = {"channel": "web", "recipients": ["ada", "bob"], "idempotency_key": "b"}
        status, answer = await post(url, "/admin/api/broadcasts", body)
        assert status == 200
        assert [r["outcome"] for r in answer["results"]] == ["unknown_chat", "unknown_chat"]
    assert not [r for r in sim.state.requests if r.event_type == "launch"]


async def test_disabled_unreadable_and_without_an_intake(
    tmp_path: Path, sim: RunningSimulator
) -> None:
    async with webchat_admin(tmp_path, sim, token=None) as url:
        status, answer = await post(url, "/admin/api/conversations/start", START)
        assert status == 404 and "disabled" in answer["error"]
    async with webchat_admin(tmp_path, sim, intake=None) as url:
        status, answer = await post(url, "/admin/api/conversations/start", START)
        assert status == 503, answer
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{url}/admin/api/conversations/start",
                data=b"x" * (300 * 1024),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ) as response,
        ):
            assert response.status == 400
            assert "larger than" in (await response.json())["error"]
        for raw in (b"\xff\xfe", b"[]", b"{"):
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{url}/admin/api/broadcasts",
                    data=raw,
                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                ) as response,
            ):
                assert response.status == 400, raw
