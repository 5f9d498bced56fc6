"""Prometheus metrics, one registry per service instance (never the global default)."""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "parloa_bridge"

M = TypeVar("M", Counter, Gauge, Histogram)

# What each metric counts (its HELP), by its name after the prefix.
HELP = {
    "inbound_events": (
        "Inbound platform events by channel and outcome (accepted, duplicate, refused, unavailable)"
    ),
    "duplicates_dropped": "Redelivered events dropped",
    "parloa_requests": (
        "Requests to Parloa by bot, event type and status (HTTP status or error kind)"
    ),
    "parloa_latency_seconds": "Time Parloa took to answer",
    "deliveries": (
        "Outbox deliveries by channel and outcome (sent, retry, rate_limited, failed, "
        "recipient_gone)"
    ),
    "inbox_pending": "Inbound events not yet processed",
    "inbox_oldest_pending_age_seconds": "Age of the oldest unprocessed inbound event",
    "outbox_pending": "Replies not yet delivered",
    "dead_letters": "Inbound events given up on (see `inbox list`)",
    "dead_lettered": "Events dead-lettered",
    "bot_refused": "1 while Parloa refuses a bot's token or release (configuration fault)",
    "breaker_open": (
        "1 while a bot's circuit breaker is open or half-open (Parloa keeps failing; waiting "
        "conversations pause until a probe succeeds)"
    ),
    "breaker_openings": "Times a bot's circuit breaker opened",
    "sessions_started": "Parloa sessions launched",
    "sessions_ended": (
        "Sessions ended by reason (bot_ended, user_quit, idle_timeout, recipient_gone, "
        "handover_resolved, handover_timeout, handover_ended)"
    ),
    "unknown_response_elements": "Response elements of a type the bridge does not know",
    "attachments": (
        "Attachments of inbound messages by channel, type and outcome (stored; too_large; "
        "unavailable: gone, refused or its retries spent; retry; data: a location or contact)"
    ),
    "attachment_bytes": "Bytes of attachments stored, by channel",
    "transcriptions": "Voice notes sent to speech-to-text, by bot and outcome (ok, failed)",
    "handovers_started": "Handovers to a live agent started, by bot and desk",
    "handovers_ended": "Handovers ended, by bot, desk and outcome (resolved, timeout, "
    "user_left, idle)",
    "handovers_open": "Handovers not ended (waiting for an agent or taken), by bot and desk",
    "handover_time_to_take_seconds": "From a handover's start until an agent took it, by bot",
    "handover_time_to_first_reply_seconds": "From a handover's start until an agent's first "
    "message to the user, by bot",
}

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
#: how long users wait for a person: seconds to an hour
HANDOVER_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        declare = self._declare  # a kind, a name from HELP, the labels
        self.inbound = declare(Counter, "inbound_events", "channel", "outcome")
        self.duplicates = declare(Counter, "duplicates_dropped", "channel")
        self.parloa_requests = declare(Counter, "parloa_requests", "bot", "event", "status")
        self.parloa_latency = declare(
            Histogram, "parloa_latency_seconds", "bot", buckets=LATENCY_BUCKETS
        )
        self.deliveries = declare(Counter, "deliveries", "channel", "outcome")
        self.inbox_depth = declare(Gauge, "inbox_pending")
        self.inbox_oldest_age = declare(Gauge, "inbox_oldest_pending_age_seconds")
        self.outbox_depth = declare(Gauge, "outbox_pending")
        self.dead_letters = declare(Gauge, "dead_letters")
        self.dead_lettered = declare(Counter, "dead_lettered", "channel")
        self.bot_refused = declare(Gauge, "bot_refused", "bot")
        self.breaker_open = declare(Gauge, "breaker_open", "bot")
        self.breaker_openings = declare(Counter, "breaker_openings", "bot")
        self.sessions_started = declare(Counter, "sessions_started", "channel")
        self.sessions_ended = declare(Counter, "sessions_ended", "channel", "reason")
        self.unknown_elements = declare(Counter, "unknown_response_elements", "type")
        self.attachments = declare(Counter, "attachments", "channel", "type", "outcome")
        self.attachment_bytes = declare(Counter, "attachment_bytes", "channel")
        self.transcriptions = declare(Counter, "transcriptions", "bot", "outcome")
        self.handovers_started = declare(Counter, "handovers_started", "bot", "desk")
        self.handovers_ended = declare(Counter, "handovers_ended", "bot", "desk", "outcome")
        self.handovers_open = declare(Gauge, "handovers_open", "bot", "desk")
        self.handover_take_seconds = declare(
            Histogram, "handover_time_to_take_seconds", "bot", buckets=HANDOVER_BUCKETS
        )
        self.handover_first_reply_seconds = declare(
            Histogram, "handover_time_to_first_reply_seconds", "bot", buckets=HANDOVER_BUCKETS
        )

    def _declare(self, kind: type[M], name: str, *labels: str, **options: Any) -> M:
        """A metric of ``kind`` in this registry, named ``{PREFIX}_{name}``, its help from
        ``HELP``; ``options``: the kind's own (a histogram's buckets)."""
        return kind(f"{PREFIX}_{name}", HELP[name], labels, registry=self.registry, **options)

    def render(self) -> bytes:
        return generate_latest(self.registry)
