"""Inline keyboards as callback data, and reading a press back (adapters/telegram/keyboards.py)."""

from __future__ import annotations

import pytest

from adapters.telegram.keyboards import (
    LegacyButton,
    ReplyButton,
    inline_keyboard,
    pressed_value,
    read_press,
)
from adapters.telegram.render import Button, TextPart

ROWS = (
    (Button("Yes ✅", "yes please"), Button("No", "no")),
    (Button("A much longer title than fits", "long"),),
)
PARTS = [TextPart("first", None), TextPart("pick", None, ROWS)]


def datas(markup: dict[str, object] | None) -> list[str]:
    assert markup is not None
    rows = markup["inline_keyboard"]
    assert isinstance(rows, list)
    return [button["callback_data"] for row in rows for button in row]


def test_every_button_reads_back_to_its_value() -> None:
    markup = inline_keyboard(ROWS, 123456789012, 1)
    assert markup is not None
    assert [[b["text"] for b in row] for row in markup["inline_keyboard"]] == [
        ["Yes ✅", "No"],
        ["A much longer title than fits"],
    ]
    values = []
    for data in datas(markup):
        press = read_press(data)
        assert isinstance(press, ReplyButton) and press.keyboard == "123456789012:1"
        values.append(pressed_value(PARTS, press))
    assert values == ["yes please", "no", "long"]


def test_callback_data_fits_telegrams_64_bytes_at_the_largest_ids() -> None:
    rows = tuple((Button(f"t{i}", "v" * 500),) for i in range(100))
    for data in datas(inline_keyboard(rows, 10**18 - 1, 9999)):
        assert len(data.encode()) <= 64
        assert read_press(data) is not None


def test_no_buttons_no_keyboard() -> None:
    assert inline_keyboard((), 1, 0) is None


@pytest.mark.parametrize(
    "data",
    [
        None,
        "",
        "go",
        "r:1:1:0",  # no check
        "r:1:1:0:abc:extra",
        "r:x:1:0:abc",
        "r:-1:1:0:abc",
        "r:١:1:0:abc",  # digits, but not ASCII
        "r:1234567890123456789:1:0:abc",  # past a database id
        "b::0",
        "b:tok:x",
        "b:tok",
    ],
)
def test_data_that_is_not_ours_names_nothing(data: str | None) -> None:
    assert read_press(data) is None


def test_an_earlier_versions_keyboard_is_read() -> None:
    press = read_press("b:tok_123:2")
    assert press == LegacyButton("tok_123", 2) and press.keyboard == "tok_123"


def test_a_place_with_another_button_or_none_gives_no_value() -> None:
    (first, second, _third) = datas(inline_keyboard(ROWS, 7, 1))
    kind, outbox_id, part, _index, check = first.split(":")
    moved = read_press(f"{kind}:{outbox_id}:{part}:1:{check}")  # the first's check, second place
    assert isinstance(moved, ReplyButton) and pressed_value(PARTS, moved) is None
    for data in (f"r:7:1:3:{check}", f"r:7:2:0:{check}", f"r:7:0:0:{check}"):
        press = read_press(data)
        assert isinstance(press, ReplyButton) and pressed_value(PARTS, press) is None
    press = read_press(second)
    assert isinstance(press, ReplyButton) and pressed_value(PARTS, press) == "no"
