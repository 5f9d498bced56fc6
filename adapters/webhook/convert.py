"""Pure conversions of the webhook channel: request bodies to :class:`Inbound`, deliveries to
reply bodies. No network, no clock, no state. The signature both directions carry is
bridge/signing.py's, re-exported here.

Errors, one tree::

    InvalidEvent          the event body cannot be used: answer 400 with ``reason``
    └── TextTooLong       the text is longer than the channel allows: answer 413
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, NoReturn

from adapters.webhook.attachments import AttachmentRefused, HostPolicy, read_attachments
from bridge.channel import (
    MAX_JSON_DEPTH,
    ContextScalar,
    Delivery,
    DeliveryRejected,
    Inbound,
    InboundKind,
    json_depth,
)
from bridge.channelkit import is_storable_text
from bridge.media.attachments import Attachment

# The signature scheme lives in the core (the webhook desk signs with it too); these names
# stay importable from here.
from bridge.signing import SIGNATURE_HEADER as SIGNATURE_HEADER
from bridge.signing import SIGNATURE_VERSION as SIGNATURE_VERSION
from bridge.signing import TIMESTAMP_HEADER as TIMESTAMP_HEADER
from bridge.signing import signature as signature
from bridge.signing import signed_headers as signed_headers
from bridge.signing import verify_signature as verify_signature
from bridge.textchat.models import element_to_wire

PLATFORM = "webhook"

DEFAULT_MAX_TEXT_LENGTH = 4096
MAX_ID_LENGTH = 255
MAX_CONTEXT_KEYS = 50
MAX_CONTEXT_KEY_LENGTH = 255
# The TextchatV2 limit for a context string; longer ones would be cut by the core anyway.
MAX_CONTEXT_STRING = 1000

# Kinds whose ``text`` carries the user's input.
_TEXT_KINDS = frozenset({InboundKind.TEXT, InboundKind.BUTTON})


class InvalidEvent(ValueError):
    """The event body cannot be used; ``reason`` is one line for the sender (no values echoed
    beyond field names). ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TextTooLong(InvalidEvent):
    """The text exceeds the channel's ``max_text_length``."""

    status = 413


# --- inbound --------------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise InvalidEvent(f"body is not valid JSON ({name} is not a JSON number)")


def parse_body(raw: bytes) -> object:
    """The JSON value of a request body. Raises InvalidEvent."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidEvent("body is not UTF-8") from None
    except RecursionError:
        raise InvalidEvent("body is nested too deeply") from None
    except ValueError as exc:  # json.JSONDecodeError
        if isinstance(exc, InvalidEvent):
            raise
        raise InvalidEvent("body is not valid JSON") from None
    if json_depth(value) > MAX_JSON_DEPTH:
        raise InvalidEvent("body is nested too deeply")
    return value


def _optional_id(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidEvent(f"{key} must be 1 to {MAX_ID_LENGTH} characters")
    if not is_storable_text(value):
        raise InvalidEvent(f"{key} is not valid Unicode text")
    return value


def _required_id(payload: Mapping[str, Any], key: str) -> str:
    value = _optional_id(payload, key)
    if value is None:
        raise InvalidEvent(f"{key} is required")
    return value


def _kind(payload: Mapping[str, Any]) -> InboundKind:
    value = payload.get("type", InboundKind.TEXT.value)
    if value is None:
        return InboundKind.TEXT
    if not isinstance(value, str):
        raise InvalidEvent("type must be a string")
    try:
        return InboundKind(value)
    except ValueError:
        known = ", ".join(k.value for k in InboundKind)
        raise InvalidEvent(f"unknown type (known: {known})") from None


def _text(
    payload: Mapping[str, Any], kind: InboundKind, max_text_length: int, caption: bool = False
) -> str:
    """The event's text; with ``caption`` (attachments carried) it may be empty."""
    value = payload.get("text")
    if value is None:
        if kind in _TEXT_KINDS and not caption:
            raise InvalidEvent(f"text is required for type {kind.value}")
        return ""
    if not isinstance(value, str):
        raise InvalidEvent("text must be a string")
    if kind in _TEXT_KINDS and not value.strip() and not caption:
        raise InvalidEvent(f"text must not be empty for type {kind.value}")
    if len(value) > max_text_length:
        raise TextTooLong(f"text is longer than {max_text_length} characters")
    if not is_storable_text(value):
        raise InvalidEvent("text is not valid Unicode text")
    return value


