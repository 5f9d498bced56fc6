"""The outbound attachments a payload asks for: what is read, what is left out."""

from __future__ import annotations

from bridge.media.outbound import (
    MAX_OUTBOUND_ATTACHMENTS,
    OutboundAttachment,
    OutboundKind,
    read_attachments,
)


def test_read_in_order_with_name_and_caption() -> None:
    content = {
        "attachments": [
            {"type": "image", "url": "https://cdn.example.com/a.png", "caption": "A"},
            {"type": "file", "url": "https://cdn.example.com/doc/", "name": "Terms.pdf"},
        ]
    }
    assert read_attachments(content) == [
        OutboundAttachment(OutboundKind.IMAGE, "https://cdn.example.com/a.png", None, "A"),
        OutboundAttachment(OutboundKind.FILE, "https://cdn.example.com/doc/", "Terms.pdf", None),
    ]
    assert read_attachments(content)[0].label == "a.png"


def test_bad_entries_are_left_out() -> None:
    content = {
        "attachments": [
            "https://x/a.png",
            {"type": "gif", "url": "https://x/a.gif"},
            {"type": "image", "url": "ftp://x/a.png"},
            {"type": "image", "url": "/relative.png"},
            {"type": "image"},
            {"type": "audio", "url": "https://x/a.mp3", "name": 7},
        ]
    }
    assert read_attachments(content) == [OutboundAttachment(OutboundKind.AUDIO, "https://x/a.mp3")]
    assert read_attachments({"attachments": "x"}) == []
    assert read_attachments([]) == []
    many = {"attachments": [{"type": "video", "url": f"https://x/{i}"} for i in range(50)]}
    assert len(read_attachments(many)) == MAX_OUTBOUND_ATTACHMENTS
