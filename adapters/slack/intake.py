"""The door of the Slack HTTP route, as pure functions: the signature is checked on the raw
bytes, then the body is read the way Bolt will read it, before Bolt sees anything. Bolt
parses without a guard (a list, invalid UTF-8 or deep JSON would fail inside it with a 500),
so only a body these functions accept is handed on."""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

from bridge.channel import UnreadableBody, loads_object

#: How far a request's timestamp may be from this host's clock (Slack's own rule).
SIGNATURE_TOLERANCE_SECONDS = 300


def signature_problem(
    secret: bytes,
    raw: bytes,
    timestamp: str | None,
    signature: str | None,
    now: float,
    tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
) -> str | None:
    """Why the request is not signed by Slack (``v0=`` HMAC-SHA256 of ``v0:{ts}:{body}``),
    or None when it is."""
    if not timestamp or not signature:
        return "unsigned request"
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return "malformed timestamp"
    if abs(now - int(timestamp)) > tolerance:
        return "stale timestamp"
    digest = hmac.new(secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256)
    expected = "v0=" + digest.hexdigest()
    given = signature.encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(expected.encode(), given):
        return "bad signature"
    return None


def read_body(raw: bytes, content_type: str | None) -> str:
    """The body as the text Bolt will parse, after checking that Bolt's parsing
    (``slack_bolt.request.internals.parse_body``) yields an object; raises UnreadableBody."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnreadableBody("body is not UTF-8") from None
    if not text:
        raise UnreadableBody("empty body")
    if content_type == "application/json" or text.startswith("{"):
        loads_object(text)
    elif "payload" in text:  # interactivity: a form whose payload field is JSON
        payload = dict(parse_qsl(text, keep_blank_values=True)).get("payload")
        if payload is None:
            raise UnreadableBody("form without a payload")
        loads_object(payload)
    # Any other form (a slash command) parses into strings: nothing can fail.
    return text
