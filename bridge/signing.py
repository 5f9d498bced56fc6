"""The bridge's request signature: HMAC-SHA256 over ``<timestamp>.<body>``, sent as
``X-Bridge-Timestamp`` and ``X-Bridge-Signature: v1=<hex>``. The webhook channel signs its
replies and checks its events with it, the webhook desk its handover events both ways; it
lives in the core so that both can use it (the core never imports adapters). Pure: no
clock, no state — the caller passes ``now``."""

from __future__ import annotations

import hashlib
import hmac
import math

SIGNATURE_VERSION = "v1"
TIMESTAMP_HEADER = "X-Bridge-Timestamp"
SIGNATURE_HEADER = "X-Bridge-Signature"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={digest.hexdigest()}"


def signed_headers(secret: bytes, timestamp: str, body: bytes) -> dict[str, str]:
    """The two authentication headers for ``body``."""
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify_signature(
    secret: bytes,
    timestamp: str | None,
    provided: str | None,
    body: bytes,
    now: float,
    tolerance: float,
) -> str | None:
    """None when the request is authentic and fresh, else a short reason (for the sender)."""
    if not timestamp or not provided:
        return "missing signature headers"
    try:
        sent_at = float(timestamp)
    except ValueError:
        return "invalid timestamp"
    if not math.isfinite(sent_at):
        return "invalid timestamp"
    if abs(now - sent_at) > tolerance:
        return "stale timestamp"
    try:
        expected = signature(secret, timestamp, body)
    except UnicodeEncodeError:  # a timestamp float() took that is not ASCII
        return "invalid timestamp"
    # compare_digest on str needs ASCII on both sides: compare bytes instead.
    given = provided.strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected.encode("ascii"), given):
        return "invalid signature"
    return None


__all__ = [
    "SIGNATURE_HEADER",
    "SIGNATURE_VERSION",
    "TIMESTAMP_HEADER",
    "signature",
    "signed_headers",
    "verify_signature",
]
