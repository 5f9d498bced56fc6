"""Response elements to Slack messages (Block Kit), as a pure, deterministic function.

- texts become ``section`` blocks of ``mrkdwn`` (``&``, ``<``, ``>`` escaped, so a bot's
  ``*bold*`` and ``_italic_`` still show), each at most :data:`MAX_SECTION_TEXT` long, cut at
  paragraph, line, sentence or word boundaries (:func:`split_text`), never inside an entity;
- chips become buttons (``action_id`` ``chip_<n>``, unique in their message) in ``actions``
  blocks; a chip set stays in one message, after a prompt when it would begin one;
- cards become a section (``*title*``, ``_subtitle_``, content) and an ``image`` block;
- a payload's ``attachments`` (:func:`bridge.media.outbound.read_attachments`): images as
  ``image`` blocks (their caption in a section after them), files, audio and video as links;
- a payload's ``slack`` content with valid-looking ``blocks`` is sent as a message of its own;
- all blocks go into as few messages as possible (≤ :data:`MAX_BLOCKS` each), each with a
  notification ``text`` of its blocks' text;
- :func:`without_images` is a message with its images as links, for when Slack cannot fetch
  an image (it refuses the whole message).

Lengths are counted in UTF-16 code units, which is never less than the characters Slack counts.
"""

from __future__ import annotations

import copy
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.media.outbound import OutboundAttachment, OutboundKind, read_attachments
from bridge.textchat.models import (
    CardElement,
    PayloadElement,
    ResponseElement,
    TextElement,
)
from bridge.textsplit import (
    prefix_sums,
    split_weighted,
    splits_cluster,
    utf16_len,
    utf16_weight,
)

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FALLBACK_TEXT = 3000
MAX_ACTIONS = 25
"""Elements in one actions block."""
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_CHIPS = 100
"""Chips shown per delivery; more are dropped."""
MAX_ALT_TEXT = 2000
MAX_IMAGE_URL = 3000
MAX_IMAGE_TITLE = 2000
MAX_CARD_HEADING = 1000
"""A card's title and subtitle each (escaped), so that both fit a section with room to spare."""
MAX_PRESSED_TITLE = 200
NATIVE_FALLBACK = "New message"
"""The notification text of a payload's own blocks that come without a ``text``."""
DEFAULT_CHIPS_PROMPT = "Please choose:"
CHIP_ACTION_PREFIX = "chip_"

_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}

Block = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """One ``chat.postMessage``: ``text`` is the notification fallback (mrkdwn), ``blocks``
    what is shown."""

    text: str
    blocks: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class RenderOptions:
    chips_prompt: str = DEFAULT_CHIPS_PROMPT
    """The section shown above chips that would otherwise begin a message."""


# --- escaping and lengths -------------------------------------------------------------------


