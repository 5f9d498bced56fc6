"""What the tests of signed webhooks share (the webhook channel's, and the webhook desk's in
tests/handover/): a receiver standing in for the integrator's endpoint, and the ways a
request's signature can be wrong."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.support.signing import webhook_signed_headers

# --- the integrator's side: a receiver of signed POSTs -----------------------------------------


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"message_id": "m-1"}'
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # wait until the test ends (for timeouts)


@dataclass
class Received:
    headers: CIMultiDict[str]
    raw: bytes
    json: Any
    answered: int = 200  # the status the receiver answered with


class Receiver:
    """Records what it is sent, answers as told (one answer per request from ``answers``,
    then ``default``), and wakes waiters on every request. Served on ``path``; the test sets
    ``port`` once its server runs."""

    def __init__(self, path: str = "/deliver") -> None:
        self.path = path
        self.answers: list[Answer] = []
        self.default = Answer()
        self.requests: list[Received] = []
        self.changed = asyncio.Condition()
        self.release = asyncio.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        answer = self.answers.pop(0) if self.answers else self.default
        self.requests.append(
            Received(CIMultiDict(request.headers), raw, json.loads(raw), answer.status)
        )
        async with self.changed:
            self.changed.notify_all()
        if answer.hang:
            await self.release.wait()
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": "application/json", **answer.headers},
        )

    async def elsewhere(self, request: web.Request) -> web.Response:
        raise AssertionError("a redirect was followed")

    async def wait_for(self, check: Callable[[list[Received]], Any], within: float = 5.0) -> Any:
        async with self.changed:
            async with asyncio.timeout(within):
                await self.changed.wait_for(lambda: check(self.requests))
        return check(self.requests)

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [r.json for r in self.requests if kind is None or r.json.get("type") == kind]


# --- unauthentic requests -------------------------------------------------------------------------

#: The ways :func:`forged_headers` gets a request's signature wrong (pytest ids).
FORGERIES = (
    "no-headers",
    "no-signature",
    "no-timestamp",
    "wrong-secret",
    "similar-secret",
    "stale",
    "future",
    "body-changed",
    "bad-timestamp",
    "infinite-timestamp",
    "other-version",
    "garbage-signature",
)


def forged_headers(forgery: str, raw: bytes, secret: str, changed: bytes) -> dict[str, str]:
    """Headers for ``raw`` that a receiver holding ``secret`` must refuse (401), wrong in the
    way ``forgery`` names; ``changed``: another body (signed, then sent with ``raw``)."""
    now = int(time.time())

    def sign(body: bytes = raw, timestamp: str | None = None, key: str = secret) -> dict[str, str]:
        return webhook_signed_headers(key, body, timestamp)

    forged = {
        "no-headers": lambda: {},
        "no-signature": lambda: {"X-Bridge-Timestamp": str(now)},
        "no-timestamp": lambda: {"X-Bridge-Signature": "v1=00"},
        "wrong-secret": lambda: sign(key="another-secret-0123456789"),
        "similar-secret": lambda: sign(key=secret + "x"),
        "stale": lambda: sign(timestamp=str(now - 301)),
        "future": lambda: sign(timestamp=str(now + 301)),
        "body-changed": lambda: sign(changed),
        "bad-timestamp": lambda: sign(timestamp="nan"),
        "infinite-timestamp": lambda: sign(timestamp="inf"),
        "other-version": lambda: {k: v.replace("v1=", "v0=") for k, v in sign().items()},
        "garbage-signature": lambda: {**sign(), "X-Bridge-Signature": "v1=ünïcödé"},
    }
    return forged[forgery]()
