"""The messages a reply renders to ("parts"): one part is one send call, so the core can
resume a delivery by part index (bridge/channel.py, ``Delivery``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MAX_TEXT = 4096
"""A message's text, in UTF-16 code units."""
MAX_CAPTION = 1024
"""A photo's (any file's) caption, in UTF-16 code units."""


@dataclass(frozen=True, slots=True)
class Button:
    """An inline button: ``title`` is shown (≤ 64 characters), ``value`` is what a press sends."""

    title: str
    value: str


Keyboard = tuple[tuple[Button, ...], ...]


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str
    parse_mode: str | None
    buttons: Keyboard = ()


@dataclass(frozen=True, slots=True)
class PhotoPart:
    """A photo by URL. ``fallback`` is sent instead when Telegram cannot fetch the photo."""

    url: str
    caption: str | None
    parse_mode: str | None
    fallback: TextPart
    buttons: Keyboard = ()


MediaKind = Literal["photo", "document", "audio", "video"]


@dataclass(frozen=True, slots=True)
class MediaPart:
    """A file by URL, sent with ``send<Kind>`` (sendPhoto, sendDocument, sendAudio,
    sendVideo); ``fallback`` (a link) is sent instead when Telegram cannot fetch it."""

    kind: MediaKind
    url: str
    caption: str | None
    fallback: TextPart
    buttons: Keyboard = ()


@dataclass(frozen=True, slots=True)
class AlbumItem:
    url: str
    caption: str | None


@dataclass(frozen=True, slots=True)
class AlbumPart:
    """Several photos in one sendMediaGroup (2-10); ``fallback`` (their links) is sent instead
    when Telegram cannot fetch one of them. An album carries no buttons: Telegram has none
    for it, so chips go on a prompt of their own."""

    items: tuple[AlbumItem, ...]
    fallback: TextPart

    @property
    def buttons(self) -> Keyboard:
        return ()


Part = TextPart | PhotoPart | MediaPart | AlbumPart
