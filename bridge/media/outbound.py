"""The outbound half of the media contract: a Parloa ``payload`` element whose content has
``attachments`` — ``[{"type": "image" | "file" | "audio" | "video", "url", "name"?,
"caption"?}]`` — read into typed values every adapter renders natively. The bridge never
downloads these: the platform (or the user's browser) fetches the URL."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

#: at most this many attachments are read from one payload (Telegram's media group limit)
MAX_OUTBOUND_ATTACHMENTS = 10
MAX_NAME = 255
MAX_CAPTION = 1024


class OutboundKind(enum.StrEnum):
    IMAGE = "image"
    FILE = "file"
    AUDIO = "audio"
    VIDEO = "video"


@dataclass(frozen=True, slots=True)
class OutboundAttachment:
    kind: OutboundKind
    url: str
    name: str | None = None
    caption: str | None = None

    @property
    def label(self) -> str:
        """What a link to it says: its name, else the last part of its URL's path."""
        if self.name:
            return self.name
        tail = urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1]
        return tail or self.url


def _text(value: Any, limit: int) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value[:limit]


def _web_url(value: Any) -> str | None:
    """An absolute http(s) URL, or None."""
    if not isinstance(value, str) or len(value) > 2048:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return value.strip()


def read_attachments(content: Mapping[str, Any] | Any) -> list[OutboundAttachment]:
    """The attachments a payload's content asks to send, in order; entries that are not
    objects, name an unknown type or have no absolute http(s) URL are left out (the rest of
    the payload is still rendered)."""
    if not isinstance(content, Mapping):
        return []
    raw = content.get("attachments")
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        return []
    found: list[OutboundAttachment] = []
    for entry in raw:
        if len(found) >= MAX_OUTBOUND_ATTACHMENTS:
            break
        if not isinstance(entry, Mapping):
            continue
        try:
            kind = OutboundKind(str(entry.get("type")))
        except ValueError:
            continue
        url = _web_url(entry.get("url"))
        if url is None:
            continue
        found.append(
            OutboundAttachment(
                kind,
                url,
                _text(entry.get("name"), MAX_NAME),
                _text(entry.get("caption"), MAX_CAPTION),
            )
        )
    return found
