"""Response elements to Telegram messages ("parts"), as pure functions: no I/O, no clock.

:func:`render` is deterministic (the core resumes a delivery by part index), never produces a
part Telegram would refuse for its length, and never produces broken HTML:

- lengths are counted in UTF-16 code units, as Telegram counts them (:func:`utf16_len`);
- long texts are cut at paragraph, line, sentence or word boundaries (:func:`split_text`);
- Markdown becomes Telegram HTML chunk by chunk, so tags never cross parts
  (:func:`markdown_to_html`);
- a payload's ``attachments`` become files sent by URL, with a link as their fallback
  (media_render.py).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

from adapters.telegram.media_render import attachment_parts
from adapters.telegram.parts import (
    MAX_CAPTION,
    MAX_TEXT,
    AlbumPart,
    Button,
    Keyboard,
    MediaPart,
    Part,
    PhotoPart,
    TextPart,
)
from bridge.media.outbound import read_attachments
from bridge.textchat.models import (
    CardElement,
    PayloadElement,
    ResponseElement,
    TextElement,
)
from bridge.textsplit import split_weighted, utf16_len, utf16_weight

MAX_BUTTONS = 100
"""Buttons in one inline keyboard."""
MAX_BUTTON_TITLE = 64
LONG_BUTTON_TITLE = 20
"""A title longer than this gets a row of its own."""
MAX_ALT_TEXT = 200
"""An image's alt text in the text that replaces a photo Telegram could not fetch."""

HTML = "HTML"
_NATIVE_PARSE_MODES = frozenset({"HTML", "MarkdownV2"})


# --- lengths and splitting ------------------------------------------------------------------


def split_text(text: str, limit: int = MAX_TEXT) -> list[str]:
    """Chunks of at most ``limit`` UTF-16 units each, cut at the most natural boundary
    (:mod:`bridge.textsplit`). No chunk is empty or blank; a blank text gives no chunks."""
    if limit < 2:
        raise ValueError("limit must be at least 2 UTF-16 units (one astral character)")
    return split_weighted(text, limit, utf16_weight)


# --- Markdown to Telegram HTML --------------------------------------------------------------


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


@dataclass(slots=True)
class _Delim:
    char: str
    length: int
    can_open: bool
    can_close: bool
    open_tag: str = ""  # set when matched as an opener
    close_tag: str = ""  # set when matched as a closer

    def render(self) -> str:
        return self.open_tag or self.close_tag or self.char * self.length


_TAGS = {("*", 2): "b", ("_", 2): "b", ("*", 1): "i", ("_", 1): "i", ("~", 2): "s"}
_LINK = re.compile(
    r"\[(?P<label>[^\[\]\n]+)\]\((?P<url>https?://(?:[^\s()]|\([^\s()]*\))+)\)", re.IGNORECASE
)
_BARE_URL = re.compile(r"https?://[^\s<>]+", re.IGNORECASE)
_ESCAPABLE = frozenset("\\`*_~[]()#+-.!|{}<>&")
_FENCE_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")


