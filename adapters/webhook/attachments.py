"""Attachments of the webhook channel: which URLs an event may name, and fetching them.

An event's ``attachments`` (``[{"url", "name"?, "mime_type"?}]``) are checked at intake
(:func:`read_attachments`: a bad one answers 400 and nothing is stored) and fetched later by the
worker (:class:`AttachmentFetcher`), never at intake.

Which hosts: ``allowed_attachment_hosts`` lists host names (``files.example.com``), wildcards
matching subdomains (``*.example.com``, not ``example.com`` itself), IP literals, or ``*`` for
any host. Whatever the list says, an address that is loopback, private, link-local, multicast,
reserved or unspecified is fetched only when the URL's host (a name or an IP literal) is listed
literally: a wildcard never reaches the inside of the network. The check is made on the
addresses a name resolves to when it is fetched, and the connection goes only to an address
that passed it (:class:`CheckedResolver`), so a name that resolves to a public address at
intake and to an internal one later (DNS rebinding) is still refused. Redirects are not
followed, no credentials or cookies are sent, and proxies from the environment are not used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import mimetypes
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from bridge.channelkit import body_chunks, is_storable_text
from bridge.media.attachments import (
    Attachment,
    AttachmentRetryable,
    AttachmentType,
    AttachmentUnavailable,
    Download,
)
from bridge.retry_after import retry_after_seconds

log = logging.getLogger("adapters.webhook")

#: At most this many attachments in one event.
MAX_ATTACHMENTS = 10
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 255
MAX_MIME_LENGTH = 255

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AttachmentRefused(ValueError):
    """An attachment an event may not carry; ``reason`` is one line for the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AddressRefused(OSError):
    """A host resolved only to addresses this channel does not connect to."""


# --- the host policy ------------------------------------------------------------------------


