"""The desk events, in the wire form the outbox stores and the webhook desk sends, and the
texts the user sees from an agent: pure functions.

Every event has ``type``, ``handover_id`` (the handover's key), ``event_id`` (stable: a
retried delivery sends the same id, so a receiver deduplicates on it) and ``at`` (Unix
time)::

    handover.started        bot, channel, user {id, name, language}, reason, queue, summary,
                            transcript [{role: user | bot | agent, text, at}]
    handover.user_message   text, attachments? [{type, url?, name?, mime_type?, ...}]
    handover.agent_message  text, agent {id, name}     (an agent's reply, as it went out)
    handover.taken          agent {id, name}
    handover.ended          outcome: resolved | timeout | user_left | idle
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bridge.vocabulary import DESK_CHANNEL, HandoverOutcome, NewReply, Turn

STARTED = "handover.started"
USER_MESSAGE = "handover.user_message"
AGENT_MESSAGE = "handover.agent_message"
TAKEN = "handover.taken"
ENDED = "handover.ended"
TYPES = (STARTED, USER_MESSAGE, AGENT_MESSAGE, TAKEN, ENDED)

#: the context items of the user that may name their language, by channel type
LANGUAGE_ITEMS = ("language", "languageCode", "locale")


def event_id(key: str, inbox_id: int | None, what: str) -> str:
    """A desk event's id: the handover, the inbound event it answers, and what it is."""
    return f"{key}:{inbox_id if inbox_id is not None else 0}:{what}"


def _base(kind: str, key: str, eid: str, at: float) -> dict[str, Any]:
    return {"type": kind, "handover_id": key, "event_id": eid, "at": at}


def started(
    key: str,
    eid: str,
    at: float,
    *,
    bot: str,
    channel: str,
    user_id: str,
    context: Mapping[str, Any] | None,
    reason: str | None,
    queue: str | None,
    summary: str | None,
    transcript: Sequence[Turn],
) -> dict[str, Any]:
    context = context or {}
    language = next((str(context[k]) for k in LANGUAGE_ITEMS if context.get(k)), None)
    name = context.get("userName")
    return {
        **_base(STARTED, key, eid, at),
        "bot": bot,
        "channel": channel,
        "user": {"id": user_id, "name": str(name) if name else None, "language": language},
        "reason": reason,
        "queue": queue,
        "summary": summary,
        "transcript": [turn.to_json() for turn in transcript],
    }


def user_message(
    key: str, eid: str, at: float, text: str, attachments: Sequence[Mapping[str, Any]] = ()
) -> dict[str, Any]:
    event = {**_base(USER_MESSAGE, key, eid, at), "text": text}
    if attachments:
        event["attachments"] = [dict(a) for a in attachments]
    return event


def attachments_of(context: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """What the user sent besides text, from the context items the media step added
    (bridge/media/describe.py): each file's signed URL, the first one's type, name and MIME
    type; a location or contact as its items."""
    context = context or {}
    kind = context.get("attachmentType")
    if not kind:
        return []
    urls = str(context.get("attachmentUrls") or context.get("attachmentUrl") or "").split()
    first: dict[str, Any] = {"type": kind}
    for item, name in (
        ("attachmentName", "name"),
        ("attachmentMimeType", "mime_type"),
        ("latitude", "latitude"),
        ("longitude", "longitude"),
        ("contactName", "contact_name"),
        ("contactPhone", "contact_phone"),
    ):
        if context.get(item) is not None:
            first[name] = context[item]
    if not urls:
        return [first]
    return [{**(first if n == 0 else {"type": kind}), "url": url} for n, url in enumerate(urls)]


def with_links(text: str, attachments: Sequence[Mapping[str, Any]]) -> str:
    """A user message as a person reads it at a desk: the text, then each file's link."""
    links = [str(a["url"]) for a in attachments if a.get("url")]
    return "\n".join([text, *links]) if links else text


def _agent(agent_id: str, name: str | None) -> dict[str, Any]:
    return {"id": agent_id or None, "name": name or None}


def agent_message(
    key: str, eid: str, at: float, text: str, agent_id: str, name: str | None
) -> dict[str, Any]:
    return {**_base(AGENT_MESSAGE, key, eid, at), "text": text, "agent": _agent(agent_id, name)}


def taken(key: str, eid: str, at: float, agent_id: str, name: str | None) -> dict[str, Any]:
    return {**_base(TAKEN, key, eid, at), "agent": _agent(agent_id, name)}


def ended(key: str, eid: str, at: float, outcome: HandoverOutcome) -> dict[str, Any]:
    return {**_base(ENDED, key, eid, at), "outcome": outcome.value}


def for_desk(bot: str, key: str, event: dict[str, Any], inbox_id: int | None) -> NewReply:
    """``event`` as an outbox row for ``bot``'s desk."""
    return NewReply([event], {"bot": bot, "handover": key}, inbox_id, channel=DESK_CHANNEL)


def agent_text(text: str, name: str | None, show_name: bool) -> str:
    """What the user reads from an agent."""
    if show_name and name:
        return f"{name}: {text}"
    return text


def trigger(elements: Sequence[Any], payload_key: str) -> tuple[list[Any], dict[str, Any] | None]:
    """Split response elements (wire form) into those the user gets and the handover
    request: the content under ``payload_key`` of the first payload element that has it
    (an object; any other value asks with no details). None when nothing asks."""
    kept: list[Any] = []
    request: dict[str, Any] | None = None
    for element in elements:
        content = element.get("content") if isinstance(element, dict) else None
        if (
            request is None
            and isinstance(element, dict)
            and element.get("type") == "payload"
            and isinstance(content, dict)
            and payload_key in content
        ):
            value = content[payload_key]
            request = dict(value) if isinstance(value, dict) else {}
            continue
        kept.append(element)
    return kept, request


def detail(request: Mapping[str, Any], name: str, limit: int = 1000) -> str | None:
    """A string detail of a handover request (reason, queue, summary), cut to ``limit``."""
    value = request.get(name)
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text[:limit] or None