def escape_mrkdwn(text: str) -> str:
    """Slack's escaping of message text: ``&``, ``<`` and ``>`` as entities; nothing else."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


units = utf16_len
_plain_weight = utf16_weight


def _escaped_weight(char: str) -> int:
    """The UTF-16 length of ``char`` once escaped."""
    entity = _ENTITIES.get(char)
    return len(entity) if entity is not None else _plain_weight(char)


def _clip(text: str, limit: int, weight: Callable[[str], int] = _plain_weight) -> str:
    """``text`` if it weighs at most ``limit``, else its beginning and "…" within ``limit``."""
    prefix = prefix_sums(text, weight)
    if prefix[-1] <= limit:
        return text
    end = bisect_left(prefix, limit) if limit > 0 else 0  # first i with prefix[i] >= limit
    if prefix[end] > limit - 1:
        end -= 1
    while end > 0 and splits_cluster(text, end):
        end -= 1
    return text[: max(end, 0)].rstrip() + "…"


def _cut_mrkdwn(text: str, limit: int) -> str:
    """Already escaped mrkdwn cut to ``limit`` units with "…", never inside an entity."""
    if units(text) <= limit:
        return text
    prefix = prefix_sums(text, _plain_weight)
    end = bisect_left(prefix, limit)
    if prefix[end] > limit - 1:
        end -= 1
    head = text[:end]
    amp = head.rfind("&", max(0, len(head) - 4))
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]  # a cut entity ("&am") would show as text
    while head and splits_cluster(text, len(head)):
        head = head[:-1]
    return head.rstrip() + "…"


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


# --- splitting ------------------------------------------------------------------------------


def split_text(text: str, limit: int = MAX_SECTION_TEXT) -> list[str]:
    """``text`` in chunks that are at most ``limit`` UTF-16 units long *once escaped*
    (:func:`escape_mrkdwn`): escaping each chunk never cuts an entity nor overflows. Cut at
    the most natural boundary (:mod:`bridge.textsplit`); whitespace at the ends is dropped. A
    blank text gives no chunks."""
    if limit < 5:
        raise ValueError("limit must be at least 5 (the length of '&amp;')")
    return split_weighted(text.strip(), limit, _escaped_weight)


# --- blocks ---------------------------------------------------------------------------------


def _section(mrkdwn: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": mrkdwn}}


@dataclass(slots=True)
class _Item:
    block: Block
    fallback: str  # escaped mrkdwn for the notification text; "" adds nothing


@dataclass(slots=True)
class _Builder:
    options: RenderOptions
    messages: list[SlackMessage] = field(default_factory=list)
    current: list[_Item] = field(default_factory=list)
    chips_in_message: int = 0
    chips_total: int = 0

    def add(self, items: Sequence[_Item], together: bool = False) -> None:
        """Append blocks; ``together``: in one message when they fit one."""
        if together and len(self.current) + len(items) > MAX_BLOCKS >= len(items):
            self.flush()
        for item in items:
            if len(self.current) == MAX_BLOCKS:
                self.flush()
            self.current.append(item)

    def add_message(self, message: SlackMessage) -> None:
        self.flush()
        self.messages.append(message)

    def flush(self) -> None:
        if not self.current:
            return
        pieces = [item.fallback for item in self.current if item.fallback]
        text = _cut_mrkdwn("\n\n".join(pieces), MAX_FALLBACK_TEXT) if pieces else ""
        if not text:
            text = escape_mrkdwn(_prompt(self.options))
        self.messages.append(SlackMessage(text, tuple(item.block for item in self.current)))
        self.current = []
        self.chips_in_message = 0


def _prompt(options: RenderOptions) -> str:
    prompt = options.chips_prompt.strip()
    return _clip(prompt, MAX_SECTION_TEXT, _escaped_weight) if prompt else DEFAULT_CHIPS_PROMPT


def render(elements: Sequence[ResponseElement], options: RenderOptions) -> list[SlackMessage]:
    """The messages to send for ``elements``, in order. Deterministic; no message is empty."""
    builder = _Builder(options)
    for element in elements:
        if isinstance(element, TextElement):
            builder.add(_text_items(element.content))
        elif isinstance(element, CardElement):
            builder.add(_card_items(element), together=True)
        elif isinstance(element, PayloadElement):
            for attachment in read_attachments(element.content):
                builder.add(_attachment_items(attachment), together=True)
            native = _native_message(element)
            if native is not None:
                builder.add_message(native)
            _add_chips(builder, element)
        # Unknown elements show nothing (the core logs and counts them).
    builder.flush()
    return builder.messages


def _text_items(text: str) -> list[_Item]:
    items = []
    for chunk in split_text(text, MAX_SECTION_TEXT):
        escaped = escape_mrkdwn(chunk)
        items.append(_Item(_section(escaped), escaped))
    return items


# --- cards ----------------------------------------------------------------------------------


def _card_items(card: CardElement) -> list[_Item]:
    """A section (``*title*``, ``_subtitle_``, content, one a line; split like text when
    longer than a section) and the card's image (http/https only) after it."""
    title = _one_line(card.title)
    subtitle = _one_line(card.subtitle)
    content = (card.content or "").strip()
    heading = []
    if title:
        heading.append(f"*{escape_mrkdwn(_clip(title, MAX_CARD_HEADING, _escaped_weight))}*")
    if subtitle:
        heading.append(f"_{escape_mrkdwn(_clip(subtitle, MAX_CARD_HEADING, _escaped_weight))}_")
    items = [_Item(_section(text), text) for text in _headed("\n".join(heading), content)]
    image = card.image
    url = (image.url or "").strip() if image is not None else ""
    if image is not None and _image_url_ok(url):
        alt = (image.accessibility_text or "").strip() or title or "image"
        alt = _clip(alt, MAX_ALT_TEXT)
        block: Block = {"type": "image", "image_url": url, "alt_text": alt}
        items.append(_Item(block, "" if items else escape_mrkdwn(alt)))
    return items


