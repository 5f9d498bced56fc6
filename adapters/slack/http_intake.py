"""The Slack HTTP route's door before Bolt: a request becomes a Bolt request only when it is
signed by Slack and its body reads the way Bolt will read it (:mod:`adapters.slack.intake`);
otherwise it gets its answer here, 401 or 400, never a 500."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from slack_bolt.request.async_request import AsyncBoltRequest

from adapters.slack.intake import read_body, signature_problem
from bridge.channel import UnreadableBody

log = logging.getLogger("adapters.slack")


def bolt_request_or_refusal(
    request: web.Request, raw: bytes, secret: bytes, channel: str
) -> AsyncBoltRequest | web.Response:
    """The Bolt request for ``raw`` (the request's body), or the response refusing it."""
    problem = signature_problem(
        secret,
        raw,
        request.headers.get("X-Slack-Request-Timestamp"),
        request.headers.get("X-Slack-Signature"),
        now=time.time(),
    )
    if problem is not None:
        log.info("slack channel %s: request refused: %s", channel, problem)
        return web.json_response({"error": problem}, status=401)
    try:
        text = read_body(raw, request.content_type)
        return AsyncBoltRequest(
            body=text,
            query=request.query_string,
            headers=request.headers,  # type: ignore[arg-type]
        )
    except UnreadableBody as exc:
        log.info("slack channel %s: unreadable request: %s", channel, exc)
        return web.json_response({"error": str(exc)}, status=400)
    except Exception as exc:  # Bolt reading fields of a shape Slack never sends
        log.info("slack channel %s: unreadable request: %r", channel, exc)
        return web.json_response({"error": "not a Slack request"}, status=400)
