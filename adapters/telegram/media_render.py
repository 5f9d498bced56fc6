"""A payload's ``attachments`` (bridge/media/outbound.py) as Telegram parts. Pure.

Each attachment is sent by its URL, which Telegram fetches: an image with sendPhoto, a file
with sendDocument, audio with sendAudio, a video with sendVideo, its caption on it (a caption
longer than Telegram's 1024 UTF-16 units goes on in text after it). Two or more images in a row
are one album (sendMediaGroup). Every part carries a fallback, a text with the caption and a
link (``[image: <name>] <url>``), sent instead when Telegram cannot fetch the URL (Telegram
fetches documents by URL only for PDF, ZIP and GIF files, for instance).
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.telegram.parts import (
    MAX_CAPTION,
    MAX_TEXT,
    AlbumItem,
    AlbumPart,
    MediaKind,
    MediaPart,
    Part,
    TextPart,
)
from bridge.media.outbound import OutboundAttachment, OutboundKind
from bridge.textsplit import split_weighted, utf16_len, utf16_weight

_METHOD_KIND: dict[OutboundKind, MediaKind] = {
    OutboundKind.IMAGE: "photo",
    OutboundKind.FILE: "document",
    OutboundKind.AUDIO: "audio",
    OutboundKind.VIDEO: "video",
}
#: Telegram's album size
MAX_ALBUM = 10


def _split(text: str, limit: int) -> list[str]:
    return split_weighted(text, limit, utf16_weight)


def _caption(attachment: OutboundAttachment) -> tuple[str | None, list[TextPart]]:
    """The caption that fits on the file, and the text parts with the rest of it."""
    if not attachment.caption or not attachment.caption.strip():
        return None, []
    text = attachment.caption.strip()
    head = _split(text, MAX_CAPTION)[0]
    rest = text[len(head) :].strip()
    return head, [TextPart(chunk, None) for chunk in _split(rest, MAX_TEXT)] if rest else []


def link(attachment: OutboundAttachment) -> str:
    """The line that stands for an attachment Telegram could not fetch."""
    return f"[{attachment.kind.value}: {attachment.label}] {attachment.url}"


def _single(attachment: OutboundAttachment) -> list[Part]:
    caption, rest = _caption(attachment)
    fallback = f"{caption}\n{link(attachment)}" if caption else link(attachment)
    part = MediaPart(
        kind=_METHOD_KIND[attachment.kind],
        url=attachment.url,
        caption=caption,
        fallback=TextPart(fallback, None),
    )
    return [part, *rest]


def _album_fallback(items: Sequence[tuple[OutboundAttachment, str | None]]) -> TextPart:
    """Every image's caption and link; without the captions when that is too long, and as
    many links as fit when even that is."""
    with_captions = "\n".join(f"{c}\n{link(a)}" if c else link(a) for a, c in items)
    if utf16_len(with_captions) <= MAX_TEXT:
        return TextPart(with_captions, None)
    lines: list[str] = []
    for attachment, _ in items:
        candidate = "\n".join([*lines, link(attachment)])
        if utf16_len(candidate) > MAX_TEXT:
            break
        lines.append(link(attachment))
    return TextPart("\n".join(lines), None)  # one link always fits: URLs are short enough


def _album(images: Sequence[OutboundAttachment]) -> list[Part]:
    captioned = [(image, *_caption(image)) for image in images]
    part = AlbumPart(
        items=tuple(AlbumItem(image.url, caption) for image, caption, _ in captioned),
        fallback=_album_fallback([(image, caption) for image, caption, _ in captioned]),
    )
    return [part, *(text for _, _, rest in captioned for text in rest)]


def attachment_parts(attachments: Sequence[OutboundAttachment]) -> list[Part]:
    """The parts for ``attachments``, in order. Deterministic."""
    parts: list[Part] = []
    i = 0
    while i < len(attachments):
        run = 0
        while (
            i + run < len(attachments)
            and run < MAX_ALBUM
            and attachments[i + run].kind is OutboundKind.IMAGE
        ):
            run += 1
        if run >= 2:
            parts.extend(_album(attachments[i : i + run]))
            i += run
        else:
            parts.extend(_single(attachments[i]))
            i += 1
    return parts