def _headed(head: str, content: str) -> list[str]:
    """Section texts: ``head`` (escaped mrkdwn) and as much of ``content`` (plain) as fits
    share the first; the rest is split like text."""
    texts = [head] if head else []
    if head and content:
        first = split_text(content, MAX_SECTION_TEXT - units(head) - 1)[0]
        texts = [f"{head}\n{escape_mrkdwn(first)}"]
        content = content[len(first) :].strip()
    texts.extend(escape_mrkdwn(chunk) for chunk in split_text(content, MAX_SECTION_TEXT))
    return texts


def _image_url_ok(url: str) -> bool:
    return (
        url.lower().startswith(("http://", "https://"))
        and len(url) > len("https://")
        and units(url) <= MAX_IMAGE_URL
        and not any(c.isspace() for c in url)
    )


# --- attachments ----------------------------------------------------------------------------


def _attachment_items(attachment: OutboundAttachment) -> list[_Item]:
    """An image (an http(s) URL Slack takes) as an ``image`` block titled with its name, its
    caption in a section after it; anything else as a link with the caption below it."""
    caption = (attachment.caption or "").strip()
    name = _one_line(attachment.name)
    if attachment.kind is OutboundKind.IMAGE and _image_url_ok(attachment.url):
        alt = _clip(name or _one_line(caption) or "image", MAX_ALT_TEXT)
        block: Block = {"type": "image", "image_url": attachment.url, "alt_text": alt}
        if name:
            block["title"] = {"type": "plain_text", "text": _clip(name, MAX_IMAGE_TITLE)}
        items = [_Item(block, escape_mrkdwn(_clip(_one_line(caption) or alt, MAX_ALT_TEXT)))]
        items.extend(_Item(_section(text), "") for text in _headed("", caption))
        return items
    link = _link(attachment.url, _one_line(attachment.label))
    return [_Item(_section(text), text) for text in _headed(link, caption)]


def _link(url: str, label: str, room: int = MAX_SECTION_TEXT) -> str:
    """``<url|label>`` in mrkdwn within ``room`` units (the label cut to fit; just ``<url>``
    when nothing of it fits)."""
    target = escape_mrkdwn(url).replace("|", "%7C")
    target = "".join("%20" if c.isspace() else c for c in target)
    left = room - units(target) - 3  # "<", "|", ">"
    label = _clip(label, left, _escaped_weight) if left > 1 else ""
    return f"<{target}|{escape_mrkdwn(label)}>" if label else f"<{target}>"


def without_images(message: SlackMessage) -> SlackMessage | None:
    """``message`` with each ``image`` block as a section linking to the image (its title,
    else its alt text, as the label); None when it has no image block."""
    blocks: list[Block] = []
    changed = False
    for block in message.blocks:
        url = block.get("image_url") if block.get("type") == "image" else None
        if not isinstance(url, str):
            blocks.append(copy.deepcopy(block))
            continue
        title = block.get("title")
        label = title.get("text") if isinstance(title, Mapping) else None
        if not isinstance(label, str) or not label.strip():
            label = block.get("alt_text") if isinstance(block.get("alt_text"), str) else ""
        blocks.append(_section(_link(url, _one_line(label) or "image")))
        changed = True
    return SlackMessage(message.text, tuple(blocks)) if changed else None


