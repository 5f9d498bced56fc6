"""The bridge's SQL store: what it stores and the one facade the engine and the CLI use."""

from bridge.store.errors import (
    DataRefused,
    LeaseLost,
    SchemaRefused,
    StoreClosed,
    StoreError,
    StoreUnavailable,
)
from bridge.store.facade import Store
from bridge.store.statements import OUTBOX_BATCH

__all__ = [
    "OUTBOX_BATCH",
    "DataRefused",
    "LeaseLost",
    "SchemaRefused",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
]
