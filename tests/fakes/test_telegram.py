"""The fake Telegram Bot API is faithful: driven by the real python-telegram-bot ``telegram.Bot``
(and its ``HTTPXRequest``) it answers the way Telegram does, with PTB raising the exceptions it
raises against api.telegram.org. Plain-HTTP tests pin the exact wire shapes.

Nothing sleeps: tests wait on the fake's conditions (``tg.wait_for``) or on the call itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import json
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from telegram import (
    Bot,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputMediaDocument,
    InputMediaPhoto,
    Update,
)
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.request import HTTPXRequest

from tests.fakes.telegram import (
    CONFLICT_OTHER_POLL,
    CONFLICT_SET_WEBHOOK,
    CONFLICT_WEBHOOK_ACTIVE,
    DEFAULT_TOKEN,
    EntityParseError,
    FakeTelegram,
    UploadedFile,
    parse_html,
    parse_markdown,
    parse_markdown_v2,
)
from tests.support.net import serving
from tests.support.signing import TELEGRAM_SECRET_HEADER, telegram_secret_headers

# PTB itself trips its deprecation of the int RetryAfter.retry_after while building the error.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

TOKEN = DEFAULT_TOKEN
OTHER_TOKEN = "654321:XYZ-other-token"
USER = 4242
GROUP = -100_555_000_1


def make_bot(tg: FakeTelegram, token: str = TOKEN) -> Bot:
    return Bot(
        token,
        base_url=tg.base_url,
        base_file_url=tg.base_file_url,
        request=HTTPXRequest(),
        get_updates_request=HTTPXRequest(),
    )


@contextlib.asynccontextmanager
async def uninitialized_bot(tg: FakeTelegram, token: str) -> AsyncIterator[Bot]:
    """A Bot that was never initialize()d (so no getMe yet); its HTTP clients are closed after."""
    requests = HTTPXRequest(), HTTPXRequest()
    try:
        yield Bot(token, base_url=tg.base_url, request=requests[0], get_updates_request=requests[1])
    finally:
        for request in requests:
            await request.shutdown()


def seconds(retry_after: int | dtm.timedelta) -> float:
    return retry_after.total_seconds() if isinstance(retry_after, dtm.timedelta) else retry_after


def retry_after_of(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB 22 deprecates the int form
        return seconds(exc.retry_after)


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN, OTHER_TOKEN]) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(tg) as ptb_bot:  # initialize() calls getMe
        yield ptb_bot


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- identity and plumbing ------------------------------------------------------------------------


async def test_get_me_and_unknown_tokens(tg: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456, True, "parloa_test_bot")
    assert bot.username == "parloa_test_bot"
    assert tg.calls[0].method == "getMe" and tg.calls[0].status == 200

    async with uninitialized_bot(tg, OTHER_TOKEN) as other_bot:
        other = await other_bot.get_me()
    assert (other.id, other.username) == (654321, "parloa_test2_bot")

    async with uninitialized_bot(tg, "999:not-a-known-token") as unknown:
        with pytest.raises(InvalidToken):
            await unknown.get_me()
    assert tg.calls[-1].status == 401
    assert tg.calls[-1].response == {"ok": False, "error_code": 401, "description": "Unauthorized"}

    with pytest.raises(EndPointNotFound):
        await bot.do_api_request("sendTelepathy")
    assert tg.calls[-1].response == {"ok": False, "error_code": 404, "description": "Not Found"}


async def test_raw_wire_formats(tg: FakeTelegram) -> None:
    """Query string, form, JSON body; case-insensitive method names; Telegram's reply shapes."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{tg.api_root}/bot{TOKEN}/getme") as resp:
            body = await resp.json()
            assert resp.status == 200 and resp.content_type == "application/json"
            assert body["ok"] is True and body["result"]["username"] == "parloa_test_bot"

        markup = {"inline_keyboard": [[{"text": "Go", "callback_data": "go"}]]}
        async with http.post(
            tg.method_url("sendMessage"),
            json={
                "chat_id": USER,
                "text": "json body",
                "reply_markup": markup,
                "disable_notification": True,
            },
        ) as resp:
            body = await resp.json()
        assert body["ok"] is True and body["result"]["reply_markup"] == markup
        call = tg.calls[-1]
        assert call.content_type == "application/json" and call.params["chat_id"] == USER

        async with http.post(
            tg.method_url("sendMessage"),
            params={
                "chat_id": str(USER),
                "text": "query string",
                "reply_markup": json.dumps(markup),
            },
        ) as resp:
            assert (await resp.json())["result"]["text"] == "query string"
        assert tg.calls[-1].params["reply_markup"] == markup  # JSON text decoded

        async with http.post(f"{tg.api_root}/botnot-a-token/getMe") as resp:
            assert resp.status == 404
            assert await resp.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        async with http.post(tg.method_url("sendMessage"), data={"chat_id": "1"}) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "ok": False,
                "error_code": 400,
                "description": "Bad Request: message text is empty",
            }
        async with http.post(tg.method_url("sendMessage"), data={"text": "no chat"}) as resp:
            assert (await resp.json())["description"] == "Bad Request: chat_id is empty"