# --- payloads -------------------------------------------------------------------------------


def _native_message(payload: PayloadElement) -> SlackMessage | None:
    """A payload's ``slack`` content ``{"blocks": [...], "text"?: "..."}`` as a message of
    its own: 1 to 50 objects with a string ``type`` each (not validated deeper: Slack refuses
    what is wrong). Anything else is ignored."""
    native = payload.for_platform("slack")
    if not isinstance(native, dict):
        return None
    blocks = native.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= MAX_BLOCKS:
        return None
    if not all(
        isinstance(b, dict) and isinstance(b.get("type"), str) and b["type"] for b in blocks
    ):
        return None
    text = native.get("text")
    fallback = (
        _cut_mrkdwn(text.strip(), MAX_FALLBACK_TEXT)
        if isinstance(text, str) and text.strip()
        else NATIVE_FALLBACK
    )
    return SlackMessage(fallback, tuple(copy.deepcopy(b) for b in blocks))


def _add_chips(builder: _Builder, payload: PayloadElement) -> None:
    """The payload's chips as buttons, ≤ 25 per actions block, all in one message; a prompt
    first when they would begin a message. At most :data:`MAX_CHIPS` per delivery."""
    buttons: list[tuple[str, str]] = []
    for chip in payload.chips():
        if builder.chips_total + len(buttons) >= MAX_CHIPS:
            break
        title = _one_line(chip.title) or _one_line(chip.value)
        if not title or not chip.value:
            continue
        # Parloa chips are short; a value over Slack's limit is cut, and the press sends the cut
        # value (a button whose value is too long would make Slack refuse the whole message).
        value = _clip_exact(chip.value, MAX_BUTTON_VALUE)
        buttons.append((_clip(title, MAX_BUTTON_TEXT), value))
    if not buttons:
        return
    rows = [buttons[i : i + MAX_ACTIONS] for i in range(0, len(buttons), MAX_ACTIONS)]
    if len(builder.current) + len(rows) > MAX_BLOCKS:
        builder.flush()
    items: list[_Item] = []
    if not builder.current:
        prompt = escape_mrkdwn(_prompt(builder.options))
        items.append(_Item(_section(prompt), prompt))
    index = builder.chips_in_message
    for row in rows:
        elements = []
        for title, value in row:
            elements.append(
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": title, "emoji": True},
                    "value": value,
                    "action_id": f"{CHIP_ACTION_PREFIX}{index}",
                }
            )
            index += 1
        items.append(_Item({"type": "actions", "elements": elements}, ""))
    builder.add(items, together=True)
    builder.chips_in_message = index
    builder.chips_total += len(buttons)


def _clip_exact(text: str, limit: int) -> str:
    """The first ``limit`` UTF-16 units of ``text`` (no ellipsis: a value, not a display)."""
    prefix = prefix_sums(text, _plain_weight)
    if prefix[-1] <= limit:
        return text
    end = bisect_left(prefix, limit + 1) - 1
    return text[:end]


# --- after a press --------------------------------------------------------------------------


def pressed_blocks(blocks: Sequence[Mapping[str, Any]], chosen_title: str) -> list[dict[str, Any]]:
    """The blocks of a message after one of its chips was pressed: its ``actions`` blocks
    replaced by one ``context`` block "✓ <chosen>" (where the first was), so nothing can be
    pressed twice; everything else kept (copied)."""
    title = _clip(_one_line(chosen_title), MAX_PRESSED_TITLE, _escaped_weight)
    mark = f"✓ {escape_mrkdwn(title)}" if title else "✓"
    out: list[dict[str, Any]] = []
    replaced = False
    for block in blocks:
        if isinstance(block, Mapping) and block.get("type") == "actions":
            if not replaced:
                out.append({"type": "context", "elements": [{"type": "mrkdwn", "text": mark}]})
                replaced = True
            continue
        out.append(copy.deepcopy(dict(block)))
    return out
