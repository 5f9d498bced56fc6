"""Splitting long text into chunks that fit a platform's limit, at the most natural boundary.

Every platform measures differently (Telegram: UTF-16 code units; Slack: UTF-16 units of the
escaped text), so the measure is a per-character weight. A chunk ends at the last paragraph
break within the limit, else line break, else sentence end, else whitespace, else anywhere but
inside a visible character (combining marks, emoji sequences, flags) when avoidable — never
inside a code point. A boundary that would leave a chunk shorter than half the limit yields to
a later one of the next kinds ("Title\\nlong text…" is not cut right after "Title").
Whitespace at a cut is dropped; nothing else is. No chunk is blank."""

from __future__ import annotations

import unicodedata
from bisect import bisect_left
from collections.abc import Callable

Weight = Callable[[str], int]

_SENTENCE_ENDS = (". ", "! ", "? ", "… ")
# A cut right before one of these would split what the reader sees as one character.
_JOINERS = frozenset({"\u200d", "\u20e3"})


def utf16_weight(char: str) -> int:
    """UTF-16 code units of one character (an emoji like 🎉 counts 2)."""
    return 2 if ord(char) > 0xFFFF else 1


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def prefix_sums(text: str, weight: Weight) -> list[int]:
    """``prefix[i]`` is the weight of ``text[:i]``."""
    prefix = [0] * (len(text) + 1)
    total = 0
    for i, char in enumerate(text):
        total += weight(char)
        prefix[i + 1] = total
    return prefix


def split_weighted(text: str, limit: int, weight: Weight = utf16_weight) -> list[str]:
    """Chunks of ``text`` each weighing at most ``limit`` (see the module docstring)."""
    if not text.strip():
        return []
    prefix = prefix_sums(text, weight)
    if prefix[-1] <= limit:
        return [text]
    chunks: list[str] = []
    n = len(text)
    pos = 0
    while pos < n:
        # The longest window text[pos:end] within the limit.
        end = bisect_left(prefix, prefix[pos] + limit + 1, lo=pos) - 1
        if end >= n:
            chunk = text[pos:]
            if chunk.strip():
                chunks.append(chunk)
            break
        half = bisect_left(prefix, prefix[pos] + limit // 2, lo=pos)
        cut = _boundary(text, pos, end, half)
        chunk = text[pos:cut].rstrip()
        if chunk:
            chunks.append(chunk)
        pos = cut
        while pos < n and text[pos].isspace():
            pos += 1
    return chunks


def _boundary(text: str, pos: int, end: int, half: int) -> int:
    """Where to cut the window ``text[pos:end]`` (``end < len(text)``); a separator may reach
    past ``end``: it is dropped anyway. The chunk before the cut is never blank."""

    def usable(cut: int) -> int | None:
        return cut if cut > pos and text[pos:cut].strip() else None

    sentence = max(text.rfind(ending, pos, end + 1) for ending in _SENTENCE_ENDS)
    space = next((c for c in range(end, pos, -1) if text[c].isspace()), -1)
    candidates = [
        usable(text.rfind("\n\n", pos, end + 2)),
        usable(text.rfind("\n", pos, end + 1)),
        usable(sentence + 1) if sentence != -1 else None,
        usable(space),
    ]
    for cut in candidates:
        if cut is not None and cut >= half:
            return cut
    for cut in candidates:
        if cut is not None:
            return cut
    return hard_cut(text, pos, end)


def hard_cut(text: str, start: int, end: int) -> int:
    """A cut in ``(start, end]`` that does not split a visible character when a better place is
    within a few characters; never inside a code point (so never inside a surrogate pair)."""
    for cut in range(end, max(start, end - 32), -1):
        if not splits_cluster(text, cut):
            return cut
    return end


def _joins_previous(char: str) -> bool:
    code = ord(char)
    return (
        char in _JOINERS
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0xE0100 <= code <= 0xE01EF
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # tag sequences (flags of regions)
        or unicodedata.combining(char) != 0
    )


def _is_regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def splits_cluster(text: str, cut: int) -> bool:
    """Whether a cut before ``text[cut]`` separates what the reader sees as one character:
    a combining mark, a variation selector, a skin tone or a ZWJ sequence, or a flag."""
    if cut <= 0 or cut >= len(text):
        return False
    if _joins_previous(text[cut]) or text[cut - 1] == "\u200d":
        return True
    if _is_regional(text[cut]):
        run = 0
        while cut - run - 1 >= 0 and _is_regional(text[cut - run - 1]):
            run += 1
        return run % 2 == 1
    return False
