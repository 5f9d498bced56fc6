"""What each kind of Telegram media message becomes: an event of kind TEXT whose attachment
describes the file (media.py through normalize.py). Real ``telegram.Update`` objects from
realistic JSON; no network."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Update

from adapters.telegram.normalize import BotIdentity, NormalizeOptions, to_inbound
from bridge.channel import Inbound, InboundKind
from bridge.media.attachments import Attachment, AttachmentType

BOT = BotIdentity(id=7001, username="OurBot")
ADA = {"id": 42, "is_bot": False, "first_name": "Ada", "language_code": "en"}
PRIVATE = {"id": 42, "type": "private", "first_name": "Ada"}


def event(content: dict[str, Any], options: NormalizeOptions | None = None) -> Inbound:
    message = {"message_id": 500, "date": 1_700_000_000, "chat": PRIVATE, "from": ADA, **content}
    update = Update.de_json({"update_id": 77, "message": message}, None)
    result = to_inbound(update, BOT, options or NormalizeOptions())
    assert isinstance(result, Inbound), result
    assert result.kind is InboundKind.TEXT
    return result


def only(content: dict[str, Any]) -> Attachment:
    attachments = event(content).attachments
    assert len(attachments) == 1
    return attachments[0]


def size(file_id: str, width: int, height: int, file_size: int | None) -> dict[str, Any]:
    found = {"file_id": file_id, "file_unique_id": f"u-{file_id}", "width": width}
    found["height"] = height
    if file_size is not None:
        found["file_size"] = file_size
    return found


class TestFiles:
    def test_photo_is_its_largest_size(self) -> None:
        sizes = [
            size("small", 90, 67, 1_200),
            size("large", 1280, 960, 98_000),
            size("medium", 800, 600, 51_000),
        ]
        assert only({"photo": sizes}) == Attachment(
            AttachmentType.PHOTO, "large", None, "image/jpeg", 98_000
        )

    def test_photo_without_sizes_declared(self) -> None:
        sizes = [size("a", 90, 67, None), size("b", 320, 240, None)]
        assert only({"photo": sizes}) == Attachment(AttachmentType.PHOTO, "b", None, "image/jpeg")

    def test_document(self) -> None:
        doc = {
            "file_id": "BQAC1",
            "file_unique_id": "u1",
            "file_name": "invoice 2024.pdf",
            "mime_type": "application/pdf",
            "file_size": 12_345,
        }
        assert only({"document": doc, "caption": "my invoice"}) == Attachment(
            AttachmentType.DOCUMENT, "BQAC1", "invoice 2024.pdf", "application/pdf", 12_345
        )
        assert event({"document": doc, "caption": "my invoice"}).text == "my invoice"

    def test_document_without_name_or_type(self) -> None:
        doc = {"file_id": "BQAC2", "file_unique_id": "u2"}
        assert only({"document": doc}) == Attachment(AttachmentType.DOCUMENT, "BQAC2")

    def test_voice(self) -> None:
        voice = {
            "file_id": "AwAC1",
            "file_unique_id": "u3",
            "duration": 3,
            "mime_type": "audio/ogg",
            "file_size": 12_000,
        }
        assert only({"voice": voice}) == Attachment(
            AttachmentType.VOICE, "AwAC1", None, "audio/ogg", 12_000
        )

    def test_audio_named_by_its_file_name_else_its_title(self) -> None:
        audio = {
            "file_id": "CQAC1",
            "file_unique_id": "u4",
            "duration": 180,
            "title": "Song",
            "performer": "Band",
            "mime_type": "audio/mpeg",
            "file_size": 2_880_000,
        }
        named = only({"audio": {**audio, "file_name": "song.mp3"}})
        assert named == Attachment(
            AttachmentType.AUDIO, "CQAC1", "song.mp3", "audio/mpeg", 2_880_000
        )
        assert only({"audio": audio}).name == "Song"

    def test_video(self) -> None:
        video = {
            "file_id": "BAAC1",
            "file_unique_id": "u5",
            "width": 1280,
            "height": 720,
            "duration": 10,
            "file_name": "clip.mp4",
            "mime_type": "video/mp4",
            "file_size": 1_000_000,
        }
        assert only({"video": video}) == Attachment(
            AttachmentType.VIDEO, "BAAC1", "clip.mp4", "video/mp4", 1_000_000
        )

    def test_video_note_is_an_mp4_video(self) -> None:
        note = {
            "file_id": "DQAC1",
            "file_unique_id": "u6",
            "length": 240,
            "duration": 5,
            "file_size": 250_000,
        }
        assert only({"video_note": note}) == Attachment(
            AttachmentType.VIDEO, "DQAC1", None, "video/mp4", 250_000
        )

    def test_animation_is_a_video_not_a_document(self) -> None:
        doc = {
            "file_id": "CgAC1",
            "file_unique_id": "u7",
            "file_name": "cat.gif.mp4",
            "mime_type": "video/mp4",
            "file_size": 200_000,
        }
        animation = {**doc, "width": 320, "height": 240, "duration": 2}
        assert only({"animation": animation, "document": doc}) == Attachment(
            AttachmentType.VIDEO, "CgAC1", "cat.gif.mp4", "video/mp4", 200_000
        )

    @pytest.mark.parametrize(
        ("animated", "video", "mime"),
        [
            (False, False, "image/webp"),
            (True, False, "application/x-tgsticker"),
            (False, True, "video/webm"),
        ],
    )
    def test_sticker(self, animated: bool, video: bool, mime: str) -> None:
        sticker = {
            "file_id": "CAAC1",
            "file_unique_id": "u8",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": animated,
            "is_video": video,
            "emoji": "😀",
            "file_size": 23_000,
        }
        assert only({"sticker": sticker}) == Attachment(
            AttachmentType.STICKER, "CAAC1", None, mime, 23_000
        )


class TestPlaces:
    def test_location(self) -> None:
        location = {"latitude": 52.520008, "longitude": 13.404954}
        assert only({"location": location}) == Attachment(
            AttachmentType.LOCATION, latitude=52.520008, longitude=13.404954
        )
        assert event({"location": location}).text == ""

    def test_venue_is_a_named_location(self) -> None:
        location = {"latitude": 52.520815, "longitude": 13.409419}
        venue = {"location": location, "title": "Fernsehturm", "address": "Panoramastr. 1A"}
        assert only({"venue": venue, "location": location}) == Attachment(
            AttachmentType.LOCATION, name="Fernsehturm", latitude=52.520815, longitude=13.409419
        )

    def test_contact(self) -> None:
        contact = {"phone_number": "+49301234567", "first_name": "Eve", "last_name": "Example"}
        assert only({"contact": contact}) == Attachment(
            AttachmentType.CONTACT, contact_name="Eve Example", contact_phone="+49301234567"
        )
        first_only = {"phone_number": "112", "first_name": "Eve"}
        assert only({"contact": first_only}).contact_name == "Eve"

    def test_places_have_no_bytes(self) -> None:
        assert not AttachmentType.LOCATION.has_bytes and not AttachmentType.CONTACT.has_bytes


class TestAlbums:
    def test_album_items_share_their_group(self) -> None:
        items = [
            {"photo": [size(f"p{n}", 1280, 960, 90_000)], "media_group_id": "1357"}
            for n in range(3)
        ]
        items[0]["caption"] = "three photos"
        found = [event(item) for item in items]
        assert [e.attachments[0].group for e in found] == ["1357"] * 3
        assert [e.attachments[0].locator for e in found] == ["p0", "p1", "p2"]
        assert [e.text for e in found] == ["three photos", "", ""]

    def test_a_single_file_has_no_group(self) -> None:
        assert only({"photo": [size("p", 90, 67, 1)]}).group is None

    def test_an_album_of_documents(self) -> None:
        doc = {"file_id": "BQAC9", "file_unique_id": "u9", "file_name": "a.pdf"}
        assert only({"document": doc, "media_group_id": "2468"}).group == "2468"


def test_the_attachment_survives_the_inbox_column() -> None:
    """What the adapter reports is what the worker reads back (Attachment.to_json)."""
    sizes = [size("large", 1280, 960, 98_000)]
    attachment = only({"photo": sizes, "media_group_id": "77"})
    assert Attachment.from_json(attachment.to_json()) == attachment