def markdown_to_html(text: str) -> str:
    """Common Markdown as Telegram HTML: ``**bold**``/``__bold__``, ``*italic*``/``_italic_``
    (never inside words: snake_case stays), ``~~strike~~``, ```` `code` ````, fenced blocks,
    and ``[label](http(s)://url)``; ``\\*`` is a literal ``*``. Everything else is escaped
    text; markers that do not pair stay literal. The result is always well-formed: tags balanced
    and properly nested."""
    tokens: list[str | _Delim] = []
    i = 0
    n = len(text)
    literal_start = 0

    def flush(upto: int) -> None:
        if upto > literal_start:
            tokens.append(_escape(text[literal_start:upto]))

    while i < n:
        char = text[i]
        if char == "`":
            run = _run_length(text, i, "`")
            close = _find_run(text, i + run, "`", run)
            if close == -1:
                i += run  # unmatched backticks stay literal
                continue
            flush(i)
            inner = text[i + run : close]
            tokens.append(_code_block(inner) if run >= 3 else _code_span(inner))
            i = literal_start = close + run
            continue
        if char == "\\" and i + 1 < n and text[i + 1] in _ESCAPABLE:
            flush(i)  # "\\*" is a literal "*", as in Markdown
            tokens.append(_escape(text[i + 1]))
            i = literal_start = i + 2
            continue
        if char == "[":
            match = _LINK.match(text, i)
            if match:
                flush(i)
                url = html.escape(match["url"], quote=True).replace("&#x27;", "'")
                tokens.append(f'<a href="{url}">{markdown_to_html(match["label"])}</a>')
                i = literal_start = match.end()
                continue
        if char in "hH":
            match = _BARE_URL.match(text, i)
            if match and (i == 0 or not text[i - 1].isalnum()):
                i += len(_trim_url(match[0]))  # a bare URL stays literal: no emphasis inside
                continue
        if char in "*_~":
            run = _run_length(text, i, char)
            if (char, run) in _TAGS:
                before = text[i - 1] if i > 0 else " "
                after = text[i + run] if i + run < n else " "
                flush(i)
                tokens.append(
                    _Delim(
                        char,
                        run,
                        can_open=not after.isspace() and not before.isalnum(),
                        can_close=not before.isspace() and not after.isalnum(),
                    )
                )
                literal_start = i + run
            i += run
            continue
        i += 1
    flush(n)
    _pair(tokens)
    return "".join(t if isinstance(t, str) else t.render() for t in tokens)


def _pair(tokens: list[str | _Delim]) -> None:
    """Match delimiters like Markdown's emphasis: a closer takes the nearest opener of the same
    kind; openers in between can no longer match (so pairs always nest, never cross)."""
    openers: list[_Delim] = []
    for token in tokens:
        if not isinstance(token, _Delim):
            continue
        if token.can_close and _close(openers, token):
            continue
        if token.can_open:
            openers.append(token)


def _close(openers: list[_Delim], closer: _Delim) -> bool:
    for k in range(len(openers) - 1, -1, -1):
        opener = openers[k]
        if opener.char == closer.char and opener.length == closer.length:
            tag = _TAGS[(closer.char, closer.length)]
            opener.open_tag, closer.close_tag = f"<{tag}>", f"</{tag}>"
            del openers[k:]
            return True
    return False


def _trim_url(url: str) -> str:
    """A bare URL without the punctuation that likely ends the sentence or the emphasis
    around it ("see https://x.org/a_b_." or "*https://x.org*")."""
    while url:
        last = url[-1]
        if last in ".,;:!?*_~'\"" or (last == ")" and url.count("(") < url.count(")")):
            url = url[:-1]
        else:
            break
    return url


def _run_length(text: str, i: int, char: str) -> int:
    j = i
    while j < len(text) and text[j] == char:
        j += 1
    return j - i


def _find_run(text: str, start: int, char: str, length: int) -> int:
    """The next run of exactly ``length`` ``char`` at or after ``start``, or -1."""
    i = text.find(char * length, start)
    while i != -1:
        run = _run_length(text, i, char)
        if run == length:
            return i
        i = text.find(char * length, i + run)
    return -1


def _code_span(inner: str) -> str:
    if not inner.strip():
        return _escape(f"`{inner}`")
    return f"<code>{_escape(inner)}</code>"


def _code_block(inner: str) -> str:
    first, newline, rest = inner.partition("\n")
    language = ""
    if newline and _FENCE_LANGUAGE.fullmatch(first.strip()):
        language, inner = first.strip(), rest
    elif newline and not first.strip():
        inner = rest
    inner = inner.removesuffix("\n")
    if not inner.strip():
        return _escape(f"```{inner}```")
    if language:
        return f'<pre><code class="language-{_escape(language)}">{_escape(inner)}</code></pre>'
    return f"<pre>{_escape(inner)}</pre>"


# --- parts ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RenderOptions:
    text_format: Literal["plain", "markdown"] = "plain"
    chips_prompt: str = "Please choose:"
    """The text carrying chips that have no message to attach to."""
    buttons_per_row: int = 2
    """Buttons in a row; a button whose title is long (> 20 characters) gets a row alone."""


