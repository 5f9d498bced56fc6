"""The answers of the Telegram webhook route, as plain functions: the secret check and the
responses for each outcome. The route itself (reading the body and committing the update) is
the adapter's; Telegram sends an update again after a 5xx, never after a 4xx."""

from __future__ import annotations

import hmac
import logging

from aiohttp import web
from pydantic import SecretStr

log = logging.getLogger("adapters.telegram")

RETRY_AFTER_SECONDS = 5


def secret_refusal(
    request: web.Request, expected: SecretStr | None, channel: str
) -> web.Response | None:
    """401 unless the request carries the webhook's secret token; None when it does."""
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if expected is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.get_secret_value().encode()
    ):
        log.info("telegram channel %s: webhook request with a wrong secret", channel)
        return web.json_response({"error": "unauthorized"}, status=401)
    return None


def unavailable(error: str) -> web.Response:
    """503 with Retry-After: nothing was stored, Telegram sends the update again."""
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return web.json_response({"error": error}, status=503, headers=headers)


def refused(error: Exception) -> web.Response:
    """400: sent again, the update would be refused again."""
    return web.json_response({"error": str(error)}, status=400)
