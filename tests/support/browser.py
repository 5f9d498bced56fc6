"""Chromium for the browser tests (the web chat, the console): Debian's Chromium driven by
Playwright, whose own browser downloads are never used. Importing this module skips the
importing test module when Chromium or the playwright package is missing;
``PARLOA_BRIDGE_CHROMIUM`` points at another Chromium binary."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.paths import ROOT

CHROMIUM = os.environ.get("PARLOA_BRIDGE_CHROMIUM") or shutil.which("chromium") or ""
if not CHROMIUM or not Path(CHROMIUM).exists():
    pytest.skip(
        "the browser test needs Chromium (apt-get install -y chromium)", allow_module_level=True
    )
try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError:
    pytest.skip(
        "the browser test needs the playwright package (pip install playwright)",
        allow_module_level=True,
    )

__all__ = ["Browser", "Page", "expect"]

#: headless, and quiet on a machine with no internet (no background connections)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium, closed when the block ends."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


def artifacts_dir(name: str) -> Path:
    """``test-artifacts/<name>/`` (screenshots), made when missing."""
    path = ROOT / "test-artifacts" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def watch_for_errors(page: Page) -> list[str]:
    """Script errors and policy violations of the page (network errors while the server is
    down are expected and not collected)."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"script error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    return problems
