"""``AiohttpRequest``, PTB's transport on aiohttp: driven by the real ``telegram.Bot`` against the
fake Bot API (and, where the fake cannot show it, a tiny local aiohttp server), it must behave like
PTB's own ``HTTPXRequest``: same wire formats, same error mapping, PTB's timeout semantics, a
queueing connection pool, and no bot token in error messages.

Nothing sleeps on the client side: tests wait on conditions (``tg.wait_for``, events) or on the
call itself; only servers sleep, to be slow.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dtm
import io
import json
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.request import RequestData

from adapters.telegram.aiohttp_request import AiohttpRequest
from tests.fakes.telegram import DEFAULT_TOKEN, FakeTelegram, UploadedFile
from tests.support.net import free_port, serving

# PTB itself trips its deprecation of the int RetryAfter.retry_after while building the error.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

TOKEN = DEFAULT_TOKEN
USER = 4242
MARKUP = InlineKeyboardMarkup(
    [
        [
            InlineKeyboardButton("Yes ✅", callback_data="answer:yes"),
            InlineKeyboardButton("No", callback_data="answer:no"),
        ],
        [InlineKeyboardButton("Docs", url="https://example.com/a?b=c&d=e")],
    ]
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_bot(base_url: str, request: AiohttpRequest | None = None) -> Bot:
    return Bot(
        TOKEN,
        base_url=base_url,
        request=request or AiohttpRequest(),
        get_updates_request=AiohttpRequest(),
    )


def retry_after_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PTB 22 deprecates the int form
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dtm.timedelta) else float(value)


def exception_chain(exc: BaseException | None) -> list[BaseException]:
    chain: list[BaseException] = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN]) as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    async with make_bot(tg.base_url) as ptb_bot:  # initialize() calls getMe
        yield ptb_bot


# --- a minimal Bot API server for what the fake cannot show ---------------------------------------


def bot_user() -> dict[str, Any]:
    return {"id": 123456, "is_bot": True, "first_name": "Local", "username": "local_bot"}


def message_json(message_id: int, chat_id: int, text: str) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "date": int(time.time()),
        "chat": {"id": chat_id, "type": "private", "first_name": "Test"},
        "from": bot_user(),
        "text": text,
    }


def ok(result: Any) -> web.Response:
    return web.json_response({"ok": True, "result": result})


@contextlib.asynccontextmanager
async def local_api(send_message: Handler) -> AsyncIterator[str]:
    """Serves ``/bot<token>/getMe`` and hands ``sendMessage`` to ``send_message``; yields the
    ``base_url`` for ``telegram.Bot``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        if method == "getMe":
            return ok(bot_user())
        if method == "sendMessage":
            return await send_message(request)
        return web.json_response(
            {"ok": False, "error_code": 404, "description": "Not Found"}, status=404
        )

    app = web.Application()
    app.router.add_route("*", "/bot{token}/{method}", handle)
    async with serving(app, access_log=False) as url:
        yield f"{url}/bot"


# --- 1. requests and replies ----------------------------------------------------------------------


async def test_send_message_goes_form_encoded_and_returns_a_message(
    tg: FakeTelegram, bot: Bot
) -> None:
    text = "Grüße 👋 & a=b?c=d+e %20"
    sent = await bot.send_message(USER, text, reply_markup=MARKUP, disable_notification=True)

    assert isinstance(sent, Message)
    assert (sent.chat.id, sent.text, sent.message_id) == (USER, text, 1)
    assert sent.from_user is not None and sent.from_user.username == tg.bot_username()
    assert sent.reply_markup == MARKUP

    call = tg.calls_to("sendMessage")[-1]
    assert call.http_method == "POST" and call.status == 200
    assert call.content_type == "application/x-www-form-urlencoded"
    # every value is text on the wire; non-strings are JSON-encoded by PTB
    assert call.raw["chat_id"] == str(USER) and call.raw["text"] == text
    assert json.loads(call.raw["reply_markup"]) == MARKUP.to_dict()
    assert call.params["reply_markup"] == MARKUP.to_dict()
    assert call.params["disable_notification"] is True

    recorded = tg.last_message(USER)
    assert (recorded.chat_id, recorded.text) == (USER, text)
    assert recorded.buttons == [
        {"text": "Yes ✅", "callback_data": "answer:yes"},
        {"text": "No", "callback_data": "answer:no"},
        {"text": "Docs", "url": "https://example.com/a?b=c&d=e"},
    ]


