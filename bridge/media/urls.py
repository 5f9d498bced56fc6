"""Signed media URLs: ``{public_url}/media/{id}?exp=<unix seconds>&sig=<signature>``, the
signature the first 128 bits of an HMAC-SHA256 of ``<id>:<exp>`` under the bridge's media key
(base64url: short, as several URLs share one context item of at most 1000 characters).
Anyone holding the URL may fetch the file until it expires, with no credentials (Parloa's
bot logic and whatever it hands the URL to); nobody can forge another id or a later expiry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

#: the channel-state entry under which a generated key is kept (every replica reads it)
KEY_CHANNEL = "@media"
KEY_NAME = "signing-key"


def new_key() -> str:
    return secrets.token_hex(32)


def new_media_id() -> str:
    """An id nobody can guess (the signature alone would do; this makes ids worthless to
    enumerate too): 128 random bits, base64url."""
    return secrets.token_urlsafe(16)


def _mac(key: bytes, media_id: str, expires: int) -> str:
    digest = hmac.new(key, f"{media_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs URLs under ``key``, on the bridge's public URL (read when a URL is made: a
    server started on port 0 knows its own only then)."""

    key: bytes
    base_url: Callable[[], str]
    ttl_seconds: int

    @property
    def public_url(self) -> str:
        return self.base_url().rstrip("/")

    def url(self, media_id: str, now: float) -> str:
        expires = int(now) + self.ttl_seconds
        query = urlencode({"exp": expires, "sig": _mac(self.key, media_id, expires)})
        return f"{self.public_url}/media/{quote(media_id, safe='')}?{query}"


class KeyOnce:
    """The signing key, loaded on first use and kept (a database unavailable at start-up
    delays the key, not the start); concurrent first uses load it once."""

    def __init__(self, load: Callable[[], Awaitable[bytes]]) -> None:
        self._load = load
        self._key: bytes | None = None
        self._lock = asyncio.Lock()

    async def __call__(self) -> bytes:
        if self._key is None:
            async with self._lock:
                if self._key is None:
                    self._key = await self._load()
        return self._key


class Refused(Exception):
    """Why a media request is refused; ``status``: what to answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def check(
    key: bytes, media_id: str, expires: str | None, signature: str | None, now: float
) -> None:
    """Raises Refused (403 tampered or unsigned, 404 expired) unless the URL is good."""
    if not expires or not signature or len(expires) > 12:
        raise Refused(403, "missing or malformed signature")
    if not (expires.isascii() and expires.isdigit()):
        raise Refused(403, "missing or malformed signature")
    expected = _mac(key, media_id, int(expires))
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        raise Refused(403, "bad signature")
    if int(expires) < now:
        raise Refused(404, "link expired")
