"""The metrics registry: what the engine counts is exported, one registry per service."""

from __future__ import annotations

from bridge.metrics import Metrics


def test_labelled_counts_are_exported() -> None:
    metrics = Metrics()
    metrics.deliveries.labels("tg", "sent").inc()
    metrics.deliveries.labels("tg", "sent").inc()
    metrics.deliveries.labels("tg", "failed").inc()
    metrics.parloa_latency.labels("demo").observe(0.2)
    assert (
        metrics.registry.get_sample_value(
            "parloa_bridge_deliveries_total", {"channel": "tg", "outcome": "sent"}
        )
        == 2
    )
    text = metrics.render().decode()
    assert 'parloa_bridge_deliveries_total{channel="tg",outcome="failed"} 1.0' in text
    assert 'parloa_bridge_parloa_latency_seconds_count{bot="demo"} 1.0' in text


def test_two_services_keep_separate_counts() -> None:
    """One registry per service instance: what one counts is not the other's."""
    first, second = Metrics(), Metrics()
    first.inbound.labels("tg", "accepted").inc()
    second.inbound.labels("tg", "accepted")  # the child exists there, at 0 (not absent)
    assert (
        second.registry.get_sample_value(
            "parloa_bridge_inbound_events_total", {"channel": "tg", "outcome": "accepted"}
        )
        == 0
    )
