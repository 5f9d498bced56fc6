"""The web chat in a real browser: Debian's Chromium driven by Playwright, against the real
in-process Service with the simulator as Parloa. Screenshots of every step go to
``test-artifacts/webchat/``.

Needs the ``playwright`` Python package (its browsers are never downloaded: the system's
Chromium is used) and ``chromium`` (Debian package); skipped when either is missing.
``PARLOA_BRIDGE_CHROMIUM`` points at another Chromium binary. Waits are on page conditions
(Playwright's ``expect``), never fixed sleeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from adapters.webchat.channel import WebchatAdapter, WebchatOptions
from bridge.channel import AdapterServices, Delivery
from bridge.devtools.demo_bot import card_png
from bridge.devtools.simulator import RunningSimulator
from bridge.media.attachments import STORED_PREFIX, AttachmentType
from bridge.service import Service
from bridge.textchat.models import parse_element
from tests.adapters.webchat.test_channel import CHANNEL, SECRET, config_for
from tests.adapters.webchat.test_uploads import MediaIntake
from tests.support.browser import (
    Browser,
    Page,
    artifacts_dir,
    expect,
    watch_for_errors,
)
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.net import free_port, serving
from tests.support.waiting import poll_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def artifacts() -> Path:
    return artifacts_dir("webchat")


def service_on(tmp_path: Path, sim: RunningSimulator, port: int, **channel: Any) -> Service:
    return Service(config_for(sqlite_url(tmp_path), sim, port=port, **channel))


async def send(page: Page, text: str) -> None:
    field = page.get_by_label("Your message")
    await field.fill(text)
    await field.press("Enter")


async def test_chat_in_a_browser(
    tmp_path: Path, sim: RunningSimulator, browser: Browser, artifacts: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/webchat/{CHANNEL}/"
    # One identity key for both processes: the page's identity outlives the restart.
    service = service_on(tmp_path, sim, port, title="Demo shop", identity_secret=SECRET)
    await service.start()
    try:
        context = await browser.new_context(viewport={"width": 480, "height": 760})
        page = await context.new_page()
        problems = watch_for_errors(page)
        await page.goto(url)
        await expect(page).to_have_title("Demo shop")
        await expect(page.get_by_role("heading", name="Demo shop")).to_be_visible()
        await expect(page.locator("#status")).to_have_text("")  # connected

        # opening the chat starts the conversation: the welcome with its chips comes first
        bot = page.locator(".msg.bot")
        await expect(bot.first).to_contain_text("demo bot of the parloa-bridge simulator")
        await expect(page.locator("#log > li")).to_have_count(1)
        chips = page.get_by_role("group", name="Suggestions").get_by_role("button")
        await expect(chips).to_have_text(["Show me a card", "What can you do?", "bye"])
        await expect(page.locator("#typing")).to_be_hidden()
        await page.screenshot(path=artifacts / "01-welcome.png")

        # a chip: the card, with its image; the chips are spent
        await page.get_by_role("button", name="Show me a card").click()
        card = page.locator("article.card")
        await expect(card.get_by_role("heading")).to_have_text("A card from the simulator")
        await expect(card).to_contain_text("Rendered by your channel")
        image = card.get_by_role("img", name="A colourful gradient")
        await expect(image).to_be_visible()
        await expect(image).to_have_js_property("complete", True)
        assert await image.evaluate("img => img.naturalWidth") == 320
        await expect(chips.first).to_be_disabled()
        await expect(page.locator(".msg.user").first).to_have_text("Show me a card")
        await page.screenshot(path=artifacts / "02-card.png")

        # a message: its echo
        await send(page, "hello")
        await expect(bot.nth(2)).to_have_text("You said: hello")
        await expect(page.locator(".msg.user.pending")).to_have_count(0)  # acknowledged

        # bye: the farewell
        await send(page, "bye")
        await expect(bot.last).to_have_text("Bye! See you later :)")
        await page.screenshot(path=artifacts / "03-farewell.png")

        # a reload shows the conversation again, the user's messages in their places
        items = page.locator("#log > li")
        await expect(items).to_have_count(7)
        before = await items.all_inner_texts()
        await page.reload()
        await expect(page.locator("#status")).to_have_text("")
        await expect(items).to_have_count(7)
        await expect(page.locator(".msg.user")).to_have_text(["Show me a card", "hello", "bye"])
        await expect(items.nth(0)).to_contain_text("demo bot")  # not greeted again
        await expect(items.nth(1)).to_have_text("Show me a card")
        await expect(items.nth(2).locator("article.card img")).to_be_visible()
        await expect(items.nth(3)).to_have_text("hello")
        await expect(items.nth(4)).to_have_text("You said: hello")
        await expect(items.nth(5)).to_have_text("bye")
        await expect(items.nth(6)).to_have_text("Bye! See you later :)")
        assert await items.all_inner_texts() == before
        await expect(page.locator(".chips button:enabled")).to_have_count(0)
        await page.screenshot(path=artifacts / "04-reloaded.png")

        # the service restarts: the page reconnects and sends what was typed meanwhile
        await service.stop()
        await expect(page.locator("#status")).to_contain_text("Reconnecting")
        await send(page, "anyone there?")
        await expect(page.locator(".msg.user.pending")).to_have_text("anyone there?Sending…")
        await page.screenshot(path=artifacts / "05-offline.png")
        service = service_on(tmp_path, sim, port, title="Demo shop", identity_secret=SECRET)
        await service.start()
        await expect(page.locator("#status")).to_have_text("", timeout=15_000)
        await expect(bot.last).to_have_text("You said: anyone there?")
        await expect(page.locator(".msg.user.pending")).to_have_count(0)
        await page.screenshot(path=artifacts / "06-after-restart.png")

        # the restart link starts a new conversation
        await page.get_by_role("button", name="Restart conversation").click()
        await expect(page.locator("#log > li.note")).to_have_text(["Conversation restarted"])
        await expect(bot.last).to_contain_text("demo bot")
        assert problems == []
        await context.close()
    finally:
        await service.stop()
    launches = [r for r in sim.state.requests if r.event_type == "launch"]
    assert len(launches) == 3  # the greeting; after bye, "anyone there?"; the restart


async def test_too_fast_gets_a_polite_notice(
    tmp_path: Path, sim: RunningSimulator, browser: Browser, artifacts: Path
) -> None:
    port = free_port()
    # A burst of 5 and (almost) no refill: the same outcome however fast the browser types.
    service = service_on(tmp_path, sim, port, socket_burst=5, socket_rate_per_second=0.001)
    await service.start()
    try:
        page = await browser.new_page(viewport={"width": 480, "height": 760})
        problems = watch_for_errors(page)
        await page.goto(f"http://127.0.0.1:{port}/webchat/{CHANNEL}/")
        await expect(page.locator(".msg.bot").first).to_contain_text("demo bot")
        for i in range(8):  # the greeting took one of the socket's 5
            await send(page, f"quick {i}")
        failed = page.locator(".msg.user.failed")
        await expect(failed).to_have_count(4)
        await expect(failed.first).to_have_text(
            "quick 4You're sending messages too fast — please wait a moment."
        )
        await expect(page.locator(".msg.user.pending")).to_have_count(0)
        # what was accepted is answered
        await expect(page.locator(".msg.bot")).to_have_count(1 + 4)
        await expect(page.locator(".msg.bot").last).to_have_text("You said: quick 3")
        await page.screenshot(path=artifacts / "08-too-fast.png")
        assert problems == []
        await page.close()
    finally:
        await service.stop()


async def test_embedded_on_another_site(
    tmp_path: Path, sim: RunningSimulator, browser: Browser, artifacts: Path
) -> None:
    bridge_port, site_port = free_port(), free_port()
    site_origin = f"http://127.0.0.1:{site_port}"
    embed = f"http://127.0.0.1:{bridge_port}/webchat/{CHANNEL}/embed.js"

    async def home(_request: web.Request) -> web.Response:
        html = (
            "<!doctype html><html lang='en'><head><title>Shop</title></head><body>"
            "<h1>A shop</h1><p>Buy things here.</p>"
            f"<script src='{embed}' data-label='Chat with the shop' async></script>"
            "</body></html>"
        )
        return web.Response(text=html, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", home)
    async with serving(app, site_port):
        service = service_on(tmp_path, sim, bridge_port, allowed_origins=[site_origin])
        await service.start()
        try:
            page = await browser.new_page(viewport={"width": 900, "height": 760})
            problems = watch_for_errors(page)
            await page.goto(site_origin + "/")
            opener = page.get_by_role("button", name="Chat with the shop")
            await expect(opener).to_have_attribute("aria-expanded", "false")
            await opener.click()
            await expect(opener).to_have_attribute("aria-expanded", "true")
            chat = page.frame_locator("#parloa-bridge-webchat-frame")
            await expect(chat.locator("#status")).to_have_text("")
            field = chat.get_by_label("Your message")
            await field.fill("hi from the shop")
            await field.press("Enter")
            await expect(chat.locator(".msg.bot").last).to_have_text("You said: hi from the shop")
            await page.screenshot(path=artifacts / "07-embedded.png")
            assert problems == []
            await page.close()
        finally:
            await service.stop()


async def test_an_identity_the_bridge_did_not_issue_is_replaced(
    tmp_path: Path, sim: RunningSimulator, browser: Browser
) -> None:
    port = free_port()
    service = service_on(tmp_path, sim, port)
    await service.start()
    try:
        page = await browser.new_page()
        problems = watch_for_errors(page)
        await page.goto(f"http://127.0.0.1:{port}/webchat/{CHANNEL}/")
        await expect(page.locator(".msg.bot").first).to_contain_text("demo bot")
        key = f"parloa-bridge:webchat:{CHANNEL}:identity"
        forged = {"user": "f" * 32, "token": "A" * 43}
        await page.evaluate("([k, v]) => localStorage.setItem(k, JSON.stringify(v))", [key, forged])
        await page.reload()
        # refused, then a new identity: a new conversation, greeted
        await expect(page.locator("#status")).to_have_text("")
        await expect(page.locator(".msg.bot")).to_have_count(1)
        await expect(page.locator(".msg.bot").first).to_contain_text("demo bot")
        stored = await page.evaluate("k => JSON.parse(localStorage.getItem(k))", key)
        assert stored["user"] not in (None, forged["user"])
        assert problems == []
        await page.close()
    finally:
        await service.stop()
    assert [r.event_type for r in sim.state.requests] == ["launch", "launch"]


async def test_a_photo_is_uploaded_and_a_reply_with_an_image_is_shown_inline(
    tmp_path: Path, browser: Browser, artifacts: Path
) -> None:
    """The page's attach button against the adapter with an in-memory media store (the core's
    side); the bot's reply, a payload with an image attachment, is delivered by the test."""
    photo = tmp_path / "kettle.png"
    photo.write_bytes(card_png(200, 120))
    options = WebchatOptions(identity_secret=SECRET, title="Demo shop")  # type: ignore[arg-type]
    adapter = WebchatAdapter(CHANNEL, options, AdapterServices(None, "text only"))
    intake = MediaIntake(CHANNEL)
    await adapter.start(intake)

    async def reply_image(_request: web.Request) -> web.Response:
        return web.Response(body=card_png(320, 180), content_type="image/png")

    app = web.Application()
    app.add_routes([*adapter.routes(), web.get("/files/replacement.png", reply_image)])
    try:
        async with serving(app) as base:
            page = await browser.new_page(viewport={"width": 480, "height": 760})
            problems = watch_for_errors(page)
            await page.goto(f"{base}/webchat/{CHANNEL}/")
            await expect(page.locator("#status")).to_have_text("")  # connected

            # a caption typed, then a file attached: uploaded, then sent with the caption
            await page.get_by_label("Your message").fill("my kettle is broken")
            async with page.expect_file_chooser() as chooser:
                await page.get_by_role("button", name="Attach a file").click()
            await (await chooser.value).set_files(photo)
            own = page.locator(".msg.user")
            await expect(own).to_have_count(1)
            await expect(own.locator("figure.attachment img")).to_be_visible()
            await expect(own.locator(".bubble")).to_have_text("my kettle is broken")
            await expect(page.locator(".msg.user.pending")).to_have_count(0)  # acknowledged
            await expect(page.locator(".msg.user.failed")).to_have_count(0)

            inbound = await poll_until(
                lambda: next((e for e in intake.accepted if e.attachments), None)
            )
            (attachment,) = inbound.attachments
            assert inbound.text == "my kettle is broken"
            assert (attachment.type, attachment.name, attachment.mime_type) == (
                AttachmentType.PHOTO,
                "kettle.png",
                "image/png",
            )
            media_id = attachment.locator.removeprefix(STORED_PREFIX)
            assert intake.media[media_id].data == photo.read_bytes()

            # the bot answers with a text and an image: shown inline, with its caption
            content = {
                "attachments": [
                    {
                        "type": "image",
                        "url": f"{base}/files/replacement.png",
                        "caption": "Your replacement kettle",
                    },
                    {"type": "file", "url": f"{base}/files/manual.pdf", "name": "Manual.pdf"},
                ]
            }
            elements = [
                parse_element({"type": "text", "content": "Sorry! Here is a new one."}),
                parse_element({"type": "payload", "content": content}),
            ]
            done: list[int] = []

            async def progress(i: int, _message_id: str | None) -> None:
                done.append(i)

            await adapter.deliver(
                Delivery(1, inbound.user_id, {"user": inbound.user_id}, elements, 0, progress)
            )
            bot = page.locator(".msg.bot").last
            await expect(bot.locator(".bubble")).to_have_text("Sorry! Here is a new one.")
            image = bot.get_by_role("img", name="Your replacement kettle")
            await expect(image).to_be_visible()
            await expect(image).to_have_js_property("complete", True)
            assert await image.evaluate("img => img.naturalWidth") == 320
            await expect(bot.locator("figcaption")).to_have_text("Your replacement kettle")
            link = bot.get_by_role("link", name="Manual.pdf")
            await expect(link).to_have_attribute("href", f"{base}/files/manual.pdf")
            await page.screenshot(path=artifacts / "09-upload-and-image-reply.png")

            # a reload shows the own message by its file name, and the reply again
            await page.reload()
            await expect(page.locator("#status")).to_have_text("")
            await expect(page.locator(".msg.user .file-link")).to_have_text("kettle.png")
            await expect(page.locator(".msg.bot figure.attachment img")).to_be_visible()
            assert problems == []
            assert done == [0]
            await page.close()
    finally:
        await adapter.stop()