def render(elements: Sequence[ResponseElement], options: RenderOptions) -> list[Part]:
    """The messages to send for ``elements``, in order. Deterministic."""
    parts: list[Part] = []
    for element in elements:
        if isinstance(element, TextElement):
            parts.extend(_text_parts(element.content, options))
        elif isinstance(element, CardElement):
            parts.extend(_card_parts(element, options))
        elif isinstance(element, PayloadElement):
            native = _native_part(element.for_platform("telegram"))
            if native is not None:
                parts.append(native)
            parts.extend(attachment_parts(read_attachments(element.content)))
            keyboard = _keyboard(element, options)
            if keyboard:
                _attach(parts, keyboard, options)
        # Unknown elements show nothing (the core logs and counts them).
    return parts


def _text_parts(text: str, options: RenderOptions) -> list[TextPart]:
    if options.text_format == "markdown":
        return [TextPart(t, mode) for t, mode in _formatted(text, MAX_TEXT, markdown_to_html)]
    return [TextPart(chunk, None) for chunk in split_text(text, MAX_TEXT)]


def _formatted(
    source: str, limit: int, convert: Callable[[str], str]
) -> list[tuple[str, str | None]]:
    """``source`` split at boundaries, each chunk converted to HTML. A chunk whose HTML is
    longer than ``limit`` (escaping grows text) is split smaller; as a last resort it is sent
    as plain text. Counting the HTML's length is stricter than Telegram (which counts the text
    after parsing), so no part is ever too long."""
    return [piece for chunk in split_text(source, limit) for piece in _fit(chunk, limit, convert)]


def _fit(chunk: str, limit: int, convert: Callable[[str], str]) -> list[tuple[str, str | None]]:
    """``chunk`` converted to HTML in as few pieces as fit ``limit`` (halving the source up to
    four times), else as plain text."""
    size = utf16_len(chunk)
    for halvings in range(5):
        source_limit = max(2, size >> halvings)
        pieces = [convert(piece) for piece in split_text(chunk, source_limit)]
        if all(utf16_len(piece) <= limit for piece in pieces):
            return [(piece, HTML) for piece in pieces]
    return [(plain, None) for plain in split_text(chunk, limit)]


# --- cards ----------------------------------------------------------------------------------


def _card_parts(card: CardElement, options: RenderOptions) -> list[Part]:
    """A card: its title, subtitle and content (one a line) as the caption of its photo, the
    overflow as text parts; without a photo Telegram could fetch, text parts only."""
    fields = [f.strip() for f in (card.title, card.subtitle, card.content) if f and f.strip()]
    caption = "\n".join(fields)
    title = (card.title or "").strip()
    markdown = options.text_format == "markdown"
    image = card.image
    url = (image.url or "").strip() if image is not None else ""
    if image is None or not url.lower().startswith(("http://", "https://")):
        return list(_card_text(caption, title, markdown))
    head: TextPart | None = None
    rest: list[TextPart] = []
    if caption:
        head, remainder = _card_caption(caption, title, markdown)
        rest = _card_text(remainder, "", markdown)
    alt = (image.accessibility_text or "").strip() or "image"
    photo = PhotoPart(
        url=url,
        caption=head.text if head else None,
        parse_mode=head.parse_mode if head else None,
        fallback=_fallback(head, alt, url),
    )
    return [photo, *rest]


def _card_caption(caption: str, title: str, markdown: bool) -> tuple[TextPart, str]:
    """The caption that fits a photo (≤ 1024 units, counted on the HTML when formatted) and the
    text left over."""
    limit = MAX_CAPTION
    head = split_text(caption, limit)[0]
    if not markdown:
        return TextPart(head, None), caption[len(head) :].lstrip()
    formatted = _card_html(head, title)
    while utf16_len(formatted) > MAX_CAPTION and limit > 64:
        limit //= 2
        head = split_text(caption, limit)[0]
        formatted = _card_html(head, title)
    part = TextPart(formatted, HTML)
    if utf16_len(formatted) > MAX_CAPTION:  # cannot happen: 64 units escape to far less
        part = TextPart(head, None)
    return part, caption[len(head) :].lstrip()


