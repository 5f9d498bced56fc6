"""What Parloa is told about the attachments of one message: the text and the context items
of the contract (README, "Media"), from what the worker found out. Pure functions."""

from __future__ import annotations

import mimetypes
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.media.attachments import Attachment, AttachmentType
from bridge.textchat.context import MAX_CONTEXT_STRING

ContextValue = str | int | float | bool
OCTET_STREAM = "application/octet-stream"


def whole_urls(urls: Sequence[str], limit: int) -> str:
    """The URLs space-separated, as many whole ones as fit in ``limit`` characters (a context
    string is cut at its limit: a cut URL would be a broken one)."""
    out = ""
    for url in urls:
        joined = f"{out} {url}" if out else url
        if len(joined) > limit:
            break
        out = joined
    return out


@dataclass(frozen=True, slots=True)
class Fetched:
    """One attachment as the worker leaves it: stored (``url`` to reach it), too large, or
    not to be had (gone, refused, the retries spent); locations and contacts have no bytes."""

    attachment: Attachment
    url: str | None = None
    mime_type: str | None = None
    size: int | None = None
    name: str | None = None
    too_large: bool = False


def content_type(declared: str | None, reported: str | None, name: str | None) -> str:
    """The platform's answer, else what the event said, else a guess from the name."""
    for value in (declared, reported):
        if value and "/" in value:
            return value.split(";")[0].strip().lower()[:255]
    guessed = mimetypes.guess_type(name or "")[0]
    return guessed or OCTET_STREAM


def text_for(
    caption: str,
    first: AttachmentType | None,
    transcript: str | None,
    placeholders: Mapping[str, str],
) -> str:
    """The message text: the caption, else the transcript, else the placeholder of the first
    attachment's type."""
    if caption.strip():
        return caption
    if transcript:
        return transcript
    if first is None:
        return caption
    return placeholders.get(first.value, f"[{first.value}]")


def context_items(fetched: Sequence[Fetched], transcript: bool = False) -> dict[str, ContextValue]:
    """The contract's items: those of the first attachment, the count and every URL when
    there are several, ``transcript`` when the text came from speech-to-text."""
    if not fetched:
        return {}
    first = fetched[0]
    a = first.attachment
    items: dict[str, ContextValue] = {"attachmentType": a.type.value}
    if a.type is AttachmentType.LOCATION:
        if a.latitude is not None and a.longitude is not None:
            items["latitude"] = a.latitude
            items["longitude"] = a.longitude
    elif a.type is AttachmentType.CONTACT:
        if a.contact_name:
            items["contactName"] = a.contact_name
        if a.contact_phone:
            items["contactPhone"] = a.contact_phone
    else:
        if first.url is not None:
            items["attachmentUrl"] = first.url
        mime = first.mime_type or a.mime_type
        if mime:
            items["attachmentMimeType"] = mime
        size = first.size if first.size is not None else a.size
        if size is not None:
            items["attachmentSize"] = size
        name = first.name or a.name
        if name:
            items["attachmentName"] = name
        if first.too_large:
            items["attachmentTooLarge"] = True
    if len(fetched) > 1:
        items["attachmentCount"] = len(fetched)
        urls = whole_urls([f.url for f in fetched if f.url], MAX_CONTEXT_STRING)
        if urls:
            items["attachmentUrls"] = urls
    if transcript:
        items["transcript"] = True
    return items