# --- sendMessage ----------------------------------------------------------------------------------


async def test_send_message_plain(tg: FakeTelegram, bot: Bot) -> None:
    first = await bot.send_message(USER, "Hello there")
    second = await bot.send_message(USER, "General Kenobi")
    elsewhere = await bot.send_message(USER + 1, "Hi")
    assert second.message_id == first.message_id + 1  # per chat, increasing
    assert elsewhere.message_id == 1
    assert first.chat.id == USER and first.chat.type == "private"
    assert first.from_user is not None and first.from_user.username == "parloa_test_bot"
    assert isinstance(first.date, dtm.datetime) and first.text == "Hello there"

    # PTB posts form-urlencoded; every non-string value is JSON-encoded text on the wire
    call = tg.calls_to("sendMessage")[0]
    assert call.http_method == "POST"
    assert call.content_type == "application/x-www-form-urlencoded"
    assert call.raw["chat_id"] == str(USER) and call.params["chat_id"] == USER

    assert [m.text for m in tg.sent_messages(USER)] == ["Hello there", "General Kenobi"]
    assert tg.last_message().chat_id == USER + 1


async def test_markdown_v2_and_parse_errors(tg: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(
        USER,
        "*Bold* and _italic_ \\- [a link](https://example.com/x\\(1\\)) `co_de` 1\\.0",
        parse_mode="MarkdownV2",
    )
    assert sent.text == "Bold and italic - a link co_de 1.0"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [
        ("bold", 0, 4),
        ("italic", 9, 6),
        ("text_link", 18, 6),
        ("code", 25, 5),
    ]
    assert sent.entities[2].url == "https://example.com/x(1)"
    assert tg.calls[-1].raw["parse_mode"] == "MarkdownV2"
    assert tg.last_message().raw_text.startswith("*Bold*")

    with pytest.raises(BadRequest) as caught:
        await bot.send_message(USER, "Version 1.0 is out!", parse_mode="MarkdownV2")
    assert tg.calls[-1].response["description"] == (
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped "
        "with the preceding '\\'"
    )
    assert "can't parse entities" in caught.value.message.lower()

    with pytest.raises(BadRequest):
        await bot.send_message(USER, "*bold without end", parse_mode="MarkdownV2")
    assert tg.calls[-1].description == (
        "Bad Request: can't parse entities: Can't find end of Bold entity at byte offset 0"
    )
    with pytest.raises(BadRequest):
        await bot.send_message(USER, "hi", parse_mode="Markdown3")
    assert tg.calls[-1].description == "Bad Request: unsupported parse_mode"
    assert len(tg.sent_messages()) == 1  # failures send nothing


async def test_html_parse_mode(tg: FakeTelegram, bot: Bot) -> None:
    html = '<b>Hi</b> &lt;3 <a href="https://example.com">site</a> <tg-spoiler>x</tg-spoiler>'
    sent = await bot.send_message(USER, html, parse_mode="HTML")
    assert sent.text == "Hi <3 site x"
    assert [e.type for e in sent.entities] == ["bold", "text_link", "spoiler"]

    for text, description in [
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<p>paragraph</p>", 'Unsupported start tag "p" at byte offset 0'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("1 < 2", 'Unsupported start tag "" at byte offset 2'),
    ]:
        with pytest.raises(BadRequest):
            await bot.send_message(USER, text, parse_mode="HTML")
        assert tg.calls[-1].description == f"Bad Request: can't parse entities: {description}"


async def test_message_length_limits(tg: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(USER, "a" * 4096)
    await bot.send_message(USER, "*" + "a" * 4096 + "*", parse_mode="MarkdownV2")  # after parsing
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "a" * 4097)
    with pytest.raises(BadRequest, match="Message is too long"):
        await bot.send_message(USER, "😀" * 2049)  # 2049 characters, 4098 UTF-16 code units
    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(USER, "")
    with pytest.raises(BadRequest, match="Message must be non-empty"):
        await bot.send_message(USER, "   \n ")
    assert len(tg.sent_messages()) == 2


async def test_inline_keyboard_and_callback_data_limit(tg: FakeTelegram, bot: Bot) -> None:
    markup = InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("Yes", callback_data="yes"),
                InlineKeyboardButton("Docs", url="https://example.com"),
            ],
            [InlineKeyboardButton("Max", callback_data="ä" * 32)],
        ]
    )
    sent = await bot.send_message(USER, "Choose", reply_markup=markup)
    assert sent.reply_markup == markup
    call = tg.calls[-1]
    assert isinstance(call.raw["reply_markup"], str)  # JSON text on the wire ...
    assert call.params["reply_markup"]["inline_keyboard"][0][0] == {  # ... decoded by the fake
        "text": "Yes",
        "callback_data": "yes",
    }
    assert [b["text"] for b in tg.last_message().buttons] == ["Yes", "Docs", "Max"]

    for data in ("x" * 65, "ä" * 33):  # 65 and 66 bytes
        too_long = InlineKeyboardMarkup([[InlineKeyboardButton("No", callback_data=data)]])
        with pytest.raises(BadRequest, match=r"(?i)button_data_invalid"):
            await bot.send_message(USER, "Choose", reply_markup=too_long)
        assert tg.calls[-1].description == "Bad Request: BUTTON_DATA_INVALID"
    async with aiohttp.ClientSession() as http:
        text_only = {"inline_keyboard": [[{"text": "just text"}]]}
        async with http.post(
            tg.method_url("sendMessage"),
            json={"chat_id": USER, "text": "x", "reply_markup": text_only},
        ) as resp:
            assert (await resp.json())["description"] == (
                "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in "
                "the inline keyboard"
            )


