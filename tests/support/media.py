"""The worker's media step for engine-level tests: files signed with a fixed key on a fixed
base URL, fetched through the test's adapters."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bridge.channel import Adapter
from bridge.config import MessagesConfig
from bridge.engine.media import Media, MediaSettings
from bridge.media.speech import SpeechToText
from bridge.media.urls import Signer
from bridge.metrics import Metrics
from bridge.store import Store
from tests.support.engine import FAST

KEY = b"k" * 32
BASE = "http://bridge.test"


def media(
    max_bytes: int = 1024 * 1024,
    timeout: float = 10.0,
    speech: Mapping[str, SpeechToText] | None = None,
    messages: MessagesConfig | None = None,
    metrics: Metrics | None = None,
) -> Callable[[Store, Mapping[str, Adapter]], Media]:
    """What ``harness(media=...)`` takes: the media step with these settings."""
    placeholders = (messages or MessagesConfig()).placeholders()

    async def signer() -> Signer:
        return Signer(KEY, lambda: BASE, 3600)

    def make(store: Store, adapters: Mapping[str, Adapter]) -> Media:
        settings = MediaSettings(max_bytes, timeout, placeholders, FAST.retry_budget_seconds)
        return Media(store, adapters, signer, settings, speech or {}, metrics=metrics)

    return make
