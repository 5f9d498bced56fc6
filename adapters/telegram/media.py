"""What a Telegram message carries besides text, as the core's :class:`Attachment`. Pure.

The locator is the file id; the bytes are fetched later (files.py: getFile, then the Bot API's
file URL), never at intake. One message carries one attachment; an album arrives as one
message per item sharing ``media_group_id``, reported as ``Attachment.group`` (the core merges
them into one event).

Types: photo (the largest size, always JPEG), document, voice, audio, video, video note (a
video), animation (a GIF, which Telegram sends as MP4: a video), sticker (WebP, an animated one
TGS, a video one WebM), location and venue (coordinates; a venue's title as its name),
contact (name and phone number, no bytes).
"""

from __future__ import annotations

from telegram import Message, PhotoSize, Sticker

from bridge.media.attachments import Attachment, AttachmentType

PHOTO_MIME = "image/jpeg"
VIDEO_NOTE_MIME = "video/mp4"
STICKER_MIME = "image/webp"
ANIMATED_STICKER_MIME = "application/x-tgsticker"
VIDEO_STICKER_MIME = "video/webm"


def _largest(sizes: tuple[PhotoSize, ...]) -> PhotoSize:
    return max(sizes, key=lambda s: (s.width * s.height, s.file_size or 0))


def _sticker_mime(sticker: Sticker) -> str:
    if sticker.is_animated:
        return ANIMATED_STICKER_MIME
    if sticker.is_video:
        return VIDEO_STICKER_MIME
    return STICKER_MIME


def _full_name(first: str | None, last: str | None) -> str | None:
    name = " ".join(p for p in (first, last) if p).strip()
    return name or None


def attachment_of(msg: Message) -> Attachment | None:
    """The attachment ``msg`` carries, or None when it carries none the bridge passes on
    (polls, dice, games, stories, paid media...)."""
    group = msg.media_group_id or None
    if msg.sticker is not None:
        s = msg.sticker
        return Attachment(
            AttachmentType.STICKER, s.file_id, None, _sticker_mime(s), s.file_size, group=group
        )
    if msg.photo:
        p = _largest(msg.photo)
        return Attachment(
            AttachmentType.PHOTO, p.file_id, None, PHOTO_MIME, p.file_size, group=group
        )
    if msg.voice is not None:
        v = msg.voice
        return Attachment(
            AttachmentType.VOICE, v.file_id, None, v.mime_type, v.file_size, group=group
        )
    if msg.audio is not None:
        a = msg.audio
        return Attachment(
            AttachmentType.AUDIO,
            a.file_id,
            a.file_name or a.title,
            a.mime_type,
            a.file_size,
            group=group,
        )
    if msg.video_note is not None:
        n = msg.video_note
        return Attachment(
            AttachmentType.VIDEO, n.file_id, None, VIDEO_NOTE_MIME, n.file_size, group=group
        )
    # An animation is a video (Telegram turns GIFs into MP4); it also carries ``document``.
    video = msg.video or msg.animation
    if video is not None:
        return Attachment(
            AttachmentType.VIDEO,
            video.file_id,
            video.file_name,
            video.mime_type,
            video.file_size,
            group=group,
        )
    if msg.document is not None:
        d = msg.document
        return Attachment(
            AttachmentType.DOCUMENT, d.file_id, d.file_name, d.mime_type, d.file_size, group=group
        )
    location = msg.venue.location if msg.venue is not None else msg.location
    if location is not None:
        return Attachment(
            AttachmentType.LOCATION,
            name=msg.venue.title if msg.venue is not None else None,
            latitude=location.latitude,
            longitude=location.longitude,
            group=group,
        )
    if msg.contact is not None:
        c = msg.contact
        return Attachment(
            AttachmentType.CONTACT,
            contact_name=_full_name(c.first_name, c.last_name),
            contact_phone=c.phone_number,
            group=group,
        )
    return None