# --- sendPhoto ------------------------------------------------------------------------------------


async def test_send_photo_by_url_and_upload(tg: FakeTelegram, bot: Bot) -> None:
    by_url = await bot.send_photo(
        USER, "https://example.com/cat.jpg", caption="A *cat*", parse_mode="MarkdownV2"
    )
    assert by_url.photo and by_url.caption == "A cat"
    assert [(e.type, e.offset, e.length) for e in by_url.caption_entities] == [("bold", 2, 3)]
    assert tg.last_message().photo == "https://example.com/cat.jpg"
    assert tg.calls[-1].content_type == "application/x-www-form-urlencoded"

    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 64
    uploaded = await bot.send_photo(USER, png, filename="cat.png", caption="uploaded")
    assert uploaded.caption == "uploaded" and uploaded.photo[-1].file_size == len(png)
    call = tg.calls[-1]
    assert call.content_type == "multipart/form-data"
    assert call.files["photo"] == UploadedFile("photo", "cat.png", "image/png", png)
    assert call.params["caption"] == "uploaded" and call.params["chat_id"] == USER
    sent = tg.last_message()
    assert isinstance(sent.photo, UploadedFile) and sent.photo.data == png
    assert sent.caption == "uploaded" and sent.text is None

    again = await bot.send_photo(USER, uploaded.photo[-1].file_id)  # a known file_id
    assert again.photo

    with pytest.raises(BadRequest, match="Message caption is too long"):
        await bot.send_photo(USER, "https://example.com/cat.jpg", caption="c" * 1025)
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier/http url specified"):
        await bot.send_photo(USER, "not-a-file-id")


# --- errors ---------------------------------------------------------------------------------------


async def test_flood_control_429(tg: FakeTelegram, bot: Bot) -> None:
    tg.fail_next("sendMessage", 429, retry_after=7)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(USER, "too fast")
    assert retry_after_of(caught.value) == 7
    assert tg.calls[-1].status == 429
    assert tg.calls[-1].response == {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 7",
        "parameters": {"retry_after": 7},
    }
    await bot.send_message(USER, "later")  # count=1: only the next call failed

    tg.fail_next("sendMessage", 400, migrate_to_chat_id=-1001234)
    with pytest.raises(ChatMigrated) as migrated:
        await bot.send_message(-1234, "hi")
    assert migrated.value.new_chat_id == -1001234

    tg.fail_next("*", 502, body=b"<html><body>502 Bad Gateway</body></html>")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.get_me()
    tg.fail_next("getMe", disconnect=True)
    with pytest.raises(NetworkError):
        await bot.get_me()
    await bot.get_me()


async def test_forbidden_and_chat_not_found(tg: FakeTelegram, bot: Bot) -> None:
    tg.block(USER)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "anyone there?")
    assert tg.calls[-1].response == {
        "ok": False,
        "error_code": 403,
        "description": "Forbidden: bot was blocked by the user",
    }
    tg.unblock(USER)
    await bot.send_message(USER, "welcome back")

    tg.block(GROUP)
    with pytest.raises(Forbidden, match="bot was kicked from the supergroup chat"):
        await bot.send_chat_action(GROUP, "typing")

    tg.delete_chat(777)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(777, "hello?")
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message("@nobody_here", "hello?")

    tg.fail_next("sendMessage", 403, "Forbidden: user is deactivated", chat_id=USER + 1)
    await bot.send_message(USER, "other chats are unaffected")
    with pytest.raises(Forbidden, match="user is deactivated"):
        await bot.send_message(USER + 1, "hi")


# --- getUpdates -----------------------------------------------------------------------------------


async def test_long_poll_is_woken_by_push_and_offsets_confirm(tg: FakeTelegram, bot: Bot) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=30))
    await tg.wait_for(tg.is_polling)
    assert not poll.done()
    update_id = tg.push_update(tg.private_text(USER, "hi bot", first_name="Ada"))
    updates = await asyncio.wait_for(poll, 5)  # woken at once, not after 30 s
    assert [u.update_id for u in updates] == [update_id]
    message = updates[0].message
    assert message is not None and message.text == "hi bot"
    assert message.from_user is not None and message.from_user.first_name == "Ada"
    assert tg.calls_to("getUpdates")[0].params["timeout"] == 30

    # not confirmed until a later call's offset passes it
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [update_id]
    assert await bot.get_updates(offset=update_id + 1, timeout=0) == ()
    assert tg.pending_updates() == []

    ids = [tg.push_update(tg.private_text(USER, f"m{n}")) for n in range(3)]
    assert ids == [update_id + 1, update_id + 2, update_id + 3]
    assert [u.update_id for u in await bot.get_updates(limit=2, timeout=0)] == ids[:2]
    assert [u.update_id for u in await bot.get_updates(offset=-1, timeout=0)] == ids[2:]

    # allowed_updates persists between calls
    sent = await bot.send_message(USER, "press a button")
    tg.push_update(tg.private_text(USER, "a message"))
    query_update = tg.push_update(tg.callback_query(USER, USER, sent.message_id, "pressed"))
    got = await bot.get_updates(offset=ids[2] + 1, allowed_updates=["callback_query"], timeout=0)
    assert [u.update_id for u in got] == [query_update]
    assert tg.calls[-1].raw["allowed_updates"] == '["callback_query"]'
    assert tg.calls[-1].params["allowed_updates"] == ["callback_query"]
    tg.push_update(tg.private_text(USER, "still filtered"))
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [query_update]


