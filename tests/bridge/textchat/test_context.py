"""Context helpers: whatever goes in, what comes out is within the spec's limits."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.textchat.context import (
    MAX_CONTEXT_ITEMS,
    MAX_CONTEXT_STRING,
    build_context,
    clamp_value,
)
from bridge.textchat.models import ContextItem, LaunchEvent, TextchatRequest
from tests.support.spec_schema import SPEC_PATH, request_validator


def assert_valid_context(items: list[ContextItem]) -> None:
    """Valid as the model says, and (when the spec is at hand) as the spec's schema says."""
    wire = TextchatRequest(
        event=LaunchEvent(), requester_id="u", session_id="s", context=items or None
    ).to_wire()
    json.dumps(wire, allow_nan=False)  # strictly JSON: no NaN or infinities
    if SPEC_PATH.is_file():
        errors = [e.message for e in request_validator().iter_errors(wire)]
        assert not errors, errors


def test_spec_schema_is_available_or_skip() -> None:
    """Without the spec, context is checked by the model only: say so in the test report."""
    assert request_validator() is not None  # skips when the spec is absent


# --- clamp_value --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        (0, 0),
        (-7, -7),
        (10**30, "1000000000000000000000000000000"),  # beyond 2**53: precision kept as text
        (2**53, 2**53),
        (1.5, 1.5),
        (-0.0, -0.0),
        (float("nan"), "nan"),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        ("", ""),
        ("Grüße 👋", "Grüße 👋"),
        ({"b": 1, "a": [1, None, "ü"]}, '{"a": [1, null, "ü"], "b": 1}'),
        ([1, "two", {"three": 3.0}], '[1, "two", {"three": 3.0}]'),
        ((1, 2), "[1, 2]"),
        ({}, "{}"),
        ([], "[]"),
        ({"when": datetime.date(2024, 1, 2)}, '{"when": "2024-01-02"}'),
        ({1: "a", "b": 2}, "{1: 'a', 'b': 2}"),  # keys JSON cannot sort: Python's text
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (datetime.date(2024, 1, 2), "2024-01-02"),
        (decimal.Decimal("1.50"), "1.50"),
        ("lone \ud800 surrogate", "lone ? surrogate"),
    ],
)
def test_clamp_value(value: Any, expected: Any) -> None:
    clamped = clamp_value(value)
    assert clamped == expected
    assert type(clamped) is type(expected)


def test_clamp_value_truncates_long_strings() -> None:
    assert clamp_value("x" * 5000) == "x" * MAX_CONTEXT_STRING
    assert clamp_value("é" * 1000) == "é" * 1000
    long_json = clamp_value({"k": "v" * 5000})
    assert isinstance(long_json, str)
    assert len(long_json) == MAX_CONTEXT_STRING
    assert long_json.startswith('{"k": "vvv')
    assert MAX_CONTEXT_STRING == 1000


def test_bool_stays_bool_and_is_not_an_int() -> None:
    (item,) = build_context({"flag": True})
    assert item.value is True
    wire = TextchatRequest(
        event=LaunchEvent(), requester_id="u", session_id="s", context=[item]
    ).to_wire()
    assert wire["context"] == [{"key": "flag", "value": True}]


# --- build_context ------------------------------------------------------------------------------


def test_at_most_100_items_keeping_the_first() -> None:
    items = build_context({f"k{i}": i for i in range(150)})
    assert len(items) == MAX_CONTEXT_ITEMS == 100
    assert [item.key for item in items] == [f"k{i}" for i in range(100)]
    assert_valid_context(items)


def test_long_strings_are_truncated_to_1000() -> None:
    items = build_context({f"k{i}": "y" * 5000 for i in range(150)})
    assert len(items) == 100
    assert all(item.value == "y" * 1000 for item in items)
    assert_valid_context(items)


def test_none_values_are_dropped_before_counting() -> None:
    source = {f"k{i}": (None if i % 3 == 0 else i) for i in range(150)}
    items = build_context(source)
    assert len(items) == 100
    assert all(item.value is not None for item in items)
    assert "k0" not in {item.key for item in items}
    assert build_context({"a": None}, [("b", None)]) == []


