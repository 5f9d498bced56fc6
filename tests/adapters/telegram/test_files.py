"""Fetching what users sent (``TelegramAdapter.open_attachment``) from the fake Bot API:
getFile, then the file streamed from ``/file/bot<token>/<path>``, and every failure mapped to
the core's errors. The adapter is the real one, with python-telegram-bot underneath."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from adapters.telegram.channel import TelegramAdapter
from adapters.telegram.options import TelegramOptions
from bridge.channel import AdapterServices
from bridge.channelkit import DOWNLOAD_CHUNK_BYTES as CHUNK_BYTES
from bridge.media.attachments import (
    Attachment,
    AttachmentError,
    AttachmentRetryable,
    AttachmentTooLarge,
    AttachmentType,
    AttachmentUnavailable,
)
from tests.fakes.telegram import JSON, MAX_DOWNLOAD_BYTES, FakeTelegram

TOKEN = "123456:ABC-test-token-0123456789abcdef"


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(tokens=[TOKEN]) as fake:
        yield fake


@pytest.fixture
async def adapter(tg: FakeTelegram) -> AsyncIterator[TelegramAdapter]:
    options = TelegramOptions(token=TOKEN, api_base_url=tg.api_root, request_timeout_seconds=5)
    channel = TelegramAdapter("tg", options, AdapterServices(None, "text only"))
    await channel.bot.initialize()
    try:
        yield channel
    finally:
        await channel.stop()
        await channel.bot.shutdown()


def file_of(update: JSON, field: str) -> Attachment:
    """The attachment the fake's message carries, as the adapter reports it."""
    value = update["message"][field]
    obj = value[-1] if isinstance(value, list) else value
    return Attachment(
        AttachmentType.DOCUMENT if field == "document" else AttachmentType(field),
        obj["file_id"],
        obj.get("file_name"),
        obj.get("mime_type"),
        obj.get("file_size"),
    )


async def read_all(
    adapter: TelegramAdapter, attachment: Attachment
) -> tuple[list[bytes], str | None, int | None]:
    async with adapter.open_attachment(attachment) as download:
        chunks = [chunk async for chunk in download.chunks]
        return chunks, download.content_type, download.size


async def failure(adapter: TelegramAdapter, attachment: Attachment) -> AttachmentError:
    with pytest.raises(AttachmentError) as caught:
        await read_all(adapter, attachment)
    message = str(caught.value)
    assert TOKEN not in message and TOKEN.split(":")[1] not in message
    return caught.value


async def test_a_file_is_streamed_in_chunks(tg: FakeTelegram, adapter: TelegramAdapter) -> None:
    data = os.urandom(5 * CHUNK_BYTES + 123)
    update = tg.document(42, file_name="invoice.pdf", data=data)
    chunks, content_type, size = await read_all(adapter, file_of(update, "document"))
    assert b"".join(chunks) == data
    assert len(chunks) > 1 and all(len(c) <= CHUNK_BYTES for c in chunks)
    # the fake's file server says application/octet-stream: the type Telegram declared wins
    assert (content_type, size) == ("application/pdf", len(data))
    get_file = tg.calls_to("getFile")[0]
    download = tg.calls_to("downloadFile")[0]
    assert get_file.params["file_id"] == update["message"]["document"]["file_id"]
    assert download.token == TOKEN
    assert download.params["file_path"].startswith("documents/file_")


async def test_the_content_type_served_is_used_when_telegram_declared_none(
    tg: FakeTelegram, adapter: TelegramAdapter
) -> None:
    update = tg.photo(42, data=b"\xff\xd8jpeg bytes")
    photo = file_of(update, "photo")
    assert photo.mime_type is None  # PhotoSize has none; normalize says image/jpeg itself
    chunks, content_type, _ = await read_all(adapter, photo)
    assert (b"".join(chunks), content_type) == (b"\xff\xd8jpeg bytes", "image/jpeg")
    # a generic type is no type: the core guesses from the name
    update = tg.voice(42, data=b"OggS")
    voice = Attachment(AttachmentType.VOICE, update["message"]["voice"]["file_id"])
    assert (await read_all(adapter, voice))[1] is None


async def test_a_file_over_the_bot_download_limit_is_too_large(
    tg: FakeTelegram, adapter: TelegramAdapter
) -> None:
    update = tg.document(42, file_size=MAX_DOWNLOAD_BYTES + 1)
    error = await failure(adapter, file_of(update, "document"))
    assert isinstance(error, AttachmentTooLarge)
    assert "file is too big" in str(error).lower()
    assert tg.calls_to("downloadFile") == []