async def test_concurrent_polls_and_webhook_conflict(tg: FakeTelegram) -> None:
    async with make_bot(tg) as first, make_bot(tg) as second:
        older = asyncio.create_task(first.get_updates(timeout=30))
        await tg.wait_for(tg.is_polling)
        assert await second.get_updates(timeout=0) == ()
        with pytest.raises(Conflict) as caught:
            await asyncio.wait_for(older, 5)
        assert tg.calls_to("getUpdates")[0].description == CONFLICT_OTHER_POLL
        assert "terminated by other getUpdates request" in caught.value.message

        waiting = asyncio.create_task(first.get_updates(timeout=30))
        await tg.wait_for(tg.is_polling)
        await second.set_webhook("http://127.0.0.1:9/hook")
        with pytest.raises(Conflict):
            await asyncio.wait_for(waiting, 5)
        assert tg.calls_to("getUpdates")[-1].description == CONFLICT_SET_WEBHOOK
        with pytest.raises(Conflict, match="webhook is active"):
            await first.get_updates(timeout=0)
        assert tg.calls[-1].description == CONFLICT_WEBHOOK_ACTIVE

        assert await first.delete_webhook() is True
        assert tg.calls[-1].response["description"] == "Webhook was deleted"
        assert await first.get_updates(timeout=0) == ()


# --- webhooks -------------------------------------------------------------------------------------


async def test_set_webhook_and_deliver_with_secret(tg: FakeTelegram, bot: Bot) -> None:
    received: list[tuple[dict[str, str], Any]] = []
    statuses = [200]

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.Response(status=statuses[0])

    app = web.Application()
    app.router.add_post("/telegram/hook", hook)
    async with serving(app) as base:
        url = f"{base}/telegram/hook"
        with pytest.raises(BadRequest, match="Secret token contains unallowed characters"):
            await bot.set_webhook(url, secret_token="not allowed!")
        assert await bot.set_webhook(
            url, secret_token="s3cr3t_Token-1", allowed_updates=["message", "callback_query"]
        )
        assert tg.calls[-1].response["description"] == "Webhook was set"
        assert await bot.set_webhook(url, secret_token="s3cr3t_Token-1")
        assert tg.calls[-1].response["description"] == "Webhook is already set"

        info = await bot.get_webhook_info()
        assert info.url == url and info.pending_update_count == 0
        assert set(info.allowed_updates) == {"message", "callback_query"}

        status = await tg.deliver_webhook(tg.private_text(USER, "via webhook"))
        assert status == 200
        headers, body = received[-1]
        assert headers[TELEGRAM_SECRET_HEADER] == "s3cr3t_Token-1"
        assert headers["Content-Type"] == "application/json"
        update = Update.de_json(body, bot)
        assert update.message is not None and update.message.text == "via webhook"
        assert tg.webhook_deliveries[-1].secret_token == "s3cr3t_Token-1"

        # pushed updates wait (pending_update_count) until delivered with a 2xx
        statuses[0] = 500
        pushed = tg.push_update(tg.private_text(USER, "queued"))
        assert (await bot.get_webhook_info()).pending_update_count == 1
        assert await tg.deliver_pending() == [500]
        info = await bot.get_webhook_info()
        assert info.pending_update_count == 1
        assert info.last_error_message == (
            "Wrong response from the webhook: 500 Internal Server Error"
        )
        statuses[0] = 200
        assert await tg.deliver_pending() == [200]
        assert received[-1][1]["update_id"] == pushed
        assert (await bot.get_webhook_info()).pending_update_count == 0

        forged = telegram_secret_headers("wrong")
        await tg.deliver_webhook(tg.private_text(USER, "forged"), headers=forged)
        assert received[-1][0][TELEGRAM_SECRET_HEADER] == "wrong"


# --- rate limits ----------------------------------------------------------------------------------


