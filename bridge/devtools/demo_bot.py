"""The simulator's scripted demo bot: ``launch`` → a welcome text plus a ``payload`` with
``suggestionChips`` (a shorter welcome back when launched with ``handoverReturned``); a message
containing "card" → a ``cross_card`` with an image served by the simulator itself; the word
"agent" or "human" → a text and the handover payload (README "Human handover"); containing
"bye" → a farewell with ``endConversation: true``; anything else → an echo. ``quit`` ends the
session (idempotently)."""

from __future__ import annotations

import functools
import re
import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Any, Final

from yarl import URL

from bridge.devtools.simulator_state import SimulatorState
from bridge.textchat.models import LaunchEvent, MessageEvent, QuitEvent, TextchatRequest

#: what the welcome's payload offers as buttons
SUGGESTION_CHIPS: Final = ("Show me a card", "What can you do?", "bye")
CARD_SIZES: Final = {"large": (320, 180), "small": (160, 90)}
#: a message asking for a person (the words, in any case)
ASKS_FOR_A_PERSON: Final = re.compile(r"\b(agent|human)s?\b", re.IGNORECASE)
HANDOVER_TEXT: Final = "Let me get a colleague."


@functools.cache
def card_png(width: int = 320, height: int = 180) -> bytes:
    """A small RGB gradient PNG, built once per size with zlib and struct."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + tag
            + data
            + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        )

    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type "none"
        blue = 255 - 200 * y // max(1, height - 1)
        for x in range(width):
            red = 40 + 200 * x // max(1, width - 1)
            rows += bytes((red, 90 + 100 * y // max(1, height - 1), blue))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + chunk(b"IEND", b"")
    )


def _element_id() -> str:
    return str(uuid.uuid4())


def _text(content: str) -> dict[str, Any]:
    return {"type": "text", "id": _element_id(), "content": content}


def _card(origin: str) -> dict[str, Any]:
    image_url = URL(origin + "/_simulator/card.png")
    variants = {
        size: {
            "url": str(image_url if size == "large" else image_url.with_query(size=size)),
            "width": str(width),
            "height": str(height),
        }
        for size, (width, height) in CARD_SIZES.items()
    }
    return {
        "type": "cross_card",
        "id": _element_id(),
        "title": "A card from the simulator",
        "subtitle": "Rendered by your channel",
        "content": 'Cards have a title, a subtitle, text and an image. Say "bye" to finish.',
        "image": {"accessibilityText": "A colourful gradient", **variants},
    }


def handover_payload(text: str, turns: int) -> dict[str, Any]:
    """The payload asking the bridge for a person (the key the bridge looks for by default)."""
    summary = f"After {turns} message(s) the user wrote: {text[:200]}"
    return {
        "type": "payload",
        "content": {
            "handover": {
                "reason": "the user asked for a person",
                "queue": "support",
                "summary": summary,
            }
        },
    }


def _returned(req: TextchatRequest) -> bool:
    """Whether the session is launched for a user back from a handover."""
    return any(item.key == "handoverReturned" and item.value is True for item in req.context or ())


@dataclass(frozen=True, slots=True)
class Turn:
    """What the bot answers to one event."""

    conversation_id: str
    end: bool
    elements: list[dict[str, Any]]


def script(
    state: SimulatorState, req: TextchatRequest, release_id: str, origin: str
) -> Turn | None:
    """The demo bot. None: a message for a session that does not exist (404)."""
    event = req.event
    if isinstance(event, LaunchEvent):
        session = state.start_session(req.session_id, req.requester_id, release_id)
        if _returned(req):
            back = [_text("Welcome back! I hope my colleague could help. What else can I do?")]
            return Turn(session.conversation_id, False, back)
        welcome = [
            _text(
                "Hello! I am the demo bot of the parloa-bridge simulator. "
                'Ask me for a card, for a human, or say "bye".'
            ),
            # The spec's payload element has no "id" property (additionalProperties: false).
            {"type": "payload", "content": {"suggestionChips": list(SUGGESTION_CHIPS)}},
        ]
        return Turn(session.conversation_id, False, welcome)
    if isinstance(event, QuitEvent):
        # Quitting is idempotent: an unknown session is answered like a known one.
        ended = state.end_session(req.session_id)
        return Turn(ended.conversation_id if ended else str(uuid.uuid4()), True, [])
    assert isinstance(event, MessageEvent)
    current = state.touch_session(req.session_id)
    if current is None:
        return None
    current.turns += 1
    lowered = event.text.lower()
    if "card" in lowered:
        return Turn(current.conversation_id, False, [_card(origin)])
    if ASKS_FOR_A_PERSON.search(event.text):
        elements = [_text(HANDOVER_TEXT), handover_payload(event.text, current.turns)]
        return Turn(current.conversation_id, False, elements)
    if "bye" in lowered:
        state.end_session(req.session_id)
        return Turn(current.conversation_id, True, [_text("Bye! See you later :)")])
    elements = [_text(f"You said: {event.text}")]
    if "what can you do" in lowered:
        elements.append(
            _text(
                'I can show you a card (say "card"), get you a colleague (say "human"), '
                'repeat what you write, and end our conversation when you say "bye".'
            )
        )
    return Turn(current.conversation_id, False, elements)