@pytest.mark.parametrize(
    ("fault", "expected", "retry_after"),
    [
        ({"status": 429, "retry_after": 3}, AttachmentRetryable, 3.0),
        ({"status": 500}, AttachmentRetryable, None),
        ({"status": 502}, AttachmentRetryable, None),
        ({"status": 500, "disconnect": True}, AttachmentRetryable, None),
        (
            {"status": 400, "description": "Bad Request: invalid file_id"},
            AttachmentUnavailable,
            None,
        ),
        ({"status": 403, "description": "Forbidden: bot was blocked"}, AttachmentUnavailable, None),
        ({"status": 400, "description": "Bad Request: file is too big"}, AttachmentTooLarge, None),
    ],
)
async def test_get_file_failures(
    tg: FakeTelegram,
    adapter: TelegramAdapter,
    fault: dict[str, object],
    expected: type[AttachmentError],
    retry_after: float | None,
) -> None:
    update = tg.document(42, data=b"%PDF-1.7")
    tg.fail_next("getFile", **fault)  # type: ignore[arg-type]
    error = await failure(adapter, file_of(update, "document"))
    assert type(error) is expected
    if isinstance(error, AttachmentRetryable):
        assert error.retry_after == retry_after
    # the fault was one call: the next try works
    chunks, _, _ = await read_all(adapter, file_of(update, "document"))
    assert b"".join(chunks) == b"%PDF-1.7"


async def test_a_file_id_telegram_does_not_know_is_unavailable(
    adapter: TelegramAdapter,
) -> None:
    error = await failure(adapter, Attachment(AttachmentType.PHOTO, "AgACnot-a-file"))
    assert isinstance(error, AttachmentUnavailable)
    assert "invalid file_id" in str(error).lower()


@pytest.mark.parametrize(
    ("fault", "expected", "retry_after"),
    [
        ({"status": 429, "retry_after": 7}, AttachmentRetryable, 7.0),
        ({"status": 503}, AttachmentRetryable, None),
        ({"status": 404}, AttachmentUnavailable, None),
        ({"status": 403}, AttachmentUnavailable, None),
    ],
)
async def test_download_failures(
    tg: FakeTelegram,
    adapter: TelegramAdapter,
    fault: dict[str, object],
    expected: type[AttachmentError],
    retry_after: float | None,
) -> None:
    update = tg.video(42, data=b"\x00\x00\x00\x18ftypmp42")
    tg.fail_next("downloadFile", **fault)  # type: ignore[arg-type]
    error = await failure(adapter, file_of(update, "video"))
    assert type(error) is expected
    if isinstance(error, AttachmentRetryable):
        assert error.retry_after == retry_after
    assert [c.status for c in tg.calls_to("downloadFile")] == [fault["status"]]


async def test_a_file_the_server_does_not_have_is_unavailable(
    tg: FakeTelegram, adapter: TelegramAdapter
) -> None:
    update = tg.audio(42)  # no bytes given to the fake: its file server answers 404
    error = await failure(adapter, file_of(update, "audio"))
    assert isinstance(error, AttachmentUnavailable)
    assert [c.status for c in tg.calls_to("downloadFile")] == [404]


async def test_places_have_nothing_to_fetch(tg: FakeTelegram, adapter: TelegramAdapter) -> None:
    for attachment in (
        Attachment(AttachmentType.LOCATION, latitude=1.0, longitude=2.0),
        Attachment(AttachmentType.CONTACT, contact_name="Eve", contact_phone="112"),
    ):
        assert isinstance(await failure(adapter, attachment), AttachmentUnavailable)
    assert tg.calls_to("getFile") == []


async def test_an_unreachable_bot_api_is_retryable(tg: FakeTelegram) -> None:
    async with FakeTelegram(tokens=[TOKEN]) as gone:
        options = TelegramOptions(
            token=TOKEN, api_base_url=gone.api_root, request_timeout_seconds=2
        )
        channel = TelegramAdapter("tg", options, AdapterServices(None, "text only"))
        await channel.bot.initialize()
        update = gone.photo(42, data=b"jpeg")
    try:  # the fake is closed now: nothing listens there
        error = await failure(channel, file_of(update, "photo"))
        assert isinstance(error, AttachmentRetryable)
    finally:
        await channel.stop()
        await channel.bot.shutdown()
