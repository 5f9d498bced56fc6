"""The console's agent inbox in Chromium against the real bridge (the Service with a web chat
channel whose bot hands over to the console, the simulator as Parloa): what a newcomer does
with ``scripts/demo``. The user asks for a human in the web chat; the handover appears in the
inbox live (the event stream, no reload); the agent takes it, reads what the user writes,
answers, resolves; the user is back with the bot; the conversation's timeline shows the
handover and the agent's message. Screenshots of both pages go to
``test-artifacts/handover/``.

Skipped, like the other browser tests, when Chromium or Playwright is missing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from bridge.devtools.simulator import RunningSimulator

# Skips this module when Chromium or Playwright is missing.
from tests.support.browser import Browser, Page, artifacts_dir, expect, watch_for_errors
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.service import running_service, service_url

if TYPE_CHECKING:  # playwright is imported by tests.support.browser, which skips without it
    from playwright.async_api import Route

pytestmark = pytest.mark.timeout(120)

TOKEN = "a-console-agent-token-0123456789"
CHANNEL = "web"


@pytest.fixture
def artifacts() -> Path:
    return artifacts_dir("handover")


async def say(chat: Page, text: str) -> None:
    field = chat.get_by_label("Your message")
    await field.fill(text)
    await field.press("Enter")


async def test_an_agent_answers_a_web_chat_user_from_the_console(
    tmp_path: Path, sim: RunningSimulator, browser: Browser, artifacts: Path
) -> None:
    channel = {"name": CHANNEL, "type": "webchat", "title": "Demo shop"}
    data = config_data(
        sqlite_url(tmp_path), sim.url, channel, bot={"handover": {"desk": "console"}}
    )
    data["admin"] = {"token": TOKEN}
    config = service_config(data)
    async with running_service(config) as service:
        base = service_url(service)
        console = await browser.new_page(viewport={"width": 1100, "height": 820})
        chat = await browser.new_page(viewport={"width": 480, "height": 760})
        console_problems = watch_for_errors(console)
        chat_problems = watch_for_errors(chat)

        # The agent signs in and opens the inbox: live, and nobody waiting.
        await console.goto(f"{base}/admin/")
        await console.get_by_label("Admin token").fill(TOKEN)
        await console.get_by_role("button", name="Sign in").click()
        await console.get_by_role("link", name="Agents").click()
        await expect(console.get_by_role("heading", name="Agent inbox")).to_be_visible()
        await expect(console.locator("#live")).to_have_text("live")
        await expect(console.locator("#handovers-empty")).to_have_text(
            "Nobody is waiting for an agent."
        )
        await console.get_by_label("Your name (the user sees it)").fill("Anna")

        # The user asks for a person in the web chat.
        await chat.goto(f"{base}/webchat/{CHANNEL}/")
        bot = chat.locator(".msg.bot")
        await expect(bot.first).to_contain_text("demo bot of the parloa-bridge simulator")
        await say(chat, "hello")
        await expect(bot.last).to_have_text("You said: hello")
        await say(chat, "Can I talk to a human, please?")
        await expect(bot.last).to_have_text(config.messages.handover_started)
        await expect(bot.nth(-2)).to_have_text("Let me get a colleague.")
        await chat.screenshot(path=artifacts / "01-chat-asks-for-a-human.png")

        # The inbox shows it without a reload: waiting, counted in the menu.
        item = console.locator(".handover-item")
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text("waiting")
        await expect(item).to_contain_text("the user asked for a person")
        await expect(console.locator("#waiting-count")).to_have_text("1")
        await console.screenshot(path=artifacts / "02-inbox-waiting.png")

        # The agent opens it: the transcript, then takes it.
        await item.get_by_role("link").click()
        transcript = console.locator("#handover-transcript")
        await expect(transcript).to_contain_text("Can I talk to a human, please?")
        await expect(transcript).to_contain_text("You said: hello")
        await console.get_by_role("button", name="Take").click()
        await expect(item).to_contain_text("with Anna")
        await expect(console.get_by_role("button", name="Take")).to_be_disabled()
        await expect(console.locator("#waiting-count")).to_be_hidden()

        # What the user writes now appears in the console live, and Parloa never sees it.
        await say(chat, "my card was charged twice")
        await expect(transcript.locator(".msg.user").last).to_contain_text(
            "my card was charged twice"
        )
        assert "my card was charged twice" not in [r.text for r in sim.state.requests]

        # The agent answers, and the bridge's answer is lost on the way back: the reply stays
        # in the box; sent again, it keeps its id, so the user reads it once.
        async def answer_lost(route: Route) -> None:
            await route.fetch()  # the bridge stores it ...
            await route.abort()  # ... and the page never hears so

        await console.route("**/message", answer_lost)
        await console.get_by_label("Reply to the user").fill("Hi, Anna here. Let me look.")
        await console.get_by_role("button", name="Send").click()
        await expect(console.locator("#notice")).to_contain_text("cannot be reached")
        await expect(console.get_by_label("Reply to the user")).to_have_value(
            "Hi, Anna here. Let me look."
        )
        await expect(bot.last).to_have_text("Anna: Hi, Anna here. Let me look.")
        await console.unroute("**/message")
        await console.get_by_role("button", name="Send").click()
        await expect(transcript.locator(".msg.agent").last).to_contain_text(
            "Hi, Anna here. Let me look."
        )
        await expect(console.get_by_label("Reply to the user")).to_have_value("")
        await console.screenshot(path=artifacts / "03-inbox-conversation.png")
        await chat.screenshot(path=artifacts / "04-chat-with-the-agent.png")

        # Resolved: the user is told, and the next message goes to the bot again.
        await console.get_by_role("button", name="Resolve").click()
        await expect(bot.last).to_have_text(config.messages.handover_ended)
        await expect(console.locator("#handover-ended")).to_contain_text("resolved")
        await expect(console.get_by_role("button", name="Send")).to_be_disabled()
        await expect(item).to_have_count(0)
        await say(chat, "thanks, one more thing")
        await expect(bot.last).to_have_text("You said: thanks, one more thing")
        await expect(bot.filter(has_text="Hi, Anna here. Let me look.")).to_have_count(1)
        await chat.screenshot(path=artifacts / "05-chat-back-with-the-bot.png")
        await console.get_by_label("Show ended handovers").check()
        await expect(item).to_have_count(1)
        await expect(item).to_contain_text("ended: resolved")
        await console.screenshot(path=artifacts / "06-inbox-resolved.png")

        # The conversation's timeline shows the handover and the agent's message.
        await console.get_by_role("link", name="the timeline").click()
        timeline = console.locator("#timeline")
        await expect(timeline.locator(".event.handover").first).to_contain_text(
            "Handed over to a person"
        )
        await expect(timeline.locator(".event.handover.ended")).to_contain_text(
            "resolved by the agent"
        )
        await expect(timeline.locator(".msg.agent")).to_contain_text("Hi, Anna here. Let me look.")
        await console.screenshot(path=artifacts / "07-timeline.png", full_page=True)

        # The agent's name is remembered.
        await console.goto(f"{base}/admin/#/agents")
        await expect(console.get_by_label("Your name (the user sees it)")).to_have_value("Anna")
        assert console_problems == [] and chat_problems == []
        await console.close()
        await chat.close()