async def test_parameterless_call_and_user_agent(tg: FakeTelegram, bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.username) == (123456, tg.bot_username())
    assert tg.calls_to("getMe")[-1].params == {}

    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("User-Agent", ""))
        return ok(message_json(1, USER, "x"))

    async with local_api(record) as base_url, make_bot(base_url) as local:
        await local.send_message(USER, "x")
    assert seen == [AiohttpRequest.USER_AGENT]


# --- 2. Telegram errors, mapped by PTB ------------------------------------------------------------


async def test_telegram_errors_map_to_ptb_exceptions(tg: FakeTelegram, bot: Bot) -> None:
    tg.block(USER)
    with pytest.raises(Forbidden, match="bot was blocked by the user"):
        await bot.send_message(USER, "hello")
    assert tg.calls[-1].status == 403

    tg.delete_chat(USER + 1)
    with pytest.raises(BadRequest, match="Chat not found"):
        await bot.send_message(USER + 1, "hello")
    assert tg.calls[-1].status == 400

    with pytest.raises(BadRequest, match="Message text is empty"):
        await bot.send_message(USER + 2, "")

    tg.fail_next("sendMessage", status=429, retry_after=7)
    with pytest.raises(RetryAfter) as info:
        await bot.send_message(USER + 2, "too fast")
    assert retry_after_seconds(info.value) == 7
    assert tg.calls[-1].status == 429

    tg.fail_next("sendMessage", status=502, body=b"<html>Bad Gateway</html>")
    with pytest.raises(NetworkError, match="Bad Gateway"):
        await bot.send_message(USER + 2, "proxy error page")

    tg.fail_next("sendMessage", disconnect=True)
    with pytest.raises(NetworkError) as dropped:
        await bot.send_message(USER + 2, "dropped")
    assert type(dropped.value) is NetworkError  # not a timeout, not a Telegram answer
    assert TOKEN not in str(dropped.value)

    # the pool still works after the dropped connection
    after = await bot.send_message(USER + 2, "after")
    assert after.text == "after"
    assert [m.text for m in tg.sent_messages(USER + 2)] == ["after"]


async def test_unknown_token_is_invalid_token(tg: FakeTelegram) -> None:
    request = AiohttpRequest()
    await request.initialize()
    try:
        unknown = Bot("999:not-a-known-token", base_url=tg.base_url, request=request)
        with pytest.raises(InvalidToken):
            await unknown.get_me()
    finally:
        await request.shutdown()
    assert tg.calls[-1].status == 401


# --- 3. uploads -----------------------------------------------------------------------------------


async def test_send_photo_upload_goes_multipart(tg: FakeTelegram, bot: Bot) -> None:
    caption = "Grüße 📷 & more"
    sent = await bot.send_photo(
        USER, PNG, filename="cat.png", caption=caption, reply_markup=MARKUP, has_spoiler=True
    )
    assert sent.caption == caption and sent.photo and sent.photo[-1].file_size == len(PNG)
    assert sent.has_media_spoiler is True and sent.reply_markup == MARKUP

    call = tg.calls_to("sendPhoto")[-1]
    assert call.status == 200 and call.content_type == "multipart/form-data"
    assert call.files == {"photo": UploadedFile("photo", "cat.png", "image/png", PNG)}
    # the other parameters are plain form fields of the same request
    assert call.raw["chat_id"] == str(USER) and call.raw["caption"] == caption
    assert call.params["reply_markup"] == MARKUP.to_dict()
    assert call.params["has_spoiler"] is True
    recorded = tg.last_message(USER)
    assert isinstance(recorded.photo, UploadedFile) and recorded.photo.data == PNG

    # a file-like object works the same way
    again = await bot.send_photo(USER, io.BytesIO(PNG), filename="dog.png")
    assert again.photo and tg.calls[-1].files["photo"].filename == "dog.png"
    assert tg.calls[-1].files["photo"].data == PNG


# --- 4. timeouts ----------------------------------------------------------------------------------


async def test_read_timeout_gives_timed_out_and_per_call_value_overrides(
    tg: FakeTelegram,
) -> None:
    tg.set_latency(0.4, "sendMessage")
    request = AiohttpRequest(read_timeout=0.1)
    assert request.read_timeout == 0.1
    async with make_bot(tg.base_url, request) as slow_bot:
        started = time.monotonic()
        with pytest.raises(TimedOut) as info:
            await slow_bot.send_message(USER, "too slow")
        assert time.monotonic() - started < 0.35  # gave up before the answer came
        assert TOKEN not in str(info.value)

        sent = await slow_bot.send_message(USER, "patient", read_timeout=2.0)
        assert sent.text == "patient"
        # the per-call value is for that call only
        with pytest.raises(TimedOut):
            await slow_bot.send_message(USER, "too slow again")


