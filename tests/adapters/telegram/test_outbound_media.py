"""Files Parloa sends (a payload's ``attachments``): rendered to Telegram parts (media_render.py,
pure) and sent by URL against the fake Bot API, with the link fallback when Telegram cannot
fetch a URL (delivery.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from adapters.telegram.budgets import SendBudgets
from adapters.telegram.channel import build_bot
from adapters.telegram.delivery import Sender
from adapters.telegram.options import TelegramOptions
from adapters.telegram.parts import (
    MAX_CAPTION,
    AlbumItem,
    AlbumPart,
    Button,
    MediaPart,
    TextPart,
)
from adapters.telegram.render import RenderOptions, render
from bridge.channel import Delivery, DeliveryRejected
from bridge.textchat.models import ResponseElement, parse_element
from bridge.textsplit import utf16_len
from tests.fakes.telegram import URL_CONTENT_FAILED, FakeTelegram

TOKEN = "123456:ABC-test-token-0123456789abcdef"
PLAIN = RenderOptions()
PHOTO = "https://cdn.example.com/a/bike.jpg"
PDF = "https://cdn.example.com/docs/invoice.pdf"
MP3 = "https://cdn.example.com/audio/hello.mp3"
MP4 = "https://cdn.example.com/video/howto.mp4"


def payload(*attachments: dict[str, Any], **more: Any) -> list[ResponseElement]:
    return [
        parse_element({"type": "payload", "content": {"attachments": list(attachments), **more}})
    ]


def image(url: str = PHOTO, **fields: Any) -> dict[str, Any]:
    return {"type": "image", "url": url, **fields}


# --- rendering ------------------------------------------------------------------------------


class TestRender:
    def test_each_kind_has_its_method_and_a_link_fallback(self) -> None:
        parts = render(
            payload(
                image(caption="Your bike"),
                {"type": "file", "url": PDF, "name": "Invoice March.pdf"},
                {"type": "audio", "url": MP3},
                {"type": "video", "url": MP4, "caption": "How to"},
            ),
            PLAIN,
        )
        assert parts == [
            MediaPart(
                "photo", PHOTO, "Your bike", TextPart(f"Your bike\n[image: bike.jpg] {PHOTO}", None)
            ),
            MediaPart("document", PDF, None, TextPart(f"[file: Invoice March.pdf] {PDF}", None)),
            MediaPart("audio", MP3, None, TextPart(f"[audio: hello.mp3] {MP3}", None)),
            MediaPart("video", MP4, "How to", TextPart(f"How to\n[video: howto.mp4] {MP4}", None)),
        ]

    def test_images_in_a_row_are_one_album(self) -> None:
        urls = [f"https://cdn.example.com/p{n}.jpg" for n in range(3)]
        parts = render(
            payload(*(image(u, caption=f"#{n}" if n == 0 else None) for n, u in enumerate(urls))),
            PLAIN,
        )
        assert len(parts) == 1
        album = parts[0]
        assert isinstance(album, AlbumPart)
        assert album.items == (
            AlbumItem(urls[0], "#0"),
            AlbumItem(urls[1], None),
            AlbumItem(urls[2], None),
        )
        assert album.fallback.text == "\n".join(
            [
                f"#0\n[image: p0.jpg] {urls[0]}",
                f"[image: p1.jpg] {urls[1]}",
                f"[image: p2.jpg] {urls[2]}",
            ]
        )

    def test_only_consecutive_images_share_an_album(self) -> None:
        parts = render(payload(image(), {"type": "file", "url": PDF}, image(), image()), PLAIN)
        assert [type(p).__name__ for p in parts] == ["MediaPart", "MediaPart", "AlbumPart"]

    def test_chips_go_on_a_file_but_after_an_album(self) -> None:
        chips = {"suggestionChips": ["Yes", "No"]}
        [file] = render(payload({"type": "file", "url": PDF}, **chips), PLAIN)
        keyboard = ((Button("Yes", "Yes"), Button("No", "No")),)
        assert isinstance(file, MediaPart)
        assert file.buttons == keyboard and file.fallback.buttons == keyboard
        album, prompt = render(payload(image(), image(MP4 + ".jpg"), **chips), PLAIN)
        assert isinstance(album, AlbumPart) and album.buttons == ()
        assert prompt == TextPart("Please choose:", None, keyboard)

    def test_a_caption_over_telegrams_limit_goes_on_in_text(self) -> None:
        """The core keeps 1024 characters; Telegram counts UTF-16 units, two per emoji."""
        caption = "Nice 🎉 " * 170
        photo, *rest = render(payload(image(caption=caption)), PLAIN)
        assert isinstance(photo, MediaPart) and photo.caption is not None
        assert utf16_len(photo.caption) <= MAX_CAPTION
        assert [type(p) for p in rest] == [TextPart]
        joined = photo.caption + " " + " ".join(p.text for p in rest if isinstance(p, TextPart))
        assert joined.split() == caption[:1024].split()

    def test_text_and_native_content_stay_around_the_attachments(self) -> None:
        elements = [
            parse_element({"type": "text", "content": "Here it is"}),
            *payload({"type": "file", "url": PDF}, telegram={"text": "native"}),
        ]
        parts = render(elements, PLAIN)
        assert [type(p).__name__ for p in parts] == ["TextPart", "TextPart", "MediaPart"]

    def test_rendering_is_deterministic(self) -> None:
        elements = payload(image(), image(), {"type": "video", "url": MP4}, suggestionChips=["a"])
        assert render(elements, PLAIN) == render(elements, PLAIN)

    def test_entries_that_are_not_attachments_render_nothing(self) -> None:
        assert (
            render(payload({"type": "image", "url": "ftp://x/y.png"}, {"type": "gif"}), PLAIN) == []
        )


# --- sending against the fake -----------------------------------------------------------------


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN]) as fake:
        yield fake


@pytest.fixture
async def sender(tg: FakeTelegram) -> AsyncIterator[Sender]:
    options = TelegramOptions(token=TOKEN, api_base_url=tg.api_root, request_timeout_seconds=5)
    bot = build_bot(options)
    await bot.initialize()
    try:
        yield Sender("tg", bot, SendBudgets(1000, 30, 600), PLAIN)
    finally:
        await bot.shutdown()


async def deliver(
    sender: Sender, elements: list[ResponseElement], chat_id: int = 42, parts_done: int = 0
) -> list[tuple[int, str | None]]:
    progress: list[tuple[int, str | None]] = []

    async def record(index: int, message_id: str | None) -> None:
        progress.append((index, message_id))

    address = {"chat_id": chat_id, "chat_type": "private", "thread_id": None}
    await sender.deliver(Delivery(1, str(chat_id), address, elements, parts_done, record))
    return progress


async def test_each_kind_is_sent_by_url_with_its_caption(tg: FakeTelegram, sender: Sender) -> None:
    progress = await deliver(
        sender,
        payload(
            image(caption="Your bike"),
            {"type": "file", "url": PDF, "caption": "The invoice"},
            {"type": "audio", "url": MP3},
            {"type": "video", "url": MP4},
        ),
    )
    sent = tg.sent_messages(42)
    assert [(m.method, m.media_type, m.media, m.caption) for m in sent] == [
        ("sendPhoto", "photo", PHOTO, "Your bike"),
        ("sendDocument", "document", PDF, "The invoice"),
        ("sendAudio", "audio", MP3, None),
        ("sendVideo", "video", MP4, None),
    ]
    assert progress == [(i, str(m.message_id)) for i, m in enumerate(sent)]


async def test_an_album_is_one_media_group(tg: FakeTelegram, sender: Sender) -> None:
    urls = [f"https://cdn.example.com/p{n}.jpg" for n in range(3)]
    progress = await deliver(
        sender, payload(*(image(u, caption=f"photo {n}") for n, u in enumerate(urls)))
    )
    [call] = tg.calls_to("sendMediaGroup")
    assert call.ok
    sent = tg.sent_messages(42)
    assert [m.media for m in sent] == urls
    assert [m.caption for m in sent] == ["photo 0", "photo 1", "photo 2"]
    assert len({m.media_group_id for m in sent}) == 1 and sent[0].media_group_id
    assert progress == [(0, str(sent[0].message_id))]


async def test_a_url_telegram_cannot_fetch_becomes_a_link(tg: FakeTelegram, sender: Sender) -> None:
    tg.refuse_url(PHOTO)
    progress = await deliver(sender, payload(image(caption="Your bike"), suggestionChips=["Nice"]))
    [refused] = tg.calls_to("sendPhoto")
    assert refused.description == f"Bad Request: {URL_CONTENT_FAILED}"
    [link] = tg.sent_messages(42)
    assert link.method == "sendMessage"
    assert link.text == f"Your bike\n[image: bike.jpg] {PHOTO}"
    assert [b["text"] for b in link.buttons] == ["Nice"]  # the chips survive the fallback
    assert progress == [(0, str(link.message_id))]


async def test_an_album_with_a_url_telegram_cannot_fetch_becomes_links(
    tg: FakeTelegram, sender: Sender
) -> None:
    urls = [f"https://cdn.example.com/p{n}.jpg" for n in range(2)]
    tg.refuse_url(urls[1])
    await deliver(sender, payload(*(image(u) for u in urls)))
    assert not tg.calls_to("sendMediaGroup")[0].ok
    [link] = tg.sent_messages(42)
    assert link.text == f"[image: p0.jpg] {urls[0]}\n[image: p1.jpg] {urls[1]}"


async def test_a_document_telegram_will_not_fetch_by_url_becomes_a_link(
    tg: FakeTelegram, sender: Sender
) -> None:
    """Telegram fetches documents by URL only for a few types: anything else is a link."""
    tg.fail_next("sendDocument", 400, "Bad Request: wrong type of the web page content")
    await deliver(sender, payload({"type": "file", "url": PDF, "name": "Invoice.pdf"}))
    assert tg.sent_messages(42)[0].text == f"[file: Invoice.pdf] {PDF}"


async def test_other_refusals_are_not_hidden_behind_a_link(
    tg: FakeTelegram, sender: Sender
) -> None:
    tg.fail_next("sendVideo", 400, "Bad Request: message thread not found")
    with pytest.raises(DeliveryRejected, match="thread not found"):
        await deliver(sender, payload({"type": "video", "url": MP4}))
    assert tg.sent_messages(42) == []


async def test_a_retry_resumes_after_the_parts_already_sent(
    tg: FakeTelegram, sender: Sender
) -> None:
    elements = payload(image(), {"type": "file", "url": PDF}, {"type": "audio", "url": MP3})
    progress = await deliver(sender, elements, parts_done=2)
    assert [m.method for m in tg.sent_messages(42)] == ["sendAudio"]
    assert [index for index, _ in progress] == [2]