def _context(payload: Mapping[str, Any]) -> dict[str, ContextScalar]:
    value = payload.get("context")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent("context must be an object")
    if len(value) > MAX_CONTEXT_KEYS:
        raise InvalidEvent(f"context has more than {MAX_CONTEXT_KEYS} keys")
    context: dict[str, ContextScalar] = {}
    for key, item in value.items():
        # json.loads only makes string keys; a caller passing a dict may not.
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_CONTEXT_KEY_LENGTH:
            raise InvalidEvent(f"context keys must be 1 to {MAX_CONTEXT_KEY_LENGTH} characters")
        if not is_storable_text(key):
            raise InvalidEvent("a context key is not valid Unicode text")
        if isinstance(item, str):
            if len(item) > MAX_CONTEXT_STRING:
                raise InvalidEvent(f"context.{key} is longer than {MAX_CONTEXT_STRING} characters")
            if not is_storable_text(item):
                raise InvalidEvent(f"context.{key} is not valid Unicode text")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidEvent(f"context.{key} must be a finite number")
        elif not isinstance(item, bool | int):
            raise InvalidEvent(f"context.{key} must be a string, number or boolean")
        context[key] = item
    return context


def _attachments(
    payload: Mapping[str, Any], kind: InboundKind, policy: HostPolicy
) -> tuple[Attachment, ...]:
    raw = payload.get("attachments")
    if raw is None:
        return ()
    if kind is not InboundKind.TEXT:
        raise InvalidEvent("attachments are only accepted with type text")
    try:
        return read_attachments(raw, policy)
    except AttachmentRefused as exc:
        raise InvalidEvent(exc.reason) from None


def to_inbound(
    payload: object,
    *,
    max_text_length: int = DEFAULT_MAX_TEXT_LENGTH,
    attachment_hosts: HostPolicy | None = None,
) -> Inbound:
    """The :class:`Inbound` of one event body (already parsed JSON). Unknown keys are ignored,
    so senders may add fields before the bridge knows them. ``attachment_hosts``: where
    ``attachments`` may point (none: no attachments are accepted). Raises InvalidEvent."""
    if not isinstance(payload, dict):
        raise InvalidEvent("body must be a JSON object")
    event_id = _required_id(payload, "event_id")
    user_id = _required_id(payload, "user_id")
    conversation_id = _optional_id(payload, "conversation_id") or user_id
    kind = _kind(payload)
    attachments = _attachments(payload, kind, attachment_hosts or HostPolicy())
    text = _text(payload, kind, max_text_length, caption=bool(attachments))
    context = _context(payload)
    return Inbound(
        event_id=event_id,
        conversation_key=conversation_id,
        user_id=user_id,
        kind=kind,
        text=text,
        address={"conversation_id": conversation_id, "user_id": user_id},
        context={**context, "platform": PLATFORM},
        attachments=attachments,
    )


# --- outbound -------------------------------------------------------------------------------


def _address_field(address: Mapping[str, Any], key: str) -> str:
    value = address.get(key)
    if not isinstance(value, str) or not value:
        # An address this channel did not write: no retry can fix it.
        raise DeliveryRejected(f"delivery address has no {key}")
    return value


def render(delivery: Delivery) -> dict[str, Any]:
    """The JSON body POSTed to ``deliver_url`` for ``delivery`` (one part: all its elements).
    Raises DeliveryRejected when the address is not one this channel wrote."""
    return {
        "outbox_id": delivery.outbox_id,
        "conversation_id": _address_field(delivery.address, "conversation_id"),
        "user_id": _address_field(delivery.address, "user_id"),
        "elements": [element_to_wire(e) for e in delivery.elements],
    }


def typing_body(address: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body of a typing notice. Raises DeliveryRejected for a foreign address."""
    return {
        "typing": True,
        "conversation_id": _address_field(address, "conversation_id"),
        "user_id": _address_field(address, "user_id"),
    }


def encode(body: Mapping[str, Any]) -> bytes:
    """Compact JSON bytes; ASCII-escaped so even broken text from Parloa encodes."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")
