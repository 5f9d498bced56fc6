"""The web chat's frame parsers under arbitrary input (hypothesis): a frame is either used or
refused with a FrameError, never anything else, and what is used is storable (the store's
column limits and its refusal of NUL). Then the same nasty frames through a live socket: each
gets an error frame, the socket stays open, nothing is logged with a traceback."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.webchat.protocol import (
    FrameError,
    TokenBucket,
    parse_event,
    parse_frame,
    parse_hello,
    to_inbound,
)
from bridge.channel import inbound_problem
from bridge.devtools.simulator import RunningSimulator
from tests.adapters.webchat.test_channel import CHANNEL, bridge, connect, db

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
frame_types = st.sampled_from(["hello", "message", "button", "restart", "start", "dance"])
frames = st.fixed_dictionaries(
    {"type": frame_types},
    optional={
        "id": st.text(max_size=70) | json_values,
        "text": st.text(max_size=50) | json_values,
        "value": st.text(max_size=50) | json_values,
        "user": st.text(max_size=70) | json_values,
        "token": st.text(max_size=50) | json_values,
        "since": json_values,
        "language": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.text() | frames.map(lambda f: json.dumps(f, allow_nan=True)))
def test_any_frame_is_used_or_refused_and_what_is_used_is_storable(raw: str) -> None:
    try:
        frame = parse_frame(raw)
        if frame.get("type") == "hello":
            hello = parse_hello(frame)
            assert hello.user is None or len(hello.user) <= 64
            return
        event = parse_event(frame, max_text_length=4000)
    except FrameError:
        return
    inbound = to_inbound("u" * 64, event, {"platform": "webchat"})
    assert inbound_problem(CHANNEL, inbound) is None


def test_token_bucket_bursts_then_refills() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    taken = 0
    while bucket.ready(0.0):
        bucket.spend()
        taken += 1
    assert taken == 3
    assert not bucket.ready(0.4)  # 0.8 of a token
    assert bucket.ready(0.5)
    assert bucket.full(100.0) and bucket.tokens == 3.0  # never more than the burst


NASTY: list[Any] = [
    "[" * 10_000 + "]" * 10_000,  # deep JSON, within the size limit
    '{"type": "message", "id": "a", "text": NaN}',
    '{"type": "message", "id": "a", "text": "\\ud800"}',  # a lone surrogate
    '{"type": "message", "id": "a", "text": "nul\\u0000"}',
    '{"type": "message", "id": "' + "i" * 65 + '", "text": "long id"}',
    '{"type": "button", "id": "b", "value": ["x"]}',
    '{"type": "message", "id": "c", "text": "' + "x" * 4001 + '"}',
    '{"type": "hello", "user": null}',
    "[]",
    "1e999999",
    "\u0000",
]


async def test_nasty_frames_through_a_socket(
    tmp_path: Any, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        bridge(db(tmp_path), sim) as service,
        connect(session, service) as chat,
    ):
        for raw in NASTY:
            await chat.ws.send_str(raw)
        await chat.until(lambda c: len(c.of("error")) == len(NASTY))
        assert not chat.of("ack")
        await chat.echo("still open")
    assert not [r for r in caplog.records if r.exc_info]
    assert [r.text for r in sim.state.requests if r.event_type == "message"] == ["still open"]
