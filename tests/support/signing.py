"""Request authentication as the platforms compute it, written out here rather than taken from
the adapters, so that a test checks the adapter against the platform's rule and not against
itself: Slack's request signature, the webhook channel's signature, Telegram's secret header."""

from __future__ import annotations

import hashlib
import hmac
import time

TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def _hmac_sha256(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _now(timestamp: int | str | None) -> str:
    return str(int(time.time()) if timestamp is None else timestamp)


def slack_signed_headers(
    signing_secret: str, body: bytes | str, timestamp: int | None = None
) -> dict[str, str]:
    """``X-Slack-Request-Timestamp`` and ``X-Slack-Signature`` (``v0=`` HMAC-SHA256 of
    ``v0:<timestamp>:<body>``) for ``body``; ``timestamp`` defaults to now."""
    ts = _now(timestamp)
    raw = body.encode() if isinstance(body, str) else body
    digest = _hmac_sha256(signing_secret, b"v0:" + ts.encode() + b":" + raw)
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook channel's ``X-Bridge-Signature``: ``v1=`` HMAC-SHA256 of
    ``<timestamp>.<body>``."""
    return "v1=" + _hmac_sha256(secret, f"{timestamp}.".encode() + body)


def webhook_signed_headers(
    secret: str, body: bytes, timestamp: str | None = None
) -> dict[str, str]:
    """The headers of a signed JSON POST to the webhook channel; ``timestamp`` defaults to now."""
    ts = _now(timestamp)
    return {
        "X-Bridge-Timestamp": ts,
        "X-Bridge-Signature": webhook_signature(secret, ts, body),
        "Content-Type": "application/json",
    }


def telegram_secret_headers(secret: str) -> dict[str, str]:
    """What Telegram sends with each webhook update when ``setWebhook`` had a ``secret_token``."""
    return {TELEGRAM_SECRET_HEADER: secret}
