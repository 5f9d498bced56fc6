"""An attachment as adapters report it and the inbox keeps it, what an adapter hands back
when asked for its bytes, and the errors of fetching them.

An adapter never downloads at intake: it describes each attachment (:class:`Attachment`, with
a ``locator`` only it understands: a Telegram file id, a Slack file id, a URL) and the worker
asks it for the bytes later (``Adapter.open_attachment``), so the platform's acknowledgement
never waits for a download.

Errors of fetching, one tree::

    AttachmentError              root
    ├── AttachmentRetryable      network trouble, 5xx, 429, a timeout: try again later
    └── AttachmentUnavailable    gone, forbidden, not allowed: the event goes on without it
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any


class AttachmentType(enum.StrEnum):
    """The contract's ``attachmentType`` values."""

    PHOTO = "photo"
    DOCUMENT = "document"
    VOICE = "voice"
    AUDIO = "audio"
    VIDEO = "video"
    STICKER = "sticker"
    LOCATION = "location"
    CONTACT = "contact"

    @property
    def has_bytes(self) -> bool:
        return self not in (AttachmentType.LOCATION, AttachmentType.CONTACT)


#: the locator of bytes the bridge already holds (a web chat upload): ``stored:<media id>``
STORED_PREFIX = "stored:"


@dataclass(frozen=True, slots=True)
class Attachment:
    """One thing a user sent besides text.

    ``locator``: what the adapter needs to fetch the bytes (``STORED_PREFIX`` + a media id for
    bytes already in the bridge's store); empty for a location or a contact. ``size``: bytes,
    as the platform declares them (the core refuses more than ``[media] max_bytes`` before
    fetching when it is known). ``group``: a platform's album key (Telegram's
    ``media_group_id``): events of one group in one conversation become one Parloa event."""

    type: AttachmentType
    locator: str = ""
    name: str | None = None
    mime_type: str | None = None
    size: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    contact_name: str | None = None
    contact_phone: str | None = None
    group: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The inbox column's form: only what is set."""
        return {k: v for k, v in asdict(self).items() if v is not None and v != ""}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Attachment:
        return cls(
            type=AttachmentType(data["type"]),
            locator=str(data.get("locator", "")),
            name=data.get("name"),
            mime_type=data.get("mime_type"),
            size=data.get("size"),
            latitude=data.get("latitude"),
            longitude=data.get("longitude"),
            contact_name=data.get("contact_name"),
            contact_phone=data.get("contact_phone"),
            group=data.get("group"),
        )


@dataclass(slots=True)
class Download:
    """The bytes of one attachment, as the platform serves them: read ``chunks`` to the end
    (or stop early: the core stops past ``[media] max_bytes``). ``size``: the length the
    platform declared, when it did."""

    chunks: AsyncIterator[bytes]
    content_type: str | None = None
    name: str | None = None
    size: int | None = None


class AttachmentError(Exception):
    """Root of the errors of fetching an attachment."""


class AttachmentRetryable(AttachmentError):
    """Transient: try again (after ``retry_after`` seconds, when the platform said)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class AttachmentUnavailable(AttachmentError):
    """Permanent: the file is gone, forbidden, or not allowed to be fetched."""


class AttachmentTooLarge(AttachmentError):
    """More than ``[media] max_bytes``: not stored."""