async def test_rate_limit_enforcement() -> None:
    clock = FakeClock()
    async with FakeTelegram(clock=clock) as tg, make_bot(tg) as bot:
        tg.enforce_rate_limits(per_chat_per_second=1, chat_burst=2)
        await bot.send_message(USER, "1")
        await bot.send_message(USER, "2")  # a burst of 2 is tolerated
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(USER, "3")
        assert retry_after_of(caught.value) == 1
        await bot.send_message(USER + 1, "another chat has its own budget")
        clock.now += 1.0
        await bot.send_message(USER, "3 again")
        assert len(tg.rate_limited_calls()) == 1

        tg.enforce_rate_limits(per_chat_per_second=100, chat_burst=100, group_per_minute=20)
        for n in range(20):
            await bot.send_message(GROUP, f"g{n}")
            clock.now += 0.5
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(GROUP, "21st within a minute")
        assert retry_after_of(caught.value) == 50  # the first one leaves the window in 50 s
        clock.now += 50
        await bot.send_message(GROUP, "fits again")

        tg.enforce_rate_limits(global_per_second=30, retry_after=3)
        for n in range(30):
            await bot.send_message(10_000 + n, "fan-out")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(20_000, "31st in the same second")
        assert retry_after_of(caught.value) == 3  # the fixed retry_after
        assert tg.calls[-1].response["parameters"] == {"retry_after": 3}


# --- updates builders as PTB sees them ------------------------------------------------------------