async def test_a_photo_sent_from_the_page_reaches_parloa(
    tmp_path: Path, sim: RunningSimulator, browser: Browser, artifacts: Path
) -> None:
    """The same through the real Service: the upload is stored by the bridge, Parloa gets the
    placeholder and a signed URL serving the very bytes; the demo bot echoes the text."""
    photo = tmp_path / "kettle.png"
    photo.write_bytes(card_png(200, 120))
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    channel = {"name": CHANNEL, "type": "webchat", "identity_secret": SECRET}
    config = service_config(
        config_data(
            sqlite_url(tmp_path), sim.url, channel, http={"port": port, "public_url": public}
        )
    )
    service = Service(config)
    await service.start()
    try:
        page = await browser.new_page(viewport={"width": 480, "height": 760})
        problems = watch_for_errors(page)
        await page.goto(f"{public}/webchat/{CHANNEL}/")
        await expect(page.locator(".msg.bot").first).to_contain_text("demo bot")
        async with page.expect_file_chooser() as chooser:
            await page.get_by_role("button", name="Attach a file").click()
        await (await chooser.value).set_files(photo)
        await expect(page.locator(".msg.bot").last).to_have_text("You said: [photo]")
        await expect(page.locator(".msg.user.pending")).to_have_count(0)
        await page.screenshot(path=artifacts / "10-photo-to-parloa.png")
        (message,) = [r for r in sim.state.requests if r.event_type == "message"]
        context = {c["key"]: c["value"] for c in message.context or []}
        assert (context["attachmentType"], context["attachmentName"]) == ("photo", "kettle.png")
        async with (
            aiohttp.ClientSession() as anonymous,
            anonymous.get(context["attachmentUrl"]) as resp,
        ):
            assert (resp.status, await resp.read()) == (200, photo.read_bytes())
        assert problems == []
        await page.close()
    finally:
        await service.stop()
