"""A server's ``Retry-After`` as seconds to wait: one reading for the Parloa client and every
channel adapter (``bridge.channelkit`` re-exports it for plugin channels)."""

from __future__ import annotations

import math
import time
from datetime import UTC, timedelta
from email.utils import parsedate_to_datetime

#: Longest wait a server's ``Retry-After`` is honoured for by default: asking for more is more
#: likely a broken server than a serious request, and an outbox must not stall for good.
MAX_RETRY_AFTER_SECONDS = 3600.0


def retry_after_seconds(
    value: str | float | timedelta | None,
    *,
    maximum: float = MAX_RETRY_AFTER_SECONDS,
    now: float | None = None,
) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, always finite and within
    ``[0, maximum]``; ``None`` when the value says nothing usable (absent, empty, not a number
    nor an HTTP date, NaN) — the caller then waits by its own rule.

    ``value`` is the header's text (delta-seconds, decimals tolerated, or an HTTP date), a
    number, or a ``timedelta``. An infinite or huge wait is capped at ``maximum``; a negative
    one, or a date in the past, is ``0.0`` (retry now). ``now`` is the wall clock (Unix seconds)
    an HTTP date is measured from; the current time when omitted."""
    if not 0.0 <= maximum < math.inf:
        raise ValueError(f"maximum must be finite and not negative, not {maximum!r}")
    seconds: float
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)  # "1e309" is inf: capped below
        except ValueError:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError, OverflowError):
                return None
            if when.tzinfo is None:  # "-0000": UTC by RFC 5322, not this host's zone
                when = when.replace(tzinfo=UTC)
            try:
                seconds = when.timestamp() - (time.time() if now is None else now)
            except (OverflowError, OSError, ValueError):
                return None
    if math.isnan(seconds):
        return None
    return min(maximum, max(0.0, seconds))