async def test_update_builders_parse_with_ptb(tg: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(GROUP, "I am the bot")
    first = tg.private_text(USER, "Hello @someone see https://example.com #tag", language_code="de")
    pushed = [
        tg.push_update(first),
        tg.push_update(tg.command(USER, "start", "payload-1")),
        tg.push_update(
            tg.command(USER, "/stop", chat_id=GROUP, chat_type="supergroup", mention_bot=True)
        ),
        tg.push_update(
            tg.group_text(GROUP, USER, "what's up?", chat_type="supergroup", mention=True)
        ),
        tg.push_update(
            tg.group_text(GROUP, USER, "thanks", chat_type="supergroup", reply_to_bot=True)
        ),
        tg.push_update(tg.group_text(-100_777, USER, "in a topic", thread_id=5)),
        tg.push_update(tg.callback_query(USER, GROUP, sent.message_id, "choice:1")),
        tg.push_update(tg.sticker(USER)),
        tg.push_update(tg.photo(USER, caption="look")),
        tg.push_update(tg.voice(USER, duration=4)),
        tg.push_update(tg.document(USER, file_name="cv.pdf")),
        tg.push_update(tg.location(USER, latitude=48.1, longitude=11.6)),
        tg.push_update(
            tg.edited_message(USER, "Hello (edited)", message_id=first["message"]["message_id"])
        ),
    ]
    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == pushed
    (
        private,
        start,
        stop,
        mention,
        reply,
        topic,
        query,
        sticker,
        photo,
        voice,
        document,
        location,
        edited,
    ) = updates

    assert private.message.from_user.language_code == "de"
    assert [e.type for e in private.message.entities] == ["mention", "url", "hashtag"]
    assert private.effective_chat.type == "private"
    assert start.message.text == "/start payload-1"
    assert [(e.type, e.offset, e.length) for e in start.message.entities] == [("bot_command", 0, 6)]
    assert stop.message.text == "/stop@parloa_test_bot"
    assert stop.message.entities[0].length == len("/stop@parloa_test_bot")
    assert stop.effective_chat.type == "supergroup"
    assert mention.message.text == "@parloa_test_bot what's up?"
    assert mention.message.entities[0].type == "mention"
    assert reply.message.reply_to_message.message_id == sent.message_id
    assert reply.message.reply_to_message.from_user.is_bot
    assert topic.message.is_topic_message and topic.message.message_thread_id == 5
    assert topic.effective_chat.is_forum
    assert query.callback_query.data == "choice:1"
    assert query.callback_query.message.message_id == sent.message_id
    assert sticker.message.sticker.emoji == "👍"
    assert photo.message.caption == "look" and photo.message.photo[-1].width == 1280
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert seconds(voice.message.voice.duration) == 4
    assert document.message.document.file_name == "cv.pdf"
    assert location.message.location.latitude == 48.1
    assert edited.edited_message.text == "Hello (edited)"
    assert edited.edited_message.message_id == private.message.message_id


# --- files users send: getFile and downloads -----------------------------------------------------


async def test_media_builders_parse_with_ptb(tg: FakeTelegram, bot: Bot) -> None:
    pushed = [
        tg.push_update(tg.audio(USER, caption="listen")),
        tg.push_update(tg.video(USER, media_group_id="g1")),
        tg.push_update(tg.video_note(USER)),
        tg.push_update(tg.animation(USER)),
        tg.push_update(tg.sticker(USER, is_animated=True)),
        tg.push_update(tg.venue(USER)),
        tg.push_update(tg.contact(USER, contact_user_id=77)),
        tg.push_update(tg.photo(USER, media_group_id="g1", data=b"jpeg")),
        tg.push_update(tg.dice(USER)),
    ]
    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == pushed
    audio, video, note, animation, sticker, venue, contact, photo, dice = (
        u.message for u in updates
    )
    assert (audio.audio.file_name, audio.audio.title, audio.caption) == (
        "song.mp3",
        "A Song",
        "listen",
    )
    assert (video.video.mime_type, video.media_group_id) == ("video/mp4", "g1")
    assert note.video_note.length == 240
    assert animation.animation.file_id == animation.document.file_id
    assert sticker.sticker.is_animated
    assert (venue.venue.title, venue.location.latitude) == ("Fernsehturm", 52.520815)
    assert (contact.contact.first_name, contact.contact.user_id) == ("Eve", 77)
    assert photo.photo[-1].file_size == 4 and photo.media_group_id == "g1"
    assert dice.dice.value == 4


async def test_get_file_and_download(tg: FakeTelegram, bot: Bot) -> None:
    data = bytes(range(256)) * 1000  # several chunks
    update = tg.document(USER, file_name="data.bin", mime_type="application/x-test", data=data)
    document = Update.de_json({"update_id": 1, **update}, bot).message.document
    assert document.file_size == len(data)
    file = await bot.get_file(document.file_id)
    assert (file.file_id, file.file_unique_id, file.file_size) == (
        document.file_id,
        document.file_unique_id,
        len(data),
    )
    # PTB makes the path a URL: {base_file_url}/<file_path>
    assert file.file_path is not None
    assert file.file_path.startswith(f"{tg.api_root}/file/bot{TOKEN}/documents/file_")
    assert file.file_path.endswith(".bin")
    assert bytes(await file.download_as_bytearray()) == data
    [download] = tg.calls_to("downloadFile")
    assert (download.status, download.token, download.http_method) == (200, TOKEN, "GET")
    # the same path under another bot's token, or a path never handed out: 404
    path = file.file_path.split(f"/file/bot{TOKEN}/", 1)[1]
    async with aiohttp.ClientSession() as http:
        for url in (
            f"{tg.api_root}/file/bot{OTHER_TOKEN}/{path}",
            f"{tg.api_root}/file/bot123:unknown/{path}",
            f"{tg.api_root}/file/bot{TOKEN}/documents/file_999.bin",
        ):
            async with http.get(url) as resp:
                assert resp.status == 404
                assert (await resp.json())["description"] == "Not Found"
        async with http.get(file.file_path) as resp:
            assert resp.headers["Content-Type"] == "application/octet-stream"
            assert resp.content_length == len(data)
            assert await resp.read() == data


async def test_get_file_errors_and_faults(tg: FakeTelegram, bot: Bot) -> None:
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("AgACnot-known")
    big = tg.video(USER, data=None)
    big["message"]["video"]["file_size"] = 20 * 1024 * 1024  # the limit itself is allowed
    assert (await bot.get_file(big["message"]["video"]["file_id"])).file_size is not None
    too_big = tg.document(USER, file_size=20 * 1024 * 1024 + 1)
    with pytest.raises(BadRequest, match=r"(?i)file is too big"):
        await bot.get_file(too_big["message"]["document"]["file_id"])
    # without bytes the file is known to getFile, but its download is 404
    file = await bot.get_file(tg.voice(USER)["message"]["voice"]["file_id"])
    with pytest.raises(InvalidToken):  # PTB's reading of a 404
        await file.download_as_bytearray()
    # faults: on getFile like any method, on downloads as "downloadFile"
    photo = tg.photo(USER, data=b"jpeg")["message"]["photo"][-1]["file_id"]
    tg.fail_next("getFile", 429, retry_after=2)
    with pytest.raises(RetryAfter):
        await bot.get_file(photo)
    file = await bot.get_file(photo)
    tg.fail_next("downloadFile", 503)
    with pytest.raises(NetworkError):
        await file.download_as_bytearray()
    assert bytes(await file.download_as_bytearray()) == b"jpeg"


# --- sending files by URL -------------------------------------------------------------------------


async def test_send_document_audio_video_by_url(tg: FakeTelegram, bot: Bot) -> None:
    doc = await bot.send_document(
        USER, "https://example.com/files/a.pdf", caption="the *pdf*", parse_mode="MarkdownV2"
    )
    assert (doc.document.file_name, doc.caption) == ("a.pdf", "the pdf")
    audio = await bot.send_audio(USER, "https://example.com/a.mp3")
    video = await bot.send_video(USER, "https://example.com/v.mp4", caption="watch")
    assert audio.audio.mime_type == "audio/mpeg" and video.video.mime_type == "video/mp4"
    sent = tg.sent_messages(USER)
    assert [(m.method, m.media_type, m.media, m.caption) for m in sent] == [
        ("sendDocument", "document", "https://example.com/files/a.pdf", "the pdf"),
        ("sendAudio", "audio", "https://example.com/a.mp3", None),
        ("sendVideo", "video", "https://example.com/v.mp4", "watch"),
    ]
    again = await bot.send_document(USER, doc.document.file_id)  # a known file_id
    assert tg.last_message().media == doc.document.file_id and again.document
    with pytest.raises(BadRequest, match=r"(?i)wrong file identifier/http url specified"):
        await bot.send_video(USER, "not-a-file-id")


async def test_urls_telegram_cannot_fetch(tg: FakeTelegram, bot: Bot) -> None:
    bad = "https://example.com/missing.jpg"
    tg.refuse_url(bad)
    for send in (bot.send_photo, bot.send_document, bot.send_audio, bot.send_video):
        with pytest.raises(BadRequest, match=r"(?i)failed to get http url content"):
            await send(USER, bad)
    assert tg.sent_messages(USER) == []
    assert (await bot.send_photo(USER, "https://example.com/fine.jpg")).photo


async def test_send_media_group(tg: FakeTelegram, bot: Bot) -> None:
    urls = [f"https://example.com/p{n}.jpg" for n in range(3)]
    media = [InputMediaPhoto(url, caption=f"#{n}") for n, url in enumerate(urls)]
    messages = await bot.send_media_group(USER, media)
    assert [m.caption for m in messages] == ["#0", "#1", "#2"]
    assert len({m.media_group_id for m in messages}) == 1 and messages[0].media_group_id
    sent = tg.sent_messages(USER)
    assert [(m.method, m.media_type, m.media) for m in sent] == [
        ("sendMediaGroup", "photo", url) for url in urls
    ]
    assert len({m.media_group_id for m in sent}) == 1
    # one item Telegram cannot fetch: nothing of the album is sent
    tg.refuse_url(urls[1])
    with pytest.raises(BadRequest, match=r"(?i)failed to get http url content"):
        await bot.send_media_group(USER, media)
    with pytest.raises(BadRequest, match=r"(?i)2-10 items"):
        await bot.send_media_group(USER, media[:1])
    mixed = [InputMediaDocument("https://example.com/a.pdf"), InputMediaPhoto(urls[0])]
    with pytest.raises(BadRequest, match=r"(?i)can't be mixed"):
        await bot.send_media_group(USER, mixed)  # type: ignore[arg-type]
    assert len(tg.sent_messages(USER)) == 3


# --- callbacks, edits, misc methods ---------------------------------------------------------------


async def test_callback_answers_edits_and_deletes(tg: FakeTelegram, bot: Bot) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("A", callback_data="a")]])
    sent = await bot.send_message(USER, "Pick one", reply_markup=markup)
    update = tg.callback_query(USER, USER, sent.message_id, "a")
    tg.push_update(update)
    query_id = update["callback_query"]["id"]

    assert await bot.answer_callback_query(query_id, text="Got it")
    assert [(a.callback_query_id, a.text) for a in tg.answered_callbacks] == [(query_id, "Got it")]
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query(query_id)  # only once
    with pytest.raises(BadRequest, match="Query is too old"):
        await bot.answer_callback_query("12345")

    edited = await bot.edit_message_text(
        "Picked *A*", chat_id=USER, message_id=sent.message_id, parse_mode="MarkdownV2"
    )
    assert edited.text == "Picked A" and edited.edit_date is not None
    assert edited.reply_markup is None  # an edit without reply_markup removes the keyboard
    with pytest.raises(BadRequest, match="Message is not modified"):
        await bot.edit_message_text(
            "Picked *A*", chat_id=USER, message_id=sent.message_id, parse_mode="MarkdownV2"
        )
    again = await bot.edit_message_reply_markup(USER, sent.message_id, reply_markup=markup)
    assert again.reply_markup == markup
    record = tg.sent_messages(USER)[0]
    assert record.text == "Picked A" and len(record.edits) == 2 and record.buttons

    with pytest.raises(BadRequest, match="Message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=999)
    mine = tg.private_text(USER, "user's own message")
    with pytest.raises(BadRequest, match="Message can't be edited"):
        await bot.edit_message_text("x", chat_id=USER, message_id=mine["message"]["message_id"])

    assert await bot.delete_message(USER, sent.message_id)
    assert record.deleted
    with pytest.raises(BadRequest, match="Message to delete not found"):
        await bot.delete_message(USER, sent.message_id)


async def test_chat_actions_commands_and_get_chat(tg: FakeTelegram, bot: Bot) -> None:
    assert await bot.send_chat_action(USER, "typing")
    assert await bot.send_chat_action(GROUP, "upload_photo", message_thread_id=3)
    assert [(a.chat_id, a.action) for a in tg.chat_actions()] == [
        (USER, "typing"),
        (GROUP, "upload_photo"),
    ]
    assert tg.chat_actions(GROUP)[0].message_thread_id == 3
    with pytest.raises(BadRequest, match="Wrong parameter action in request"):
        await bot.send_chat_action(USER, "dancing")

    assert await bot.set_my_commands([("start", "Start a chat"), ("stop", "End it")])
    assert [c["command"] for c in tg.commands()] == ["start", "stop"]
    assert [c.command for c in await bot.get_my_commands()] == ["start", "stop"]
    with pytest.raises(BadRequest, match=r"(?i)bot_command_invalid"):
        await bot.set_my_commands([("Not-Valid", "x")])

    tg.push_update(tg.private_text(USER, "hi", first_name="Grace", username="grace_h"))
    chat = await bot.get_chat(USER)
    assert (chat.id, chat.type, chat.first_name, chat.username) == (
        USER,
        "private",
        "Grace",
        "grace_h",
    )
    assert (await bot.get_chat(GROUP)).type == "supergroup"


async def test_hold_and_latency(tg: FakeTelegram, bot: Bot) -> None:
    hold = tg.hold("sendMessage")
    task = asyncio.create_task(bot.send_message(USER, "held"))
    await tg.wait_for(lambda: hold.waiting == 1)
    assert not task.done() and tg.calls[-1].status is None
    hold.release()
    assert (await task).text == "held"
    assert hold.passed == 1

    tg.set_latency(0.05, "getMe")
    started = asyncio.get_running_loop().time()
    await bot.get_me()
    assert asyncio.get_running_loop().time() - started >= 0.05


async def test_strict_chats_and_waiting_helpers() -> None:
    async with FakeTelegram(strict_chats=True) as tg, make_bot(tg) as bot:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(USER, "who?")
        tg.push_update(tg.private_text(USER, "hello"))  # the user wrote first: chat known
        sending = asyncio.create_task(bot.send_message(USER, "hi!"))
        [message] = await tg.wait_for_messages(1, chat_id=USER)
        assert message.text == "hi!"
        call = await tg.wait_for_call("sendMessage", lambda c: c.ok)
        assert call.params["text"] == "hi!"
        await sending
        with pytest.raises(AssertionError, match="condition not met"):
            await tg.wait_for(lambda: False, within=0.01)


# --- the parsers against tdlib's own test vectors -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "plain", "entities"),
    [
        ("🏟 🏟_abac \\* asd _", "🏟 🏟abac * asd ", [("italic", 5, 11)]),
        (
            "`_* *_`__*` `*__",
            "_* *_ ",
            [("code", 0, 5), ("code", 5, 1), ("bold", 5, 1), ("underline", 5, 1)],
        ),
        ("[ ](telegram.org)", " ", [("text_link", 0, 1)]),
        ("abc\n> \n> \n>\ndef", "abc\n \n \n\ndef", [("blockquote", 4, 5)]),
        (
            ">asd\n>q||e||w||\nasdad",
            "asd\nqew\nasdad",
            [("expandable_blockquote", 0, 8), ("spoiler", 5, 1)],
        ),
        ("🏟 🏟```🏟\n🏟```", "🏟 🏟🏟", [("pre", 5, 2)]),
    ],
)
def test_markdown_v2_results_match_tdlib(
    text: str, plain: str, entities: list[tuple[str, int, int]]
) -> None:
    got_text, got = parse_markdown_v2(text)
    assert (got_text, [(e["type"], e["offset"], e["length"]) for e in got]) == (plain, entities)