@pytest.mark.parametrize("case", ["constructor", "per_call"])
async def test_read_timeout_is_honoured_on_its_own(tg: FakeTelegram, case: str) -> None:
    tg.set_latency(0.4, "sendMessage")
    request = {
        "constructor": AiohttpRequest(read_timeout=0.1),
        "per_call": AiohttpRequest(),
    }[case]
    async with make_bot(tg.base_url, request) as slow_bot:
        with pytest.raises(TimedOut):
            if case == "per_call":
                await slow_bot.send_message(USER, "too slow", read_timeout=0.1)
            else:
                await slow_bot.send_message(USER, "too slow")


# --- 5. connection failures -----------------------------------------------------------------------


async def test_connection_refused_is_network_error_without_token() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/bot"
    request = AiohttpRequest(connect_timeout=2.0)
    await request.initialize()
    try:
        dead = Bot(TOKEN, base_url=base_url, request=request)
        with pytest.raises(NetworkError) as info:
            await dead.send_message(USER, "nobody listens")
    finally:
        await request.shutdown()
    assert not isinstance(info.value, TimedOut)
    assert "Unknown error in HTTP implementation" not in str(info.value)  # mapped by us
    for exc in exception_chain(info.value):
        assert TOKEN not in str(exc), f"token leaked in {type(exc).__name__}: {exc}"
        assert TOKEN not in repr(exc), f"token leaked in {type(exc).__name__}: {exc!r}"


# --- 6. the connection pool -----------------------------------------------------------------------


async def test_pool_caps_concurrency_and_queues_the_rest() -> None:
    active = 0
    most = 0
    served: list[str] = []

    async def slow(request: web.Request) -> web.StreamResponse:
        nonlocal active, most
        form = await request.post()
        active += 1
        most = max(most, active)
        try:
            await asyncio.sleep(0.2)
        finally:
            active -= 1
        served.append(str(form["text"]))
        return ok(message_json(len(served), int(str(form["chat_id"])), str(form["text"])))

    async with (
        local_api(slow) as base_url,
        make_bot(base_url, AiohttpRequest(connection_pool_size=2, pool_timeout=1.0)) as pooled,
    ):
        texts = [f"burst {i}" for i in range(6)]
        results = await asyncio.gather(*(pooled.send_message(USER, t) for t in texts))

    assert sorted(m.text for m in results) == texts  # all succeeded, none failed on the pool
    assert sorted(served) == texts
    assert most == 2  # never more than the pool size at once, and the pool was used in parallel


async def test_waiting_for_a_connection_is_bounded() -> None:
    entered = asyncio.Event()
    release = asyncio.Event()
    served: list[str] = []

    async def held(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        served.append(str(form["text"]))
        entered.set()
        await release.wait()
        return ok(message_json(1, USER, str(form["text"])))

    request = AiohttpRequest(connection_pool_size=1, connect_timeout=0.05, pool_timeout=0.05)
    async with local_api(held) as base_url, make_bot(base_url, request) as pooled:
        first = asyncio.create_task(pooled.send_message(USER, "first"))
        await asyncio.wait_for(entered.wait(), 5)
        with pytest.raises(TimedOut):
            await pooled.send_message(USER, "queued too long")
        release.set()
        assert (await first).text == "first"
    assert served == ["first"]  # the second was never sent


# --- 7. lifecycle ---------------------------------------------------------------------------------


async def test_do_request_needs_initialize_and_shutdown_is_idempotent(tg: FakeTelegram) -> None:
    url = tg.method_url("getMe")
    request = AiohttpRequest()
    await request.shutdown()  # never initialized: nothing to do

    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(url, "POST")

    await request.initialize()
    await request.initialize()  # twice is fine
    status, payload = await request.do_request(url, "POST", RequestData())
    assert status == 200 and json.loads(payload)["result"]["id"] == 123456

    await request.shutdown()
    await request.shutdown()  # idempotent
    with pytest.raises(RuntimeError, match="not initialized"):
        await request.do_request(url, "POST")

    await request.initialize()  # usable again after a shutdown
    try:
        status, _ = await request.do_request(url, "POST")
        assert status == 200
    finally:
        await request.shutdown()