def _card_text(text: str, title: str, markdown: bool) -> list[TextPart]:
    """A card's text (or what is left of it) as text parts; ``title`` is bold where ``text``
    starts with it."""
    if not markdown:
        return [TextPart(chunk, None) for chunk in split_text(text, MAX_TEXT)]
    convert = partial(_card_piece_html, whole=text, title=title)
    return [TextPart(t, mode) for t, mode in _formatted(text, MAX_TEXT, convert)]


def _card_piece_html(piece: str, whole: str, title: str) -> str:
    # Only the piece at the start of the card's text carries the title.
    return _card_html(piece, title if whole.startswith(piece) else "")


def _card_html(chunk: str, title: str) -> str:
    """A card's text as HTML: everything escaped, ``title`` in bold where ``chunk`` starts
    with it (or all of ``chunk`` when it is the title's beginning)."""
    if title:
        if chunk.startswith(title):
            return f"<b>{_escape(title)}</b>{_escape(chunk[len(title) :])}"
        if title.startswith(chunk):
            return f"<b>{_escape(chunk)}</b>"
    return _escape(chunk)


def _fallback(head: TextPart | None, alt: str, url: str) -> TextPart:
    """The text sent when Telegram cannot fetch the photo: the caption, then
    ``[image: <alt>] <url>``; the URL is left out if it would make the text too long."""
    if len(alt) > MAX_ALT_TEXT:
        alt = alt[: MAX_ALT_TEXT - 1].rstrip() + "…"
    mode = head.parse_mode if head else None
    for line in (f"[image: {alt}] {url}", f"[image: {alt}]"):
        if mode == HTML:
            line = _escape(line)
        text = f"{head.text}\n{line}" if head else line
        if utf16_len(text) <= MAX_TEXT:
            break
    return TextPart(text, mode)


# --- payloads -------------------------------------------------------------------------------


def _native_part(native: Any) -> TextPart | None:
    """A payload's ``telegram`` content: ``{"text": ..., "parse_mode"?: "HTML"|"MarkdownV2"}``,
    validated; anything else in it is ignored, anything invalid drops it."""
    if not isinstance(native, dict):
        return None
    text = native.get("text")
    if not isinstance(text, str) or not text.strip() or utf16_len(text) > MAX_TEXT:
        return None
    parse_mode = native.get("parse_mode")
    if parse_mode is not None and parse_mode not in _NATIVE_PARSE_MODES:
        return None
    return TextPart(text, parse_mode)


def _keyboard(payload: PayloadElement, options: RenderOptions) -> Keyboard:
    buttons: list[Button] = []
    for chip in payload.chips():
        title = (chip.title or "").strip() or chip.value.strip()
        if not title or not chip.value:
            continue
        if len(title) > MAX_BUTTON_TITLE:
            title = title[: MAX_BUTTON_TITLE - 1].rstrip() + "…"
        buttons.append(Button(title, chip.value))
        if len(buttons) == MAX_BUTTONS:
            break
    per_row = max(1, min(options.buttons_per_row, 8))
    rows: list[tuple[Button, ...]] = []
    row: list[Button] = []
    for button in buttons:
        if len(button.title) > LONG_BUTTON_TITLE:
            if row:
                rows.append(tuple(row))
                row = []
            rows.append((button,))
            continue
        row.append(button)
        if len(row) == per_row:
            rows.append(tuple(row))
            row = []
    if row:
        rows.append(tuple(row))
    return tuple(rows)


def _attach(parts: list[Part], keyboard: Keyboard, options: RenderOptions) -> None:
    """Chips go on the last part when it has no buttons yet (and can carry some: an album
    cannot), else on a prompt of their own."""
    if parts and not parts[-1].buttons and not isinstance(parts[-1], AlbumPart):
        last = parts[-1]
        if isinstance(last, PhotoPart | MediaPart):
            parts[-1] = replace(
                last, buttons=keyboard, fallback=replace(last.fallback, buttons=keyboard)
            )
        else:
            parts[-1] = replace(last, buttons=keyboard)
        return
    prompt = options.chips_prompt if options.chips_prompt.strip() else "Please choose:"
    parts.append(TextPart(prompt, None, keyboard))
