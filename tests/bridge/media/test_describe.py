"""What Parloa is told about attachments: pure functions, every branch."""

from __future__ import annotations

from bridge.config import DEFAULT_PLACEHOLDERS
from bridge.media.attachments import Attachment, AttachmentType
from bridge.media.describe import Fetched, content_type, context_items, text_for, whole_urls

PLACEHOLDERS = {str(k): v for k, v in DEFAULT_PLACEHOLDERS.items()}


def test_text_is_caption_then_transcript_then_placeholder() -> None:
    voice = AttachmentType.VOICE
    assert text_for("hi", voice, "transcribed", PLACEHOLDERS) == "hi"
    assert text_for("  ", voice, "transcribed", PLACEHOLDERS) == "transcribed"
    assert text_for("", voice, None, PLACEHOLDERS) == "[voice message]"
    assert text_for("", AttachmentType.STICKER, None, {}) == "[sticker]"


def test_content_type_prefers_the_platforms_answer() -> None:
    assert content_type("image/png; charset=x", "image/jpeg", "a.gif") == "image/png"
    assert content_type(None, "Image/JPEG", "a.gif") == "image/jpeg"
    assert content_type("", "nonsense", "a.gif") == "image/gif"
    assert content_type(None, None, None) == "application/octet-stream"


def test_items_of_a_stored_file() -> None:
    photo = Attachment(AttachmentType.PHOTO, "x", name="p.jpg", size=10)
    fetched = Fetched(photo, url="http://b/media/1", mime_type="image/jpeg", size=12)
    assert context_items([fetched]) == {
        "attachmentType": "photo",
        "attachmentUrl": "http://b/media/1",
        "attachmentMimeType": "image/jpeg",
        "attachmentSize": 12,
        "attachmentName": "p.jpg",
    }


def test_items_of_a_file_too_large_use_what_was_declared() -> None:
    video = Attachment(AttachmentType.VIDEO, "x", mime_type="video/mp4", size=99_000_000)
    assert context_items([Fetched(video, too_large=True)]) == {
        "attachmentType": "video",
        "attachmentMimeType": "video/mp4",
        "attachmentSize": 99_000_000,
        "attachmentTooLarge": True,
    }


def test_location_contact_transcript_and_several() -> None:
    place = Attachment(AttachmentType.LOCATION, latitude=1.5, longitude=-2.25)
    assert context_items([Fetched(place)]) == {
        "attachmentType": "location",
        "latitude": 1.5,
        "longitude": -2.25,
    }
    card = Attachment(AttachmentType.CONTACT, contact_name="Ada", contact_phone="+1")
    assert context_items([Fetched(card)])["contactPhone"] == "+1"
    voice = Fetched(Attachment(AttachmentType.VOICE, "v"), url="u1")
    assert context_items([voice], transcript=True)["transcript"] is True
    two = [voice, Fetched(Attachment(AttachmentType.PHOTO, "p"))]
    items = context_items(two)
    assert items["attachmentCount"] == 2 and items["attachmentUrls"] == "u1"
    assert context_items([]) == {}


def test_urls_are_never_cut() -> None:
    urls = [f"http://b/media/{i:03d}" for i in range(100)]
    joined = whole_urls(urls, 1000)
    assert len(joined) <= 1000
    assert all(u in urls for u in joined.split(" "))
    assert whole_urls(["x" * 1001], 1000) == ""
