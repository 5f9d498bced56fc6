"""Fixtures shared by the store's tests."""

from __future__ import annotations

import pytest

from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """The time a module's clocked ``store`` fixture sees; tests move it by hand."""
    return FakeClock()
