"""The admin API's guard: every route needs ``Authorization: Bearer <token>`` ([admin] token),
compared in constant time; with no token configured the API is disabled and every route
answers 404, as if it were not there."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def token_matches(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries ``token`` as its bearer token. Both sides are
    hashed first, so that the comparison takes as long whatever the guess, its length too."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    given_digest = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(given_digest, hashlib.sha256(token.encode()).digest())


def disabled() -> web.Response:
    return web.json_response({"error": "the admin API is disabled (no [admin] token)"}, status=404)


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": "unauthorized: send Authorization: Bearer <admin token>"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="parloa-bridge admin"'},
    )


def guarded(handler: Handler, token: str | None) -> Handler:
    """``handler`` behind the token: 404 when the API is disabled, 401 without the token."""

    async def guard(request: web.Request) -> web.StreamResponse:
        if token is None:
            return disabled()
        if not token_matches(request.headers.get("Authorization"), token):
            return unauthorized()
        return await handler(request)

    return guard
