"""The issue's browser test: the console in Chromium against the real bridge (the Service with
a webhook channel, the simulator as Parloa). A message Parloa refuses with 400 becomes a dead
letter at once; the operator finds it in the list, opens its conversation, presses Retry and
sees it answered. Screenshots of the list, the timeline and the overview go to
``test-artifacts/console/``.

Skipped, like the web chat's browser test, when Chromium or Playwright is missing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.devtools.faults import Faults
from bridge.devtools.simulator import RunningSimulator
from tests.bridge.admin.test_console_browser import TOKEN, artifacts

# Skips this module as it skips its own when Chromium or Playwright is missing.
from tests.support.browser import Browser, Page, expect, watch_for_errors
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.process import CHANNEL, Receiver, Sender, webhook_channel
from tests.support.service import running_service, service_url
from tests.support.waiting import poll_until

__all__ = ["artifacts"]  # a fixture

pytestmark = pytest.mark.timeout(120)


async def dead_letters(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with http.get(f"{base}/admin/api/dead-letters", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return list(body["dead_letters"])


async def test_a_dead_letter_is_retried_from_the_console_and_answered(
    tmp_path: Path,
    sim: RunningSimulator,
    browser: Browser,
    artifacts: Path,
) -> None:
    receiver = Receiver()
    await receiver.start()
    data = config_data(sqlite_url(tmp_path), sim.url, webhook_channel(receiver.url))
    data["admin"] = {"token": TOKEN}
    try:
        async with (
            running_service(service_config(data)) as service,
            aiohttp.ClientSession() as http,
            Sender([f"{service_url(service)}/webhook/{CHANNEL}/events"]) as sender,
        ):
            base = service_url(service)

            async def send(user: str, text: str) -> None:
                await sender.send(user, text, deadline=time.monotonic() + 10)

            # one message answered, then one Parloa refuses: 400 is not retried, a dead letter
            await send("alice", "hi")
            await receiver.wait_for(lambda r: "hi" in r.echoes("alice"), within=20)
            sim.state.faults = Faults(status=400)
            await send("alice", "where is my order?")
            (dead,) = await poll_until(lambda: dead_letters(http, base), within=20)
            sim.state.faults = Faults()
            await send("bob", "hello")
            await receiver.wait_for(lambda r: "hello" in r.echoes("bob"), within=20)

            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            problems = watch_for_errors(page)
            await page.goto(f"{base}/admin/")
            await page.get_by_label("Admin token").fill(TOKEN)
            await page.get_by_role("button", name="Sign in").click()

            # the list: both conversations, alice's marked with her dead letter
            rows = page.locator("#conversations-rows tr")
            await expect(rows).to_have_count(2)
            marked = page.locator("tr.has-dead")
            await expect(marked).to_have_count(1)
            await expect(marked).to_contain_text("alice")
            await expect(marked.locator(".badge.bad")).to_have_text("1")
            await page.screenshot(path=artifacts / "10-bridge-conversations.png")

            # the timeline: the answered message, then the dead letter with Parloa's 400
            await marked.get_by_role("link").click()
            title = f"Conversation #{dead['conversation_id']}"
            await expect(page.get_by_role("heading", name=title)).to_be_visible()
            event = page.locator(f"#event-{dead['id']}")
            await expect(event).to_have_class("event dead")
            await expect(event.locator(".msg.user .bubble")).to_have_text("where is my order?")
            await expect(event.locator(".call.bad").first).to_contain_text("HTTP 400")
            answered = page.locator(".event:not(.dead)")
            await expect(answered.locator(".msg.bot .bubble").last).to_have_text("You said: hi")
            await expect(answered.locator(".call:not(.bad)").last).to_contain_text("HTTP 200")
            await page.screenshot(
                path=artifacts / "11-bridge-timeline-dead-letter.png", full_page=True
            )

            # Retry: the bridge sends it to Parloa again and the answer appears in the timeline
            await event.get_by_role("button", name="Retry").click()
            await expect(page.get_by_role("status")).to_have_text("Retried 1 dead letter.")
            # (after the bridge's apology sent when it gave up on the event)
            await expect(event.locator(".msg.bot .bubble")).to_have_count(2, timeout=20_000)
            await expect(event.locator(".msg.bot .bubble").last).to_have_text(
                "You said: where is my order?"
            )
            await expect(event).to_have_class("event")
            await expect(event.locator(".call.bad")).to_have_count(1)  # the 400 stays on record
            await expect(event.locator(".call:not(.bad)").last).to_contain_text("HTTP 200")
            await expect(event.locator(".delivery").last).to_contain_text("sent")
            await page.screenshot(path=artifacts / "12-bridge-timeline-retried.png", full_page=True)
            assert "where is my order?" in receiver.echoes("alice")
            assert await dead_letters(http, base) == []

            # the transcript, fetched with the token and saved as a file
            async with page.expect_download() as waiting:
                await page.get_by_role("button", name="Download transcript (JSON lines)").click()
            saved = tmp_path / "transcript.jsonl"
            await (await waiting.value).save_as(saved)
            lines = [json.loads(line) for line in saved.read_text().splitlines()]
            said = [(line["from"], line.get("text")) for line in lines if line.get("text")]
            assert ("user", "where is my order?") in said
            assert said.index(("user", "hi")) < said.index(("user", "where is my order?"))

            # the overview: the last hour's messages, the failure and Parloa's latency
            await page.get_by_role("link", name="Overview").click()
            await expect(page.locator("#chart-messages svg")).to_have_attribute("role", "img")
            await expect(page.locator("#bot-rows tr")).to_have_count(1)
            await expect(page.locator("#bot-rows tr")).to_contain_text("demo")
            await expect(page.locator("#channel-rows tr")).to_contain_text(CHANNEL)
            await page.screenshot(path=artifacts / "13-bridge-overview.png", full_page=True)
            assert problems == []
            await page.close()
    finally:
        await receiver.close()


async def test_without_a_token_the_console_says_the_admin_api_is_disabled(
    tmp_path: Path, sim: RunningSimulator, browser: Browser
) -> None:
    data = config_data(sqlite_url(tmp_path), sim.url, webhook_channel("http://127.0.0.1:9/"))
    async with running_service(service_config(data)) as service:
        page: Page = await browser.new_page()
        problems = watch_for_errors(page)
        await page.goto(f"{service_url(service)}/admin")
        await expect(page.get_by_role("heading", name="The admin API is disabled")).to_be_visible()
        await expect(page.get_by_label("Admin token")).to_be_hidden()
        assert problems == []
        await page.close()
