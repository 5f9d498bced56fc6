"""Slack media without the core: files in messages to attachments (pure), the adapter's
``open_attachment`` against the fake Slack (files.info, then the streamed download with the
bot token), and outbound attachments rendered as image blocks or links, with the link
fallback when Slack cannot fetch an image. Waits are on conditions, never on fixed sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from adapters.slack.channel import SlackAdapter
from adapters.slack.files import attachment_type, files_to_attachments, parse_locator
from adapters.slack.normalize import BotIdentity, Inbound, ThreadReply, event_to_inbound
from adapters.slack.options import SlackOptions
from adapters.slack.render import MAX_SECTION_TEXT, RenderOptions, render, units, without_images
from bridge.channel import AdapterServices, Delivery, DeliveryRejected, InboundKind
from bridge.media.attachments import (
    Attachment,
    AttachmentRetryable,
    AttachmentType,
    AttachmentUnavailable,
)
from bridge.textchat.models import ResponseElement, parse_element
from tests.fakes.slack import (
    FILE_DOWNLOAD,
    FakeSlack,
    app_mention,
    dm_message,
    event_callback,
    file_share,
    slack_file,
    validate_blocks,
)
from tests.support.net import serving

TEAM = "T0TEAM"
BOT = BotIdentity(user_id="U0BOT", bot_id="B0BOT", team_id=TEAM)
BOT_TOKEN = "xoxb-1111111111111-2222222222222-botTokenSecretValue01"
SIGNING_SECRET = "8f742231b10e8888abcd99signingsecret5"
ADA = "U0ADA"
DM = "D0ADA"
CHAN = "C0GENERAL"


def inbound(event: dict[str, Any]) -> Inbound:
    result = event_to_inbound(event_callback(TEAM, event)["event"], TEAM, BOT)
    assert isinstance(result, Inbound), result
    return result


# --- files to attachments -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mimetype", "subtype", "expected"),
    [
        ("image/png", None, AttachmentType.PHOTO),
        ("image/heic", None, AttachmentType.PHOTO),
        ("audio/mpeg", None, AttachmentType.AUDIO),
        ("audio/webm", "slack_audio", AttachmentType.VOICE),
        ("video/mp4", None, AttachmentType.VIDEO),
        ("video/mp4", "slack_video", AttachmentType.VIDEO),
        ("application/pdf", None, AttachmentType.DOCUMENT),
        ("text/plain", None, AttachmentType.DOCUMENT),
        (None, None, AttachmentType.DOCUMENT),
    ],
)
def test_type_by_mimetype(mimetype: str | None, subtype: str | None, expected: str) -> None:
    assert attachment_type(mimetype, subtype) is expected


def test_a_file_share_in_a_dm_is_text_with_one_attachment_per_file() -> None:
    files = [
        slack_file("scan.png", mimetype="image/png", size=2048, file_id="F0SCAN"),
        slack_file("notes.pdf", mimetype="application/pdf", size=99, file_id="F0NOTES"),
        slack_file(
            "clip.webm", mimetype="audio/webm", size=7, file_id="F0CLIP", subtype="slack_audio"
        ),
        slack_file("song.mp3", mimetype="audio/mpeg", size=8, file_id="F0SONG"),
        slack_file("film.mov", mimetype="video/quicktime", size=9, file_id="F0FILM"),
    ]
    event = inbound(file_share(ADA, "all of these &amp; more", files, DM))
    assert (event.kind, event.text) == (InboundKind.TEXT, "all of these & more")
    assert event.attachments == (
        Attachment(AttachmentType.PHOTO, f"{TEAM}:F0SCAN", "scan.png", "image/png", 2048),
        Attachment(AttachmentType.DOCUMENT, f"{TEAM}:F0NOTES", "notes.pdf", "application/pdf", 99),
        Attachment(AttachmentType.VOICE, f"{TEAM}:F0CLIP", "clip.webm", "audio/webm", 7),
        Attachment(AttachmentType.AUDIO, f"{TEAM}:F0SONG", "song.mp3", "audio/mpeg", 8),
        Attachment(AttachmentType.VIDEO, f"{TEAM}:F0FILM", "film.mov", "video/quicktime", 9),
    )


def test_files_on_a_mention_keep_the_text_without_the_mention() -> None:
    mention = app_mention(ADA, "what is this?", channel=CHAN)
    mention["files"] = [slack_file("a.jpg", mimetype="image/jpeg", file_id="F0A")]
    event = inbound(mention)
    assert (event.kind, event.text) == (InboundKind.TEXT, "what is this?")
    assert [(a.type, a.locator) for a in event.attachments] == [
        (AttachmentType.PHOTO, f"{TEAM}:F0A")
    ]
    bare = app_mention(ADA, "", channel=CHAN, thread_ts="1.0")
    bare["files"] = [slack_file(file_id="F0B")]
    # a bare mention with a file inside a thread is a message, not an ignored empty mention
    assert inbound(bare).attachments[0].locator == f"{TEAM}:F0B"


def test_files_in_a_thread_reply_travel_with_the_reply() -> None:
    raw = file_share(
        ADA, "", [slack_file(file_id="F0T")], CHAN, channel_type="channel", thread_ts="1.0"
    )
    result = event_to_inbound(event_callback(TEAM, raw)["event"], TEAM, BOT)
    assert isinstance(result, ThreadReply)
    assert [a.locator for a in result.inbound.attachments] == [f"{TEAM}:F0T"]


def test_unfetchable_and_malformed_files_are_left_out() -> None:
    files = [
        {"id": "F0GONE", "mode": "tombstone"},
        {**slack_file(file_id="F0EXT"), "mode": "external", "is_external": True},
        "not a file",
        {"name": "no id"},
        {"id": "F0:odd"},
        {"id": "F0LIMITED", "file_access": "check_file_info"},
        {**slack_file(file_id="F0ODD"), "name": "nul\x00", "size": True, "mimetype": 7},
    ]
    assert files_to_attachments(files, TEAM) == (
        Attachment(AttachmentType.DOCUMENT, f"{TEAM}:F0LIMITED"),
        Attachment(AttachmentType.DOCUMENT, f"{TEAM}:F0ODD", name="report.pdf"),
    )
    assert files_to_attachments("nope", TEAM) == ()
    text_only = inbound(dm_message(ADA, "hi", DM))
    assert text_only.attachments == ()


def test_locators() -> None:
    assert parse_locator("T0TEAM:F0ABC") == ("T0TEAM", "F0ABC")
    assert parse_locator("F0ABC") is None
    assert parse_locator("T:F:G") is None
    assert parse_locator("T:") is None


# --- open_attachment against the fake Slack -------------------------------------------------


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as fake:
        fake.add_workspace(TEAM, bot_token=BOT_TOKEN, bot_user_id="U0BOT", bot_id="B0BOT")
        yield fake


@pytest.fixture
async def adapter(slack: FakeSlack) -> AsyncIterator[SlackAdapter]:
    options = SlackOptions(
        bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_base_url=slack.api_url
    )
    built = SlackAdapter("sl", options, AdapterServices(public_url=None, unsupported_text="?"))
    try:
        yield built
    finally:
        await built.stop()


def attachment_of(shared: dict[str, Any]) -> Attachment:
    [attachment] = files_to_attachments([shared], TEAM)
    return attachment


async def read_all(adapter: SlackAdapter, attachment: Attachment) -> tuple[list[bytes], Any]:
    async with adapter.open_attachment(attachment) as download:
        return [chunk async for chunk in download.chunks], download


async def test_open_attachment_streams_the_file_with_the_bot_token(
    slack: FakeSlack, adapter: SlackAdapter
) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB
    shared = slack.add_file(TEAM, data, "scan.png", mimetype="image/png")
    chunks, download = await read_all(adapter, attachment_of(shared))
    assert b"".join(chunks) == data
    assert len(chunks) > 1, "read whole instead of streamed"
    assert max(map(len, chunks)) <= 64 * 1024
    assert (download.content_type, download.name, download.size) == (
        "image/png",
        "scan.png",
        len(data),
    )
    [info] = slack.calls_to("files.info")
    assert (info.params["file"], info.token) == (shared["id"], BOT_TOKEN)
    [fetched] = slack.downloads
    assert fetched.path.endswith(f"/download/{shared['name']}")  # url_private_download
    assert fetched.authorization == f"Bearer {BOT_TOKEN}"


async def test_a_file_slack_no_longer_has_is_unavailable(
    slack: FakeSlack, adapter: SlackAdapter
) -> None:
    shared = slack.add_file(TEAM, b"gone soon")
    slack.delete_file(shared["id"])
    with pytest.raises(AttachmentUnavailable, match="file_deleted"):
        await read_all(adapter, attachment_of(shared))
    with pytest.raises(AttachmentUnavailable, match="file_not_found"):
        await read_all(adapter, Attachment(AttachmentType.DOCUMENT, f"{TEAM}:F0NOSUCH"))
    slack.add_workspace("T0OTHER", bot_token="xoxb-9-9-other")
    foreign = slack.add_file("T0OTHER", b"not yours")
    with pytest.raises(AttachmentUnavailable, match="file_not_found"):
        await read_all(adapter, attachment_of(foreign))
    with pytest.raises(AttachmentUnavailable, match="not a Slack file"):
        await read_all(adapter, Attachment(AttachmentType.DOCUMENT, "F0NOTEAM"))


@pytest.mark.parametrize(
    ("method", "fault", "expected", "retry_after"),
    [
        ("files.info", {"retry_after": 12}, AttachmentRetryable, 12.0),
        ("files.info", {"status": 503}, AttachmentRetryable, None),
        ("files.info", {"error": "fatal_error"}, AttachmentRetryable, None),
        ("files.info", {"drop": True}, AttachmentRetryable, None),
        ("files.info", {"error": "access_denied"}, AttachmentUnavailable, None),
        (FILE_DOWNLOAD, {"retry_after": 3}, AttachmentRetryable, 3.0),
        (FILE_DOWNLOAD, {"status": 502}, AttachmentRetryable, None),
        (FILE_DOWNLOAD, {"status": 404}, AttachmentUnavailable, None),
        (FILE_DOWNLOAD, {"status": 403}, AttachmentUnavailable, None),
    ],
)
async def test_errors_map_onto_the_media_contract(
    slack: FakeSlack,
    adapter: SlackAdapter,
    method: str,
    fault: dict[str, Any],
    expected: type[Exception],
    retry_after: float | None,
) -> None:
    shared = slack.add_file(TEAM, b"data")
    slack.fail_next(method, **fault, count=5)  # a dropped connection is tried again
    with pytest.raises(expected) as caught:
        await read_all(adapter, attachment_of(shared))
    if retry_after is not None:
        assert isinstance(caught.value, AttachmentRetryable)
        assert caught.value.retry_after == retry_after


async def test_a_revoked_token_makes_the_file_unavailable(
    slack: FakeSlack, adapter: SlackAdapter
) -> None:
    shared = slack.add_file(TEAM, b"data")
    slack.revoke_token(BOT_TOKEN)
    with pytest.raises(AttachmentUnavailable, match="token_revoked"):
        await read_all(adapter, attachment_of(shared))


async def test_a_redirect_to_another_host_never_gets_the_token(
    slack: FakeSlack, adapter: SlackAdapter
) -> None:
    seen: list[str | None] = []

    async def cdn(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=b"from the cdn", content_type="application/pdf")

    app = web.Application()
    app.router.add_get("/signed/file.pdf", cdn)
    async with serving(app) as other:
        shared = slack.add_file(TEAM, b"from slack")
        slack.redirect_file(shared["id"], f"{other}/signed/file.pdf")
        chunks, _ = await read_all(adapter, attachment_of(shared))
    assert b"".join(chunks) == b"from the cdn"
    assert seen == [None]
    assert slack.downloads[0].authorization == f"Bearer {BOT_TOKEN}"


async def test_a_sign_in_page_instead_of_the_file_is_unavailable(
    slack: FakeSlack, adapter: SlackAdapter
) -> None:
    """Slack answers 200 with its sign-in page when the token may not read the file."""
    shared = slack.add_file(TEAM, b"%PDF")
    slack.fail_next(
        FILE_DOWNLOAD, status=200, raw_body="<html>sign in</html>", content_type="text/html"
    )
    with pytest.raises(AttachmentUnavailable, match="files:read"):
        await read_all(adapter, attachment_of(shared))


# --- outbound attachments -------------------------------------------------------------------


def payload(*attachments: dict[str, Any], **content: Any) -> ResponseElement:
    return parse_element(
        {"type": "payload", "content": {"attachments": list(attachments), **content}}
    )


def test_images_become_image_blocks_with_their_caption() -> None:
    [message] = render(
        [
            payload(
                {
                    "type": "image",
                    "url": "https://img.example/a.png",
                    "name": "a.png",
                    "caption": "Our <new> shop",
                },
                {"type": "image", "url": "https://img.example/b.png"},
            )
        ],
        RenderOptions(),
    )
    assert message.blocks == (
        {
            "type": "image",
            "image_url": "https://img.example/a.png",
            "alt_text": "a.png",
            "title": {"type": "plain_text", "text": "a.png"},
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": "Our &lt;new&gt; shop"}},
        {"type": "image", "image_url": "https://img.example/b.png", "alt_text": "image"},
    )
    assert message.text == "Our &lt;new&gt; shop\n\nimage"
    assert validate_blocks(list(message.blocks)) == []


def test_files_audio_and_video_become_links_with_the_caption_below() -> None:
    [message] = render(
        [
            payload(
                {
                    "type": "file",
                    "url": "https://f.example/x/invoice.pdf",
                    "caption": "Your invoice",
                },
                {"type": "audio", "url": "https://f.example/a.mp3?a=1&b=2", "name": "Greeting <1>"},
                {"type": "video", "url": "https://f.example/v|1.mp4", "name": "Tour"},
            )
        ],
        RenderOptions(),
    )
    assert [b["text"]["text"] for b in message.blocks] == [
        "<https://f.example/x/invoice.pdf|invoice.pdf>\nYour invoice",
        "<https://f.example/a.mp3?a=1&amp;b=2|Greeting &lt;1&gt;>",
        "<https://f.example/v%7C1.mp4|Tour>",
    ]
    assert validate_blocks(list(message.blocks)) == []


def test_attachments_come_before_the_payloads_chips_and_long_captions_are_split() -> None:
    caption = "&" * 1024  # five units each once escaped
    [message] = render(
        [
            payload(
                {"type": "file", "url": "https://f.example/long.txt", "caption": caption},
                suggestionChips=[{"title": "More", "value": "more"}],
            )
        ],
        RenderOptions(),
    )
    assert [b["type"] for b in message.blocks] == ["section", "section", "actions"]
    assert all(units(b["text"]["text"]) <= MAX_SECTION_TEXT for b in message.blocks[:2])
    assert validate_blocks(list(message.blocks)) == []


def test_an_image_url_slack_cannot_take_is_a_link() -> None:
    spaced = "https://img.example/my photo.png"
    [message] = render([payload({"type": "image", "url": spaced})], RenderOptions())
    assert message.blocks == (
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "<https://img.example/my%20photo.png|my photo.png>"},
        },
    )


def test_without_images_links_every_image_and_keeps_the_rest() -> None:
    card = parse_element(
        {
            "type": "cross_card",
            "title": "Menu",
            "image": {"large": {"url": "https://img.example/m.png"}},
        }
    )
    [message] = render(
        [
            card,
            payload(
                {
                    "type": "image",
                    "url": "https://img.example/a.png",
                    "name": "a.png",
                    "caption": "c",
                }
            ),
        ],
        RenderOptions(),
    )
    linked = without_images(message)
    assert linked is not None and linked.text == message.text
    assert [b["text"]["text"] for b in linked.blocks] == [
        "*Menu*",
        "<https://img.example/m.png|Menu>",
        "<https://img.example/a.png|a.png>",
        "c",
    ]
    assert without_images(linked) is None


async def deliver(adapter: SlackAdapter, *elements: ResponseElement) -> list[str | None]:
    sent: list[str | None] = []

    async def progress(_index: int, message_id: str | None) -> None:
        sent.append(message_id)

    await adapter.deliver(
        Delivery(
            outbox_id=1,
            conversation_key=f"{TEAM}:{DM}",
            address={"team_id": TEAM, "channel": DM, "thread_ts": None},
            elements=list(elements),
            parts_done=0,
            progress=progress,
        )
    )
    return sent


async def test_an_image_slack_cannot_download_is_sent_as_a_link(
    slack: FakeSlack, adapter: SlackAdapter
) -> None:
    slack.refuse_image_urls("https://private.example/")
    sent = await deliver(
        adapter,
        payload(
            {
                "type": "image",
                "url": "https://private.example/a.png",
                "name": "a.png",
                "caption": "Look",
            },
            {"type": "file", "url": "https://private.example/b.pdf"},
        ),
        payload({"type": "image", "url": "https://img.example/ok.png"}),
    )
    [message] = slack.posted(channel=DM)
    assert len(sent) == 1 and sent[0] == message.ts
    assert [b["type"] for b in message.blocks or []] == ["section"] * 4
    assert (message.blocks or [])[0]["text"]["text"] == "<https://private.example/a.png|a.png>"
    refused = [c for c in slack.calls_to("chat.postMessage") if not c.ok]
    assert [c.error for c in refused] == ["invalid_blocks"]

    # a message refused for another reason than an image is not sent again
    with pytest.raises(DeliveryRejected, match="invalid_blocks"):
        await deliver(adapter, payload(slack={"blocks": [{"type": "bogus"}]}))
    assert len(slack.calls_to("chat.postMessage")) == 3
