"""Slack files in a message (``files`` of a ``file_share`` message, an ``app_mention`` or a
plain message) as the core's :class:`~bridge.media.attachments.Attachment`, as pure functions.

The locator is ``{team}:{file id}``: a file id is only meaningful in its workspace, and an
OAuth install fetches it with that workspace's bot token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.media.attachments import Attachment, AttachmentType

#: the file ``subtype`` of a voice clip recorded in Slack (an audio message)
VOICE_CLIP_SUBTYPE = "slack_audio"
# Longer names and mime types are dropped rather than cut: a cut name would lie.
_MAX_NAME = 255
_MAX_MIME = 127


def file_locator(team_id: str, file_id: str) -> str:
    return f"{team_id}:{file_id}"


def parse_locator(locator: str) -> tuple[str, str] | None:
    """``(team id, file id)`` of a locator made by :func:`file_locator`, or None."""
    team, sep, file_id = locator.partition(":")
    if not sep or not file_id or ":" in file_id:
        return None
    return team, file_id


def attachment_type(mime_type: str | None, subtype: object = None) -> AttachmentType:
    """image/* → photo, audio/* → audio (a Slack voice clip → voice), video/* → video,
    anything else → document."""
    major = (mime_type or "").partition("/")[0].strip().lower()
    if major == "image":
        return AttachmentType.PHOTO
    if subtype == VOICE_CLIP_SUBTYPE:
        return AttachmentType.VOICE
    if major == "audio":
        return AttachmentType.AUDIO
    if major == "video":
        return AttachmentType.VIDEO
    return AttachmentType.DOCUMENT


def files_to_attachments(files: object, team_id: str) -> tuple[Attachment, ...]:
    """One attachment per file the bridge can fetch, in order; deleted files (tombstones),
    files hosted elsewhere (Google Drive, ...) and malformed entries are left out."""
    if not isinstance(files, list):
        return ()
    found = []
    for entry in files:
        attachment = _file_to_attachment(entry, team_id)
        if attachment is not None:
            found.append(attachment)
    return tuple(found)


def _file_to_attachment(entry: object, team_id: str) -> Attachment | None:
    if not isinstance(entry, Mapping):
        return None
    file_id = entry.get("id")
    if not _clean(file_id, 64) or ":" in str(file_id):
        return None
    if entry.get("mode") in ("tombstone", "external") or entry.get("is_external") is True:
        return None
    mime_type = _clean(entry.get("mimetype"), _MAX_MIME)
    # Files shared from another organisation arrive with only their id
    # ("file_access": "check_file_info"): fetched all the same, typed as a document.
    return Attachment(
        type=attachment_type(mime_type, entry.get("subtype")),
        locator=file_locator(team_id, str(file_id)),
        name=_clean(entry.get("name"), _MAX_NAME) or _clean(entry.get("title"), _MAX_NAME),
        mime_type=mime_type,
        size=_size(entry.get("size")),
    )


def _clean(value: Any, limit: int) -> str | None:
    """A non-empty string the store can keep (no NUL, valid Unicode) within ``limit``."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _size(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None
