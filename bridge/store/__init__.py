"""The bridge's SQL store: what it stores and the one facade the engine and the CLI use."""

from bridge.store.repository import LeaseLost, Store, StoreUnavailable

__all__ = ["LeaseLost", "Store", "StoreUnavailable"]
