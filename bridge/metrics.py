"""Prometheus metrics, one registry per service instance (never the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "parloa_bridge"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inbound = Counter(
            f"{PREFIX}_inbound_events",
            "Inbound platform events by channel and outcome (accepted, duplicate, ignored, "
            "rejected, unavailable)",
            ["channel", "outcome"],
            registry=r,
        )
        self.duplicates = Counter(
            f"{PREFIX}_duplicates_dropped", "Redelivered events dropped", ["channel"], registry=r
        )
        self.parloa_requests = Counter(
            f"{PREFIX}_parloa_requests",
            "Requests to Parloa by bot, event type and status (HTTP status or error kind)",
            ["bot", "event", "status"],
            registry=r,
        )
        self.parloa_latency = Histogram(
            f"{PREFIX}_parloa_latency_seconds",
            "Time Parloa took to answer",
            ["bot"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=r,
        )
        self.deliveries = Counter(
            f"{PREFIX}_deliveries",
            "Outbox deliveries by channel and outcome (sent, retry, rate_limited, failed, "
            "recipient_gone)",
            ["channel", "outcome"],
            registry=r,
        )
        self.inbox_depth = Gauge(
            f"{PREFIX}_inbox_pending", "Inbound events not yet processed", registry=r
        )
        self.inbox_oldest_age = Gauge(
            f"{PREFIX}_inbox_oldest_pending_age_seconds",
            "Age of the oldest unprocessed inbound event",
            registry=r,
        )
        self.outbox_depth = Gauge(
            f"{PREFIX}_outbox_pending", "Replies not yet delivered", registry=r
        )
        self.dead_letters = Gauge(
            f"{PREFIX}_dead_letters", "Inbound events given up on (see `inbox list`)", registry=r
        )
        self.dead_lettered = Counter(
            f"{PREFIX}_dead_lettered", "Events dead-lettered", ["channel"], registry=r
        )
        self.bot_refused = Gauge(
            f"{PREFIX}_bot_refused",
            "1 while Parloa refuses a bot's token or release (configuration fault)",
            ["bot"],
            registry=r,
        )
        self.sessions_started = Counter(
            f"{PREFIX}_sessions_started", "Parloa sessions launched", ["channel"], registry=r
        )
        self.sessions_ended = Counter(
            f"{PREFIX}_sessions_ended",
            "Sessions ended by reason (bot_ended, user_quit, idle_timeout)",
            ["channel", "reason"],
            registry=r,
        )
        self.unknown_elements = Counter(
            f"{PREFIX}_unknown_response_elements",
            "Response elements of a type the bridge does not know",
            ["type"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