def _ip(host: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def normalize_host(value: str) -> str:
    """A host as it is compared: lower case, no trailing dot, an IPv6 literal without brackets
    in its compressed form."""
    host = value.strip().lower().rstrip(".")
    ip = _ip(host)
    return str(ip) if ip is not None else host


def internal(ip: IpAddress) -> bool:
    """Whether an address is never fetched unless its host is listed literally."""
    mapped = getattr(ip, "ipv4_mapped", None)
    if mapped is not None:
        return internal(mapped)
    return (
        ip.is_loopback
        or ip.is_private
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """``allowed_attachment_hosts``, normalised (see the module's docstring)."""

    entries: tuple[str, ...] = ()

    @classmethod
    def of(cls, entries: Iterable[str]) -> HostPolicy:
        return cls(tuple(normalize_host(e) for e in entries))

    def listed_literally(self, host: str) -> bool:
        return normalize_host(host) in self.entries

    def allows(self, host: str) -> bool:
        """Whether URLs on ``host`` may be named at all (addresses are checked apart)."""
        host = normalize_host(host)
        if "*" in self.entries or host in self.entries:
            return True
        if _ip(host) is not None:
            return False  # a wildcard names host names, not addresses
        return any(e.startswith("*.") and host.endswith(e[1:]) for e in self.entries)

    def address_allowed(self, host: str, ip: IpAddress) -> bool:
        return not internal(ip) or self.listed_literally(host)

    def check_url(self, raw: str) -> URL:
        """The URL when an event may name it; raises AttachmentRefused with the reason."""
        if len(raw) > MAX_URL_LENGTH:
            raise AttachmentRefused(f"longer than {MAX_URL_LENGTH} characters")
        try:
            url = URL(raw)
        except (ValueError, TypeError):
            raise AttachmentRefused("not a URL") from None
        if url.scheme not in ("http", "https") or not url.is_absolute() or not url.host:
            raise AttachmentRefused("must be an absolute http:// or https:// URL")
        if url.user is not None or url.password is not None:
            raise AttachmentRefused("must not carry credentials")
        host = url.host
        if not self.allows(host):
            raise AttachmentRefused(
                f"host {host[:100]} is not in the channel's allowed_attachment_hosts"
            )
        ip = _ip(host)
        if ip is not None and not self.address_allowed(host, ip):
            raise AttachmentRefused(
                f"host {host} is an internal address (loopback, private, link-local, "
                "multicast, reserved or unspecified), fetched only when listed literally"
            )
        return url


# --- intake ---------------------------------------------------------------------------------


def type_of(mime_type: str | None, name: str | None) -> tuple[AttachmentType, str | None]:
    """The attachment type, and the mime type (given, else guessed from the name's
    extension): image/* photo, audio/* audio, video/* video, anything else a document."""
    mime = mime_type or (mimetypes.guess_type(name)[0] if name else None)
    if mime is None:
        return AttachmentType.DOCUMENT, None
    major = mime.split("/", 1)[0].strip().lower()
    kind = {
        "image": AttachmentType.PHOTO,
        "audio": AttachmentType.AUDIO,
        "video": AttachmentType.VIDEO,
    }.get(major, AttachmentType.DOCUMENT)
    return kind, mime


def _optional_text(entry: Mapping[str, Any], key: str, limit: int, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise AttachmentRefused(f"{where}.{key} must be a non-empty string")
    if len(value) > limit:
        raise AttachmentRefused(f"{where}.{key} is longer than {limit} characters")
    if not is_storable_text(value) or "\x00" in value:
        raise AttachmentRefused(f"{where}.{key} is not valid Unicode text")
    return value


def _clean_name(value: str | None) -> str | None:
    """A file name as it is passed on: its last path part, printable, cut to length."""
    if not value:
        return None
    tail = value.replace("\\", "/").rsplit("/", 1)[-1]
    tail = "".join(c for c in tail if c.isprintable()).strip()
    return tail[:MAX_NAME_LENGTH] if tail and is_storable_text(tail) else None


def _url_name(url: URL) -> str | None:
    return _clean_name(unquote(url.path.rstrip("/").rsplit("/", 1)[-1]))


def read_attachments(raw: object, policy: HostPolicy) -> tuple[Attachment, ...]:
    """The attachments of an event's ``attachments`` value (None: none). Raises
    AttachmentRefused naming the entry and why."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise AttachmentRefused("attachments must be a list")
    if len(raw) > MAX_ATTACHMENTS:
        raise AttachmentRefused(f"attachments has more than {MAX_ATTACHMENTS} entries")
    found: list[Attachment] = []
    for index, entry in enumerate(raw):
        where = f"attachments[{index}]"
        if not isinstance(entry, dict):
            raise AttachmentRefused(f"{where} must be an object")
        url_text = entry.get("url")
        if not isinstance(url_text, str) or not is_storable_text(url_text):
            raise AttachmentRefused(f"{where}.url must be a string")
        try:
            url = policy.check_url(url_text)
        except AttachmentRefused as exc:
            raise AttachmentRefused(f"{where}.url: {exc.reason}") from None
        name = _optional_text(entry, "name", MAX_NAME_LENGTH, where)
        mime = _optional_text(entry, "mime_type", MAX_MIME_LENGTH, where)
        if mime is not None and "/" not in mime:
            raise AttachmentRefused(f"{where}.mime_type must look like type/subtype")
        kind, mime = type_of(mime, name or _url_name(url))
        found.append(Attachment(type=kind, locator=str(url), name=name, mime_type=mime))
    return tuple(found)


# --- fetching -------------------------------------------------------------------------------


class CheckedResolver(AbstractResolver):
    """Resolves with the default resolver and keeps only the addresses the policy allows for
    the host, so the connector can connect to nothing else. Raises AddressRefused when none
    is left."""

    def __init__(self, policy: HostPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if not self._policy.allows(host):
            raise AddressRefused(f"host {host} is not allowed")
        results = await self._inner.resolve(host, port, family)
        kept = [r for r in results if self._allowed(host, r["host"])]
        if not kept:
            raise AddressRefused(f"host {host} resolves only to addresses not fetched")
        return kept

    def _allowed(self, host: str, address: str) -> bool:
        ip = _ip(address.split("%", 1)[0])  # an IPv6 scope id is not part of the address
        return ip is not None and self._policy.address_allowed(host, ip)

    async def close(self) -> None:
        await self._inner.close()


def _refused_address(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return True
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, AddressRefused):
            return True
        current = current.__cause__ or current.__context__
    return False


class AttachmentFetcher:
    """Fetches attachment URLs for one channel: one session, its connector bound to the
    policy. ``timeout``: seconds to connect, and between two reads of the body."""

    def __init__(self, policy: HostPolicy, timeout: float) -> None:
        self.policy = policy
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=CheckedResolver(self.policy)),
                # The worker bounds a whole download; these bound a stalled connection.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self._timeout, sock_read=self._timeout
                ),
                trust_env=False,  # no proxies, no .netrc credentials from the environment
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": "parloa-bridge-webhook"},
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()

    @contextlib.asynccontextmanager
    async def open(self, attachment: Attachment) -> AsyncIterator[Download]:
        """The bytes at the attachment's URL, streamed. Raises AttachmentRetryable (a timeout,
        a connection failure, 5xx, 429 with its Retry-After) or AttachmentUnavailable (any
        other answer than 2xx, a redirect, a host or address not allowed)."""
        try:
            url = self.policy.check_url(attachment.locator)
        except AttachmentRefused as exc:
            # The list may have changed since the event was accepted.
            raise AttachmentUnavailable(f"attachment URL not allowed: {exc.reason}") from None
        try:
            async with self._client().get(url, allow_redirects=False) as resp:
                status = resp.status
                if status == 429 or status >= 500 or status == 408:
                    wait = retry_after_seconds(resp.headers.get("Retry-After"))
                    raise AttachmentRetryable(f"attachment URL answered {status}", wait)
                if not 200 <= status < 300:
                    what = "a redirect (not followed)" if 300 <= status < 400 else str(status)
                    raise AttachmentUnavailable(f"attachment URL answered {what}")
                content_type = resp.headers.get("Content-Type")
                disposition = resp.content_disposition
                served_name = disposition.filename if disposition is not None else None
                yield Download(
                    chunks=body_chunks(resp, "attachment download"),
                    content_type=resp.content_type if content_type else None,
                    # the event's name, else the server's, else the URL's last path part
                    name=attachment.name or _clean_name(served_name) or _url_name(url),
                    size=resp.content_length,
                )
        except (AttachmentRetryable, AttachmentUnavailable):
            raise
        except TimeoutError:
            raise AttachmentRetryable("attachment URL did not answer in time") from None
        except aiohttp.ClientError as exc:
            if _refused_address(exc):
                raise AttachmentUnavailable(
                    f"attachment host not fetched: {exc.__class__.__name__}"
                ) from None
            raise AttachmentRetryable(f"attachment URL unreachable: {type(exc).__name__}") from None


def policy_problem(entries: Sequence[str]) -> str | None:
    """Why an ``allowed_attachment_hosts`` list cannot be used, or None."""
    for entry in entries:
        host = normalize_host(entry)
        body = host[2:] if host.startswith("*.") else host
        if host == "*":
            continue
        if not body or "*" in body or "/" in body or (":" in body and _ip(body) is None):
            return (
                f"allowed_attachment_hosts: {entry[:100]!r} is not a host name, *.domain, "
                "an IP address or *"
            )
    return None
