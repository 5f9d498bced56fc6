"""Inline keyboards for suggestion chips, and reading a press back. Pure functions.

Telegram gives a button at most 64 bytes of ``callback_data``, too little for a chip's value.
A button's data names where its value is kept: the reply the bridge stored for delivery
(``r:<outbox id>:<part>:<index>:<check>``). A press reads that reply, renders it again
(rendering is deterministic) and takes the value of the button at that place. The check (a
short hash of the button's title and value) refuses a press whose place now holds another
button: the reply rendered differently after a configuration change, or made-up data. A press
counts only in the chat the reply was sent to (channel.py), so a group upgraded to a
supergroup, which gets a new chat id, cannot use the keyboards sent before. Nothing is written
per keyboard: the reply is already stored.

Keyboards sent by earlier versions carry ``b:<token>:<index>``, their values in channel
state (``tmp:kb:<token>``) until the retention purge.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapters.telegram.parts import Button, Keyboard, Part

LEGACY_STATE_KEY = "tmp:kb:"


@dataclass(frozen=True, slots=True)
class ReplyButton:
    """A press of a keyboard sent with a stored reply."""

    outbox_id: int
    part: int
    index: int
    check: str

    @property
    def keyboard(self) -> str:
        """Names the keyboard: one press of it is accepted."""
        return f"{self.outbox_id}:{self.part}"


@dataclass(frozen=True, slots=True)
class LegacyButton:
    """A press of a keyboard whose values are in channel state under ``token``."""

    token: str
    index: int

    @property
    def keyboard(self) -> str:
        return self.token


def check(button: Button) -> str:
    digest = hashlib.blake2b(digest_size=4)
    digest.update(button.title.encode("utf-8", "surrogatepass"))
    digest.update(b"\0")
    digest.update(button.value.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def inline_keyboard(rows: Keyboard, outbox_id: int, part: int) -> dict[str, Any] | None:
    """The reply_markup of part ``part`` of reply ``outbox_id``, as the JSON the Bot API
    takes (built as plain data: PTB's InlineKeyboardMarkup is turned back into it by
    introspecting every object, a real share of a first contact's CPU: docs/benchmarks.md,
    "Telegram adapter")."""
    keyboard: list[list[dict[str, str]]] = []
    index = 0
    for row in rows:
        keyboard.append([])
        for button in row:
            data = f"r:{outbox_id}:{part}:{index}:{check(button)}"
            keyboard[-1].append({"text": button.title, "callback_data": data})
            index += 1
    return {"inline_keyboard": keyboard} if index else None


def _number(text: str) -> int | None:
    # ASCII digits only (int() also reads "١٢"), and within a database id's range.
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


def read_press(data: str | None) -> ReplyButton | LegacyButton | None:
    """What a button's callback data names; None when it is not one of ours."""
    if not data:
        return None
    kind, _, rest = data.partition(":")
    fields = rest.split(":")
    if kind == "r" and len(fields) == 4:
        outbox_id, part, index = (_number(f) for f in fields[:3])
        if outbox_id is not None and part is not None and index is not None:
            return ReplyButton(outbox_id, part, index, fields[3])
    if kind == "b" and len(fields) == 2:
        index = _number(fields[1])
        if fields[0] and index is not None:
            return LegacyButton(fields[0], index)
    return None


def pressed_value(parts: Sequence[Part], press: ReplyButton) -> str | None:
    """The value of the pressed button of a reply rendered again; None when that place holds
    no button, or another one."""
    if press.part >= len(parts):
        return None
    buttons = [button for row in parts[press.part].buttons for button in row]
    if press.index >= len(buttons) or check(buttons[press.index]) != press.check:
        return None
    return buttons[press.index].value
