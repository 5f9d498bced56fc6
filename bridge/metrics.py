"""Prometheus metrics, one registry per service instance (never the global default)."""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "parloa_bridge"
M = TypeVar("M", Counter, Gauge, Histogram)


class Labelled(Generic[M]):
    """A labelled metric whose children are remembered: prometheus_client checks the values
    and takes a lock on every labels() call, and the engine makes several per message (3% of
    its CPU with the updates themselves). As many children as the metric itself keeps."""

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.inbound = Labelled(
            Counter(
                f"{PREFIX}_inbound_events",
                "Inbound platform events by channel and outcome (accepted, duplicate, ignored, "
                "rejected, unavailable)",
                ["channel", "outcome"],
                registry=r,
            )
        )
        self.duplicates = Labelled(
            Counter(
                f"{PREFIX}_duplicates_dropped",
                "Redelivered events dropped",
                ["channel"],
                registry=r,
            )
        )
        self.parloa_requests = Labelled(
            Counter(
                f"{PREFIX}_parloa_requests",
                "Requests to Parloa by bot, event type and status (HTTP status or error kind)",
                ["bot", "event", "status"],
                registry=r,
            )
        )
        self.parloa_latency = Labelled(
            Histogram(
                f"{PREFIX}_parloa_latency_seconds",
                "Time Parloa took to answer",
                ["bot"],
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
                registry=r,
            )
        )
        self.deliveries = Labelled(
            Counter(
                f"{PREFIX}_deliveries",
                "Outbox deliveries by channel and outcome (sent, retry, rate_limited, failed, "
                "recipient_gone)",
                ["channel", "outcome"],
                registry=r,
            )
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
        self.dead_lettered = Labelled(
            Counter(f"{PREFIX}_dead_lettered", "Events dead-lettered", ["channel"], registry=r)
        )
        self.bot_refused = Labelled(
            Gauge(
                f"{PREFIX}_bot_refused",
                "1 while Parloa refuses a bot's token or release (configuration fault)",
                ["bot"],
                registry=r,
            )
        )
        self.sessions_started = Labelled(
            Counter(
                f"{PREFIX}_sessions_started", "Parloa sessions launched", ["channel"], registry=r
            )
        )
        self.sessions_ended = Labelled(
            Counter(
                f"{PREFIX}_sessions_ended",
                "Sessions ended by reason (bot_ended, user_quit, idle_timeout)",
                ["channel", "reason"],
                registry=r,
            )
        )
        self.unknown_elements = Labelled(
            Counter(
                f"{PREFIX}_unknown_response_elements",
                "Response elements of a type the bridge does not know",
                ["type"],
                registry=r,
            )
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
