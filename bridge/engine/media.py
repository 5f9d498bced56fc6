"""The worker's media step: before Parloa hears a message that carries attachments, fetch
each one through its channel's adapter (bounded in time and size), store the bytes, sign a
URL to them, transcribe a voice note, and turn it all into the message's text and context
items (bridge/media/describe.py). It runs in the conversation's own worker, so a slow
download holds up that conversation only, and after intake: the platform's acknowledgement
never waits for it.

A retry finds what an earlier attempt stored (by event and position) and does not fetch it
again. A transient failure retries the event, as a Parloa failure does, until the retry budget
is nearly spent; then, and for a file that is gone or refused, the message goes on without it
(its type and placeholder, no URL): an attachment never costs the user their message."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from bridge.channel import Adapter
from bridge.config import MediaConfig
from bridge.media.attachments import (
    STORED_PREFIX,
    Attachment,
    AttachmentRetryable,
    AttachmentTooLarge,
    AttachmentType,
    AttachmentUnavailable,
)
from bridge.media.describe import Fetched, content_type, context_items, text_for
from bridge.media.speech import SpeechFailed, SpeechToText
from bridge.media.urls import Signer, new_media_id
from bridge.metrics import Metrics
from bridge.store import Store
from bridge.store.media import MediaFile, NewMedia
from bridge.vocabulary import InboxItem

log = logging.getLogger("bridge.media")

#: context keys a channel may report the user's language under (speech-to-text's hint)
LANGUAGE_KEYS = ("language", "languageCode", "locale")
#: how long the first event of an album waits for the rest (a platform sends an album's
#: parts as separate events, within moments of each other)
ALBUM_SETTLE_SECONDS = 1.0
#: at most this many events make one album (Telegram's media group limit)
ALBUM_MAX = 10


def album_key(item: InboxItem) -> str | None:
    """The channel-state key recording which events of an album went to Parloa together."""
    group = item.attachments[0].group if item.attachments else None
    if group is None:
        return None
    return f"tmp:album:{item.conversation_id}:{group}"[:255]


async def gather_album(
    store: Store, item: InboxItem, clock: Callable[[], float] = time.time
) -> InboxItem | None:
    """``item`` with the rest of its album (the conversation's next pending events of the
    same group) merged in; None when ``item`` itself went to Parloa with an earlier event of
    its album. Which events were merged is recorded before Parloa is called, so a retry
    merges the same ones and each later part knows it was sent."""
    key = album_key(item)
    if key is None:
        return item
    group = item.attachments[0].group
    marker = await store.state_get(item.channel, key)
    if marker is not None:
        merged_ids = [int(i) for i in json.loads(marker)]
        if item.id in merged_ids[1:]:
            return None
        if merged_ids[0] != item.id:
            return item  # a part that came after its album was sent: on its own
    else:
        wait = item.created_at + ALBUM_SETTLE_SECONDS - clock()
        if item.attempts == 0 and wait > 0:
            await asyncio.sleep(wait)  # this conversation's worker only
        merged_ids = [item.id]
    siblings = []
    for later in await store.pending_after(item.conversation_id, item.id, ALBUM_MAX - 1):
        same = bool(later.attachments) and later.attachments[0].group == group
        if not same:
            break
        if marker is None or later.id in merged_ids:
            siblings.append(later)
    if marker is None:
        merged_ids += [s.id for s in siblings]
        await store.state_put(item.channel, key, json.dumps(merged_ids))
    caption = next((e.text for e in (item, *siblings) if e.text and e.text.strip()), "")
    attachments = item.attachments + tuple(a for s in siblings for a in s.attachments)
    return dataclasses.replace(item, text=caption, attachments=attachments)


class MediaRetry(Exception):
    """A download failed transiently: retry the event later (``retry_after``: the platform's
    wish, if it said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class MediaSettings:
    max_bytes: int
    download_timeout: float
    placeholders: Mapping[str, str]
    retry_budget: float  # engine.retry_budget_seconds: past most of it, go on without the file
    max_downloads: int = 16

    @classmethod
    def from_config(
        cls, media: MediaConfig, placeholders: Mapping[str, str], retry_budget: float
    ) -> MediaSettings:
        return cls(
            media.max_bytes,
            media.download_timeout_seconds,
            dict(placeholders),
            retry_budget,
            media.max_concurrent_downloads,
        )


def described_without_files(item: InboxItem, placeholders: Mapping[str, str]) -> InboxItem:
    """``item`` described by its attachments' types alone (no store of files set up: an
    engine built without media, as in tests of other things)."""
    fetched = [Fetched(a) for a in item.attachments]
    first = item.attachments[0].type if item.attachments else None
    text = text_for(item.text or "", first, None, placeholders)
    return dataclasses.replace(
        item, text=text, context={**(item.context or {}), **context_items(fetched)}
    )


class Media:
    """Attachments to text and context, for the worker."""

    def __init__(
        self,
        store: Store,
        adapters: Mapping[str, Adapter],
        signer: Callable[[], Awaitable[Signer]],
        settings: MediaSettings,
        speech: Mapping[str, SpeechToText],
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.signer = signer
        self.settings = settings
        self.speech = speech  # by bot name
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._downloads = asyncio.Semaphore(settings.max_downloads)

    async def prepare(self, item: InboxItem, requester: str, bot: str) -> InboxItem:
        """``item`` (of ``requester``'s conversation) with the text and context Parloa is to
        get for its attachments. Raises MediaRetry to try the event again later."""
        fetched = [
            await self._counted(item, requester, i, a) for i, a in enumerate(item.attachments)
        ]
        transcript = await self._transcribe(item, fetched, bot)
        caption = item.text or ""
        first = item.attachments[0].type if item.attachments else None
        text = text_for(caption, first, transcript, self.settings.placeholders)
        used_transcript = transcript is not None and not caption.strip()
        context = {**(item.context or {}), **context_items(fetched, used_transcript)}
        return dataclasses.replace(item, text=text, context=context)

    # --- one attachment ------------------------------------------------------------------------

    async def _counted(
        self, item: InboxItem, requester: str, position: int, attachment: Attachment
    ) -> Fetched:
        count = self.metrics.attachments.labels
        kind = attachment.type.value
        try:
            fetched = await self._fetch(item, requester, position, attachment)
        except MediaRetry:
            count(item.channel, kind, "retry").inc()
            raise
        if not attachment.type.has_bytes:
            outcome = "data"
        elif fetched.url is not None:
            outcome = "stored"
        elif fetched.too_large:
            outcome = "too_large"
        else:
            outcome = "unavailable"
        count(item.channel, kind, outcome).inc()
        return fetched

    async def _fetch(
        self, item: InboxItem, requester: str, position: int, attachment: Attachment
    ) -> Fetched:
        if not attachment.type.has_bytes:
            return Fetched(attachment)
        stored = await self.store.media_of_event(item.id, position)
        if stored is None and attachment.locator.startswith(STORED_PREFIX):
            stored = await self._upload(item, requester, attachment)
            if stored is None:
                return Fetched(attachment)
        if stored is not None:
            return await self._found(attachment, stored)
        limit = self.settings.max_bytes
        if attachment.size is not None and attachment.size > limit:
            return Fetched(attachment, too_large=True)
        try:
            stored = await self._download(item, requester, position, attachment)
        except AttachmentTooLarge:
            return Fetched(attachment, too_large=True)
        except AttachmentUnavailable as exc:
            log.info("event %s: attachment %d not to be had: %s", item.id, position, exc)
            return Fetched(attachment)
        except (AttachmentRetryable, TimeoutError) as exc:
            retry_after = getattr(exc, "retry_after", None)
            reason = str(exc) or "the download timed out"
            if self._budget_left(item):
                raise MediaRetry(f"attachment {position}: {reason}", retry_after) from exc
            log.warning(
                "event %s: attachment %d given up after retries: %s", item.id, position, reason
            )
            return Fetched(attachment)
        if stored is None:
            return Fetched(attachment, too_large=True)
        return await self._found(attachment, stored)

    async def _found(self, attachment: Attachment, file: MediaFile) -> Fetched:
        signer = await self.signer()
        return Fetched(
            attachment,
            url=signer.url(file.id, self.clock()),
            mime_type=file.content_type,
            size=file.size,
            name=file.name or attachment.name,
        )

    async def _upload(
        self, item: InboxItem, requester: str, attachment: Attachment
    ) -> MediaFile | None:
        """Bytes uploaded to the bridge before the message (the web chat): only the same
        user's, on the same channel."""
        file = await self.store.media_file(attachment.locator[len(STORED_PREFIX) :])
        if file is None or (file.channel, file.requester_id) != (item.channel, requester):
            log.warning("event %s: an upload that is not this user's, or gone", item.id)
            return None
        return file

    async def _download(
        self, item: InboxItem, requester: str, position: int, attachment: Attachment
    ) -> MediaFile | None:
        adapter = self.adapters.get(item.channel)
        if adapter is None:
            raise AttachmentUnavailable(f"channel {item.channel} is not configured")
        # The timeout starts once the download may begin: waiting for a turn is not the
        # platform's slowness.
        async with (
            self._downloads,
            asyncio.timeout(self.settings.download_timeout),
            adapter.open_attachment(attachment) as download,
        ):
            if download.size is not None and download.size > self.settings.max_bytes:
                return None
            new = NewMedia(
                id=new_media_id(),
                channel=item.channel,
                requester_id=requester,
                content_type=content_type(
                    download.content_type, attachment.mime_type, attachment.name
                ),
                name=attachment.name or download.name,
                inbox_id=item.id,
                position=position,
            )
            stored = await self.store.media_put(new, download.chunks, self.settings.max_bytes)
        if stored.file is not None:
            self.metrics.attachment_bytes.labels(item.channel).inc(stored.file.size)
        return stored.file

    def _budget_left(self, item: InboxItem) -> bool:
        """Whether another attempt fits in the retry budget (three quarters of it: the last
        attempt goes to Parloa without the file rather than to the dead letters)."""
        return self.clock() - item.created_at < 0.75 * self.settings.retry_budget

    # --- speech ----------------------------------------------------------------------------------

    async def _transcribe(
        self, item: InboxItem, fetched: Sequence[Fetched], bot: str
    ) -> str | None:
        speech = self.speech.get(bot)
        if speech is None or not fetched:
            return None
        voice = fetched[0]
        if voice.attachment.type is not AttachmentType.VOICE or voice.url is None:
            return None
        file = await self.store.media_of_event(item.id, 0)
        if file is None:  # an upload: found by its own id
            locator = voice.attachment.locator
            if locator.startswith(STORED_PREFIX):
                file = await self.store.media_file(locator[len(STORED_PREFIX) :])
        if file is None:
            return None
        audio = b"".join([chunk async for chunk in self.store.media_bytes(file)])
        reported = next(
            (str(v) for k, v in (item.context or {}).items() if k in LANGUAGE_KEYS and v), None
        )
        # Whisper-style servers take ISO 639-1 ("pt", not Telegram's "pt-br").
        language = reported.replace("_", "-").split("-")[0].lower() if reported else None
        try:
            text = await speech.transcribe(
                audio, file.name or "voice.ogg", file.content_type, language
            )
        except SpeechFailed as exc:
            self.metrics.transcriptions.labels(bot, "failed").inc()
            log.warning("event %s: no transcript, the placeholder instead: %s", item.id, exc)
            return None
        self.metrics.transcriptions.labels(bot, "ok").inc()
        return text