def test_later_sources_override_keeping_the_first_position() -> None:
    items = build_context(
        {"platform": "telegram", "lang": "de", "name": "Max"},
        [("lang", "en"), ("extra", 1)],
        {"platform": "slack", "name": None},  # None is dropped: it does not erase "Max"
    )
    assert [(i.key, i.value) for i in items] == [
        ("platform", "slack"),
        ("lang", "en"),
        ("name", "Max"),
        ("extra", 1),
    ]


def test_sources_may_be_pairs_and_keys_become_strings() -> None:
    items = build_context([(1, "one"), ("two", 2)], {None: "n", 2.5: True})  # type: ignore[dict-item]
    assert [(i.key, i.value) for i in items] == [
        ("1", "one"),
        ("two", 2),
        ("None", "n"),
        ("2.5", True),
    ]


def test_no_sources_is_an_empty_context() -> None:
    assert build_context() == []
    assert build_context({}, []) == []


def test_values_of_every_kind_are_within_the_spec() -> None:
    items = build_context(
        {
            "s": "x" * 5000,
            "b": False,
            "i": 3,
            "f": 0.25,
            "nan": float("nan"),
            "inf": float("inf"),
            "dict": {"nested": {"deep": ["x" * 2000]}},
            "list": list(range(1000)),
            "uuid": uuid.uuid4(),
            "bytes": b"\x00\xff",
            "surrogate": "\udcff",
        }
    )
    assert len(items) == 11
    assert_valid_context(items)
    by_key = {item.key: item.value for item in items}
    assert by_key["nan"] == "nan"
    assert by_key["inf"] == "inf"
    assert isinstance(by_key["dict"], str)
    assert isinstance(by_key["list"], str)
    assert len(by_key["list"]) == 1000


# --- never raises, always within the spec -------------------------------------------------------

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.builds(str.__mul__, st.sampled_from(["x", "ü", "👋"]), st.integers(990, 1500))
    | st.lists(st.integers(0xD800, 0xDFFF).map(chr) | st.characters(), max_size=4).map("".join)
    | st.binary(max_size=10)
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=5)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=5)
    ),
    max_leaves=8,
)
KEYS = st.text(max_size=30) | st.integers() | st.sampled_from(["platform", "lang", "name"])
SOURCES = st.lists(
    st.dictionaries(KEYS, VALUES, max_size=50)
    | st.lists(st.tuples(KEYS, VALUES), max_size=50)
    # many plain items, to cross the 100-item limit often
    | st.integers(0, 150).map(lambda n: {f"k{i}": "v" * i for i in range(n)}),
    max_size=3,
)


@settings(
    derandomize=True,
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(SOURCES)
def test_build_context_never_raises_and_stays_within_the_spec(sources: list[Any]) -> None:
    items = build_context(*sources)

    assert len(items) <= MAX_CONTEXT_ITEMS
    keys = [item.key for item in items]
    assert len(keys) == len(set(keys))
    for item in items:
        value = item.value
        assert value is not None
        if isinstance(value, str):
            assert len(value) <= MAX_CONTEXT_STRING
            value.encode("utf-8")  # proper Unicode text
        elif isinstance(value, float):
            assert math.isfinite(value)
        else:
            assert isinstance(value, bool | int)

    # every non-None input value shows up (last writer wins), bools as bools
    expected: dict[str, Any] = {}
    for source in sources:
        for key, value in source.items() if isinstance(source, dict) else source:
            if value is not None:
                expected[str(key)] = value
    assert keys == list(expected)[:MAX_CONTEXT_ITEMS]
    for item in items:
        if isinstance(expected[item.key], bool):
            assert item.value is expected[item.key]

    assert_valid_context(items)


@settings(derandomize=True, max_examples=200, deadline=None, database=None)
@given(VALUES)
def test_clamp_value_never_raises(value: Any) -> None:
    clamped = clamp_value(value)
    if value is None:
        assert clamped is None
    else:
        assert clamped is not None
        (item,) = build_context({"k": value})
        assert item.value == clamped


def test_clamp_value_of_an_unprintably_large_integer() -> None:
    assert clamp_value(10**5000) == "<integer of 16610 bits>"
