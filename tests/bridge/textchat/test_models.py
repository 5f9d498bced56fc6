"""TextchatV2 wire models: exact requests, tolerant responses."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from bridge.textchat.models import (
    API_VERSION,
    CardElement,
    Chip,
    ContextItem,
    LaunchEvent,
    MessageEvent,
    PayloadElement,
    QuitEvent,
    TextchatRequest,
    TextchatResponse,
    TextElement,
    UnknownElement,
    describe_validation_error,
    element_to_wire,
    parse_element,
    parse_wire,
)
from tests.support.spec_schema import SPEC_PATH, load_spec, schema_validator


def spec_errors(schema_name: str, instance: Any) -> list[str]:
    return [e.message for e in schema_validator(schema_name).iter_errors(instance)]


def spec_examples(kind: str) -> dict[str, Any]:
    post = load_spec()["paths"]["/dialoghook"]["post"]
    if kind == "request":
        content = post["requestBody"]["content"]
    else:
        content = post["responses"]["default"]["content"]
    return {name: ex["value"] for name, ex in content["application/json"]["examples"].items()}


def response(**fields: Any) -> dict[str, Any]:
    return {
        "apiVersion": "chat/v1",
        "releaseId": "rel",
        "requesterId": "user",
        "sessionId": "sess",
        "endConversation": False,
        "responseElements": [],
        **fields,
    }


# --- requests -----------------------------------------------------------------------------------


def test_request_to_wire_uses_the_wire_names() -> None:
    request = TextchatRequest(
        event=MessageEvent(text="Hello textchat!"),
        requester_id="<user-id>",
        session_id="<session-id>",
        context=[ContextItem(key="name", value="Max"), ContextItem(key="age", value=20)],
    )
    assert request.to_wire() == {
        "apiVersion": "chat/v1",
        "requesterId": "<user-id>",
        "sessionId": "<session-id>",
        "context": [{"key": "name", "value": "Max"}, {"key": "age", "value": 20}],
        "event": {"type": "message", "text": "Hello textchat!"},
    }
    assert API_VERSION == "chat/v1"


def test_request_without_context_omits_it() -> None:
    wire = TextchatRequest(event=LaunchEvent(), requester_id="u", session_id="s").to_wire()
    assert wire == {
        "apiVersion": "chat/v1",
        "event": {"type": "launch"},
        "requesterId": "u",
        "sessionId": "s",
    }


@pytest.mark.parametrize(
    "name", ["launchRequest", "messageRequest", "quitRequest", "send-message-context"]
)
def test_spec_request_examples_round_trip(name: str) -> None:
    example = spec_examples("request")[name]
    parsed = parse_wire(TextchatRequest, example)
    assert parsed.to_wire() == example
    assert not spec_errors("TextchatV2RequestBody", parsed.to_wire())


@pytest.mark.parametrize(
    "event",
    [LaunchEvent(), MessageEvent(text="ünïcödé 👋"), MessageEvent(text=""), QuitEvent()],
)
def test_built_requests_validate_against_the_spec(event: Any) -> None:
    context = [
        ContextItem(key="s", value="x" * 1000),
        ContextItem(key="b", value=True),
        ContextItem(key="i", value=-3),
        ContextItem(key="f", value=2.5),
    ]
    for ctx in (None, context, context * 25):
        wire = TextchatRequest(event=event, requester_id="u", session_id="s", context=ctx).to_wire()
        assert not spec_errors("TextchatV2RequestBody", wire)


@pytest.mark.parametrize(
    "data",
    [
        {
            "apiVersion": "chat/v2",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
        },
        {"apiVersion": "chat/v1", "event": {"type": "launch"}, "requesterId": "u"},
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
            "extra": 1,
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "message"},
            "requesterId": "u",
            "sessionId": "s",
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch", "text": "x"},
            "requesterId": "u",
            "sessionId": "s",
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "typing"},
            "requesterId": "u",
            "sessionId": "s",
        },
        {"apiVersion": "chat/v1", "event": {"type": "launch"}, "requesterId": 5, "sessionId": "s"},
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
            "context": [{"key": "k", "value": None}],
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
            "context": [{"key": "k", "value": "x" * 1001}],
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
            "context": [{"key": "k", "value": 1}] * 101,
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
            "context": [{"key": "k", "value": [1]}],
        },
        {
            "apiVersion": "chat/v1",
            "event": {"type": "launch"},
            "requesterId": "u",
            "sessionId": "s",
            "context": [{"key": "k", "value": 1, "extra": 2}],
        },
        # snake_case names are not wire names
        {
            "api_version": "chat/v1",
            "event": {"type": "launch"},
            "requester_id": "u",
            "session_id": "s",
        },
    ],
    ids=[
        "wrong-api-version",
        "missing-session",
        "extra-field",
        "message-without-text",
        "launch-with-text",
        "unknown-event",
        "requester-int",
        "context-null",
        "context-too-long",
        "context-too-many",
        "context-list",
        "context-extra",
        "snake-case",
    ],
)
def test_requests_the_spec_forbids_cannot_be_parsed(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_wire(TextchatRequest, data)
    if SPEC_PATH.is_file() and "api_version" not in data:
        assert spec_errors("TextchatV2RequestBody", data)  # the spec agrees


def test_requests_the_spec_forbids_cannot_be_built() -> None:
    with pytest.raises(ValidationError):
        ContextItem(key="k", value="x" * 1001)
    with pytest.raises(ValidationError):
        ContextItem(key="k", value=None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ContextItem(key="k", value="1", extra=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TextchatRequest(
            event=LaunchEvent(),
            requester_id="u",
            session_id="s",
            context=[ContextItem(key="k", value=1)] * 101,
        )
    with pytest.raises(ValidationError):
        MessageEvent(text=5)  # type: ignore[arg-type]


def test_context_values_keep_their_json_type() -> None:
    items = [
        ContextItem(key="b", value=True),
        ContextItem(key="i", value=1),
        ContextItem(key="f", value=1.0),
        ContextItem(key="s", value="1"),
    ]
    wire = TextchatRequest(
        event=LaunchEvent(), requester_id="u", session_id="s", context=items
    ).to_wire()
    values = [item["value"] for item in wire["context"]]
    assert [type(v) for v in values] == [bool, int, float, str]


def test_models_are_frozen() -> None:
    event = MessageEvent(text="a")
    with pytest.raises(ValidationError):
        event.text = "b"  # type: ignore[misc]
    parsed = parse_wire(TextchatResponse, response())
    with pytest.raises(ValidationError):
        parsed.session_id = "other"  # type: ignore[misc]


# --- responses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["text-response", "bot-quits-conversation", "bot-respond-with-json-payload"]
)
def test_spec_response_examples_parse_and_round_trip(name: str) -> None:
    example = spec_examples("response")[name]
    parsed = parse_wire(TextchatResponse, example)
    assert parsed.api_version == "chat/v1"
    assert parsed.release_id == example["releaseId"]
    assert parsed.conversation_id == example["conversationId"]
    assert parsed.transaction_id == example["transactionId"]
    assert parsed.end_conversation is example["endConversation"]
    assert not any(isinstance(e, UnknownElement) for e in parsed.response_elements)
    assert parsed.to_wire() == example
    # (not validated against the schema: the spec's own payload example carries an ``id``,
    # which its payload schema forbids; the model tolerates it)


def test_text_elements() -> None:
    parsed = parse_wire(
        TextchatResponse,
        response(
            responseElements=[
                {"type": "text", "content": "Hi", "id": "e1"},
                {"type": "text", "content": ""},
            ]
        ),
    )
    first, second = parsed.response_elements
    assert first == TextElement(type="text", content="Hi", id="e1")
    assert isinstance(second, TextElement)
    assert second.content == ""
    assert second.id is None


def test_unknown_top_level_fields_are_kept() -> None:
    data = response(
        newThing={"nested": [1, 2, {"x": None}]},
        traceFlag=True,
        transactionId="t-1",
    )
    parsed = parse_wire(TextchatResponse, data)
    assert parsed.model_extra == {"newThing": {"nested": [1, 2, {"x": None}]}, "traceFlag": True}
    assert parsed.transaction_id == "t-1"
    wire = parsed.to_wire()
    assert wire["newThing"] == {"nested": [1, 2, {"x": None}]}
    assert wire["traceFlag"] is True


def test_unknown_element_types_are_kept_raw() -> None:
    carousel = {"type": "carousel", "items": [{"title": "a"}], "id": "c1"}
    parsed = parse_wire(
        TextchatResponse,
        response(
            responseElements=[
                {"type": "text", "content": "before"},
                carousel,
                {"type": "text", "content": "after"},
            ]
        ),
    )
    before, unknown, after = parsed.response_elements
    assert isinstance(before, TextElement)
    assert isinstance(after, TextElement)
    assert isinstance(unknown, UnknownElement)
    assert unknown.type == "carousel"
    assert unknown.raw == carousel
    assert "carousel" in unknown.problem
    assert element_to_wire(unknown) == carousel


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("just text", ""),
        (5, ""),
        (None, ""),
        ([{"type": "text"}], ""),
        ({"content": "no type"}, ""),
        ({"type": 7, "content": "x"}, ""),
        ({"type": None}, ""),
        ({"type": "TEXT", "content": "case matters"}, "TEXT"),
    ],
)
def test_elements_without_a_known_type(raw: Any, kind: str) -> None:
    element = parse_element(raw)
    assert isinstance(element, UnknownElement)
    assert element.type == kind
    assert element.raw == raw
    assert element.problem


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"type": "text"}, "content"),
        ({"type": "text", "content": None}, "content"),
        ({"type": "text", "content": 5}, "content"),
        ({"type": "text", "content": ["a"]}, "content"),
        ({"type": "text", "content": "ok", "id": 3}, "id"),
        ({"type": "payload"}, "content"),
        ({"type": "payload", "content": ["a", "b"]}, "content"),
        ({"type": "payload", "content": "a string"}, "content"),
        ({"type": "cross_card", "title": 5}, "title"),
        ({"type": "cross_card", "image": "http://x/y.png"}, "image"),
        ({"type": "cross_card", "image": {"large": {"width": "10"}}}, "url"),
    ],
)
def test_known_elements_with_broken_content_become_unknown(raw: Any, where: str) -> None:
    element = parse_element(raw)
    assert isinstance(element, UnknownElement)
    assert element.type == raw["type"]
    assert element.raw == raw
    assert where in element.problem
    # and the response around it survives
    parsed = parse_wire(TextchatResponse, response(responseElements=[raw]))
    assert parsed.response_elements == [element]


def test_known_elements_keep_unknown_fields() -> None:
    element = parse_element({"type": "text", "content": "x", "markdown": True})
    assert isinstance(element, TextElement)
    assert element.model_extra == {"markdown": True}
    assert element_to_wire(element) == {"type": "text", "content": "x", "markdown": True}


def test_payload_chips_from_strings_and_objects() -> None:
    payload = parse_element(
        {
            "type": "payload",
            "content": {
                "suggestionChips": ["yes", "no", "not sure?", "  ", "", 3, True, None, ["x"]],
                "quickReplies": [
                    {"title": "Order status", "value": "status"},
                    {"title": "Only a title"},
                    {"value": "only-a-value"},
                    {"label": "Label", "payload": "PAYLOAD"},
                    {"title": 5, "value": None},
                    {},
                    "plain",
                ],
            },
        }
    )
    assert isinstance(payload, PayloadElement)
    assert payload.chips() == [
        Chip("yes", "yes"),
        Chip("no", "no"),
        Chip("not sure?", "not sure?"),
        Chip("3", "3"),
        Chip("Order status", "status"),
        Chip("Only a title", "Only a title"),
        Chip("only-a-value", "only-a-value"),
        Chip("Label", "PAYLOAD"),
        Chip("plain", "plain"),
    ]


@pytest.mark.parametrize(
    "content",
    [
        {},
        {"suggestionChips": "yes"},
        {"suggestionChips": {"title": "a"}},
        {"quickReplies": None},
        {"other": ["a", "b"]},
    ],
)
def test_payload_without_usable_chips(content: dict[str, Any]) -> None:
    payload = parse_element({"type": "payload", "content": content})
    assert isinstance(payload, PayloadElement)
    assert payload.chips() == []


def test_payload_for_platform() -> None:
    blocks = {"blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]}
    payload = parse_element({"type": "payload", "content": {"slack": blocks, "custom": 1}})
    assert isinstance(payload, PayloadElement)
    assert payload.for_platform("slack") == blocks
    assert payload.for_platform("telegram") is None
    assert payload.chips() == []


def test_card_with_image() -> None:
    raw = {
        "type": "cross_card",
        "id": "card-1",
        "title": "Our shop",
        "subtitle": "open 9-5",
        "image": {
            "accessibilityText": "A photo of the shop",
            "large": {"url": "https://example.com/large.png", "width": "800", "height": "600"},
            "small": {"url": "https://example.com/small.jpg"},
        },
    }
    card = parse_element(raw)
    assert isinstance(card, CardElement)
    assert card.title == "Our shop"
    assert card.subtitle == "open 9-5"
    assert card.content is None
    assert card.image is not None
    assert card.image.url == "https://example.com/large.png"
    assert card.image.accessibility_text == "A photo of the shop"
    assert card.image.large is not None
    assert card.image.large.width == "800"
    assert element_to_wire(card) == raw
    if SPEC_PATH.is_file():
        assert not spec_errors("TextchatV2GenericCardResponseElement", element_to_wire(card))


def test_card_image_falls_back_to_small_and_to_none() -> None:
    small_only = parse_element(
        {"type": "cross_card", "image": {"small": {"url": "https://example.com/s.png"}}}
    )
    assert isinstance(small_only, CardElement)
    assert small_only.image is not None
    assert small_only.image.url == "https://example.com/s.png"
    assert small_only.image.accessibility_text is None

    text_only = parse_element({"type": "cross_card", "title": "T", "content": "Body"})
    assert isinstance(text_only, CardElement)
    assert text_only.image is None
    assert text_only.content == "Body"


FULL = response(
    conversationId="conv-1",
    transactionId="tx-1",
    endConversation=True,
    somethingNew={"a": [1, "b", None]},
    responseElements=[
        {"type": "text", "content": "Hi", "id": "e1"},
        {"type": "payload", "content": {"suggestionChips": ["a", {"title": "B", "value": "b"}]}},
        {
            "type": "cross_card",
            "title": "Card",
            "image": {"large": {"url": "https://x/l.png"}, "small": {"url": "https://x/s.png"}},
        },
        {"type": "carousel", "items": []},
        "not even an object",
        {"type": "text", "content": 42},
    ],
)


def test_response_to_wire_round_trips() -> None:
    original = copy.deepcopy(FULL)
    parsed = parse_wire(TextchatResponse, FULL)
    assert original == FULL  # parsing does not mutate its input
    wire = parsed.to_wire()
    assert wire == FULL
    again = parse_wire(TextchatResponse, wire)
    assert again == parsed
    assert again.to_wire() == wire
    assert [type(e) for e in again.response_elements] == [
        TextElement,
        PayloadElement,
        CardElement,
        UnknownElement,
        UnknownElement,
        UnknownElement,
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"endConversation": "true"},
        {"endConversation": 1},
        {"endConversation": None},
        {"responseElements": {"type": "text", "content": "x"}},
        {"responseElements": "text"},
        {"sessionId": 5},
        {"releaseId": None},
        {"apiVersion": 1},
        {"conversationId": 5},
        {"transactionId": ["t"]},
    ],
)
def test_wrong_typed_response_fields_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        parse_wire(TextchatResponse, response(**change))


@pytest.mark.parametrize(
    "name",
    ["apiVersion", "releaseId", "requesterId", "sessionId", "endConversation", "responseElements"],
)
def test_missing_required_response_fields_are_rejected(name: str) -> None:
    data = response()
    del data[name]
    with pytest.raises(ValidationError) as info:
        parse_wire(TextchatResponse, data)
    assert name in describe_validation_error(info.value)


def test_snake_case_response_names_are_not_wire_names() -> None:
    with pytest.raises(ValidationError):
        parse_wire(
            TextchatResponse,
            {
                "api_version": "chat/v1",
                "release_id": "r",
                "requester_id": "u",
                "session_id": "s",
                "end_conversation": False,
                "response_elements": [],
            },
        )


def test_describe_validation_error_does_not_echo_values() -> None:
    secret = "tok-SECRET-123"
    with pytest.raises(ValidationError) as info:
        parse_wire(
            TextchatResponse,
            {
                "apiVersion": secret,
                "releaseId": [secret],
                "requesterId": {"t": secret},
                "sessionId": 5,
                "endConversation": secret,
                "responseElements": secret,
            },
        )
    reason = describe_validation_error(info.value, limit=10)
    assert secret not in reason
    assert "endConversation" in reason
    short = describe_validation_error(info.value, limit=2)
    assert short.endswith("more")
    assert ";" in short


def test_conforming_response_stays_conforming_after_round_trip() -> None:
    conforming = {k: v for k, v in FULL.items() if k != "somethingNew"}
    conforming["responseElements"] = FULL["responseElements"][:3]
    assert not spec_errors("TextchatV2ResponseBody", conforming)
    wire = parse_wire(TextchatResponse, conforming).to_wire()
    assert wire == conforming
    assert not spec_errors("TextchatV2ResponseBody", wire)
