"""What every part of the engine is given."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bridge.config import EngineConfig, MessagesConfig
from bridge.engine.lifecycle import Uniform
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.tracing import Tracing


@dataclass(frozen=True, slots=True)
class Shared:
    """The store, the engine's settings and texts, its metrics, this process's identity (the
    owner of its leases) and the jitter of its backoffs (``random.uniform``; fixed in tests)."""

    store: Store
    config: EngineConfig
    messages: MessagesConfig
    metrics: Metrics
    instance_id: str
    uniform: Uniform = field(default=random.uniform)
    #: an upload or download larger than this is not stored ([media] max_bytes)
    max_media_bytes: int = 20 * 1024 * 1024
    #: spans of each event's way through the engine (bridge/tracing.py); off by default
    tracing: Tracing = field(default_factory=Tracing)
