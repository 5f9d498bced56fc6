"""Typed, frozen TextchatV2 wire models.

Requests are exact: nothing the spec forbids can be built or validated. Responses are tolerant:
unknown fields are kept (``model_extra``), unknown or broken response elements become
:class:`UnknownElement` instead of failing the whole response. Python names are snake_case;
the wire names (camelCase) are the aliases. Parse wire data with :func:`parse_wire`, which
accepts only the wire names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

API_VERSION: Literal["chat/v1"] = "chat/v1"
PLATFORM = "textchatV2"


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        serialize_by_alias=True,
        frozen=True,
        strict=True,
    )


class _Request(_Wire):
    model_config = ConfigDict(extra="forbid")


class _Response(_Wire):
    model_config = ConfigDict(extra="allow")


# --- requests -------------------------------------------------------------------------------


class LaunchEvent(_Request):
    type: Literal["launch"] = "launch"


class MessageEvent(_Request):
    type: Literal["message"] = "message"
    text: str


class QuitEvent(_Request):
    type: Literal["quit"] = "quit"


Event = Annotated[LaunchEvent | MessageEvent | QuitEvent, Field(discriminator="type")]

ContextString = Annotated[str, StringConstraints(max_length=1000, strict=True)]
ContextValue = ContextString | StrictBool | StrictInt | StrictFloat


class ContextItem(_Request):
    key: str
    value: ContextValue


class TextchatRequest(_Request):
    """The body of ``POST /dialoghook``."""

    api_version: Literal["chat/v1"] = API_VERSION
    event: Event
    requester_id: str
    session_id: str
    context: Annotated[list[ContextItem], Field(max_length=100)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _wire_rules(cls, data: Any, info: ValidationInfo) -> Any:
        # On the wire the spec requires apiVersion and types context as an array (never null);
        # the Python defaults (apiVersion filled in, context=None) only serve building requests.
        if isinstance(info.context, dict) and info.context.get("wire") and isinstance(data, dict):
            if "apiVersion" not in data:
                raise PydanticCustomError("missing", "apiVersion: Field required")
            if "context" in data and data["context"] is None:
                raise PydanticCustomError("list_type", "context: Input should be a valid array")
        return data

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --- responses ------------------------------------------------------------------------------


class TextElement(_Response):
    type: Literal["text"]
    content: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Chip:
    """A suggestion the user can pick: ``title`` is shown, ``value`` is sent back."""

    title: str
    value: str


def _chip(raw: object) -> Chip | None:
    if isinstance(raw, str | int | float) and not isinstance(raw, bool):
        text = str(raw).strip()
        return Chip(text, text) if text else None
    if isinstance(raw, dict):
        title = next(
            (raw[k] for k in ("title", "label", "text", "name") if isinstance(raw.get(k), str)),
            None,
        )
        value = next(
            (raw[k] for k in ("value", "payload", "text", "title") if isinstance(raw.get(k), str)),
            None,
        )
        if title or value:
            return Chip(title or value or "", value or title or "")
    return None


class PayloadElement(_Response):
    """Free JSON the bot designer attached; see :meth:`chips` and :meth:`for_platform`."""

    type: Literal["payload"]
    content: dict[str, Any]
    id: str | None = None

    def chips(self) -> list[Chip]:
        """``suggestionChips`` / ``quickReplies``: strings or ``{title, value}`` objects."""
        chips: list[Chip] = []
        for key in ("suggestionChips", "quickReplies"):
            raw = self.content.get(key)
            if isinstance(raw, list):
                chips.extend(c for c in map(_chip, raw) if c is not None)
        return chips

    def for_platform(self, platform: str) -> Any:
        """Platform-native content keyed by platform name (e.g. ``slack``), unvalidated."""
        return self.content.get(platform)


class ImageVariant(_Response):
    url: str
    width: str | None = None
    height: str | None = None


class CardImage(_Response):
    accessibility_text: str | None = None
    large: ImageVariant | None = None
    small: ImageVariant | None = None

    @property
    def url(self) -> str | None:
        chosen = self.large or self.small
        return chosen.url if chosen else None


class CardElement(_Response):
    type: Literal["cross_card"]
    id: str | None = None
    title: str | None = None
    subtitle: str | None = None
    content: str | None = None
    image: CardImage | None = None


class UnknownElement(_Response):
    """An element of a type we do not know, or a known type that failed validation.
    ``raw`` is what arrived; ``problem`` says why it is not a known element."""

    type: str
    raw: Any
    problem: str


ResponseElement = TextElement | PayloadElement | CardElement | UnknownElement
_ELEMENTS: dict[str, type[TextElement | PayloadElement | CardElement]] = {
    "text": TextElement,
    "payload": PayloadElement,
    "cross_card": CardElement,
}


def parse_element(raw: object) -> ResponseElement:
    """One response element; never raises."""
    if not isinstance(raw, dict):
        return UnknownElement(type="", raw=raw, problem="element is not an object")
    kind = raw.get("type")
    if not isinstance(kind, str):
        return UnknownElement(type="", raw=raw, problem="element has no type")
    model = _ELEMENTS.get(kind)
    if model is None:
        return UnknownElement(
            type=kind,
            raw=raw,
            problem=f"unknown element type {kind!r}",
        )
    try:
        return model.model_validate(raw, by_alias=True, by_name=False)
    except ValidationError as exc:
        return UnknownElement(type=kind, raw=raw, problem=_first_error(exc))


def wire_text(elements: Any, separator: str = "\n\n") -> str:
    """The text elements among stored (wire form) elements, joined: what a person reads of a
    reply in a transcript."""
    if not isinstance(elements, list | tuple):
        return ""
    return separator.join(
        str(e["content"])
        for e in elements
        if isinstance(e, Mapping) and e.get("type") == "text" and e.get("content")
    )


def element_to_wire(element: ResponseElement) -> Any:
    """The wire form of an element (an unknown one as it arrived), for storage."""
    if isinstance(element, UnknownElement):
        return element.raw
    return element.model_dump(mode="json", exclude_none=True)


class TextchatResponse(_Response):
    """The body Parloa answers with. Required fields are required; unknown ones are kept."""

    api_version: str
    release_id: str
    requester_id: str
    session_id: str
    end_conversation: bool
    response_elements: list[ResponseElement]
    conversation_id: str | None = None
    transaction_id: str | None = None

    @field_validator("response_elements", mode="before")
    @classmethod
    def _elements(cls, value: object) -> object:
        if isinstance(value, list):
            return [e if isinstance(e, _Wire) else parse_element(e) for e in value]
        return value

    def to_wire(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_none=True, exclude={"response_elements"})
        data["responseElements"] = [element_to_wire(e) for e in self.response_elements]
        return data


M = TypeVar("M", bound=BaseModel)


def parse_wire(model: type[M], data: object) -> M:
    """Validate wire data (camelCase names only). Raises pydantic's ValidationError."""
    return model.model_validate(data, by_alias=True, by_name=False, context={"wire": True})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """A short, single-line reason from a validation error (no input values echoed)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)