# (text, tdlib's error message)
MARKDOWN_V2_ERRORS = [
    ("🏟 🏟_abacaba", "Can't find end of Italic entity at byte offset 9"),
    ("🏟 🏟```a ", "Can't find end of PreCode entity at byte offset 9"),
    ("🏟 🏟_🏟 🏟__", "Can't find end of Underline entity at byte offset 19"),
    ("[telegram\\.org](asd\\)", "Can't find end of a URL at byte offset 16"),
    ("🏟 🏟||test\\|", "Can't find end of Spoiler entity at byte offset 9"),
    ("🏟 🏟>", "Character '>' is reserved and must be escaped with the preceding '\\'"),
    (">asd\n>q||ew\n||asdad", "Can't find end of Spoiler entity at byte offset 7"),
    ("a-b", "Character '-' is reserved and must be escaped with the preceding '\\'"),
]
HTML_ERRORS = [
    ("🏟 🏟&lt;<abacaba", "Unclosed start tag at byte offset 13"),
    ("🏟 🏟&lt;<i   =aba>", 'Empty attribute name in the tag "i" at byte offset 13'),
    ("🏟 🏟&lt;<i    aba  =  190azAz-.,", "Unexpected end of name token at byte offset 27"),
    ("🏟 🏟&lt;<b></b></", "Unexpected end tag at byte offset 20"),
    ("🏟 🏟&lt;<i>a</i   ", "Unclosed end tag at byte offset 17"),
    ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
]


@pytest.mark.parametrize(
    ("parse", "text", "error"),
    [(parse_markdown_v2, text, error) for text, error in MARKDOWN_V2_ERRORS]
    + [(parse_html, text, error) for text, error in HTML_ERRORS],
)
def test_parser_errors_match_tdlib(
    parse: Callable[[str], tuple[str, list[Any]]], text: str, error: str
) -> None:
    with pytest.raises(EntityParseError) as caught:
        parse(text)
    assert str(caught.value) == error


def test_html_and_legacy_markdown_results() -> None:
    assert parse_html("&ge;&lt;&gt;&amp;&quot;&#12345678;") == ('&ge;<>&"&#12345678;', [])
    plain, entities = parse_html('<pre><code class="language-python">x = 1</code></pre>')
    assert (plain, entities) == (
        "x = 1",
        [{"type": "pre", "offset": 0, "length": 5, "language": "python"}],
    )
    plain, entities = parse_markdown("*bold* _it_ [x](http://a.com) `c`")
    assert plain == "bold it x c"
    assert [e["type"] for e in entities] == ["bold", "italic", "text_link", "code"]
    with pytest.raises(EntityParseError, match="entity starting at byte offset 0"):
        parse_markdown("*unclosed")
