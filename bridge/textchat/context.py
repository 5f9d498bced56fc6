"""Context items within the spec's limits: at most 100 items, string values at most 1000
characters, values only strings, numbers or booleans. These helpers clamp; they never fail."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping

from bridge.textchat.models import ContextItem, ContextValue

MAX_CONTEXT_ITEMS = 100
MAX_CONTEXT_STRING = 1000

ContextSource = Mapping[str, object] | Iterable[tuple[str, object]]


def clamp_value(value: object) -> ContextValue | None:
    """A value the spec accepts, or None when there is nothing worth sending."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        # Beyond 2**53 a JSON number loses precision (and huge ints cannot even be encoded).
        if abs(value) <= 2**53:
            return value
        try:
            return str(value)[:MAX_CONTEXT_STRING]
        except ValueError:  # more digits than Python will print
            return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, float):
        # NaN and infinities are not JSON numbers.
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        text = value
    elif not isinstance(value, Mapping | list | tuple):
        text = str(value)  # a UUID, date, Decimal, ...: its text, not a quoted JSON string
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)
        except (TypeError, ValueError):
            text = str(value)
    # Lone surrogates are not valid Unicode text (the model rejects them): replace them.
    return text.encode("utf-8", "replace").decode("utf-8")[:MAX_CONTEXT_STRING]


def build_context(*sources: ContextSource) -> list[ContextItem]:
    """Merge sources into context items: a later source overrides an earlier one's key
    (keeping the first position); None values are dropped; the result is clamped to the
    spec's limits."""
    merged: dict[str, ContextValue] = {}
    for source in sources:
        pairs = source.items() if isinstance(source, Mapping) else source
        for key, raw in pairs:
            value = clamp_value(raw)
            if value is None:
                continue
            merged[str(key)] = value
    return [ContextItem(key=k, value=v) for k, v in list(merged.items())[:MAX_CONTEXT_ITEMS]]
