"""The real Service inside the test process, configured by tests/support/config.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridge.config import BridgeConfig
from bridge.service import Service
from tests.support.net import local_url


@asynccontextmanager
async def running_service(config: BridgeConfig) -> AsyncIterator[Service]:
    """The service started for the block and stopped after it."""
    service = Service(config)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def service_url(service: Service) -> str:
    """``http://127.0.0.1:PORT`` of the started service's HTTP server."""
    assert service.http is not None, "the service is not started"
    return local_url(service.http.port)
