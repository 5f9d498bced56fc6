"""The options of a ``type = "webchat"`` channel: its extra configuration keys, validated."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from adapters.webchat.protocol import normalize_origin

#: Shortest accepted ``identity_secret``.
MIN_SECRET_LENGTH = 16


class WebchatOptions(BaseModel):
    """The options of a ``type = "webchat"`` channel (the channel's extra configuration keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Origins (``https://shop.example.com``) whose pages may open the WebSocket and embed the
    #: chat in a frame, besides the page's own origin, which is always allowed; ``["*"]``
    #: allows every origin.
    allowed_origins: list[str] = []
    #: The page's title and heading.
    title: Annotated[str, Field(min_length=1, max_length=200)] = "Chat with us"
    #: Longest accepted message (or chip value) in characters; longer ones get an error frame.
    max_text_length: Annotated[int, Field(ge=1, le=100_000)] = 4000
    #: Deliveries kept per user (the mailbox), shown again after a reload or a reconnect.
    history_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    #: The hint shown in the empty message field.
    placeholder: Annotated[str, Field(max_length=200)] = "Write a message…"
    #: Days a mailbox entry is kept (shown again after a reload).
    history_days: Annotated[int, Field(ge=1, le=3650)] = 30
    #: The key that signs the user ids the bridge issues (at least 16 characters; e.g.
    #: ``"env:WEBCHAT_IDENTITY_SECRET"``). Unset: a random key per process, so identities do
    #: not survive a restart and replicas do not accept each other's: set one for production.
    identity_secret: SecretStr | None = None
    #: Messages (and chip presses, restarts) one socket may send: a burst, then a rate.
    socket_rate_per_second: Annotated[float, Field(gt=0, le=1000)] = 1.0
    socket_burst: Annotated[int, Field(ge=1, le=10_000)] = 10
    #: The same for all sockets of one client address together.
    address_rate_per_second: Annotated[float, Field(gt=0, le=10_000)] = 5.0
    address_burst: Annotated[int, Field(ge=1, le=100_000)] = 30
    #: Open sockets allowed per user, per client address and in total.
    max_sockets_per_user: Annotated[int, Field(ge=1, le=10_000)] = 10
    max_sockets_per_address: Annotated[int, Field(ge=1, le=100_000)] = 50
    max_sockets: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000
    #: Events of one user waiting for the bot; more are refused with "slow down".
    max_pending_events: Annotated[int, Field(ge=1, le=10_000)] = 20
    #: Files and images users may send (``POST .../upload``, the page's attach button); the
    #: largest size is ``[media] max_bytes``.
    uploads: bool = True
    #: How long one upload may take to arrive before it is cut off (408).
    upload_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0

    # The messages name their key: bridge.config.describe_errors prints a value error's
    # message without its location.
    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        normalized: list[str] = []
        for origin in value:
            if origin.strip() == "*":
                normalized.append("*")
                continue
            clean = normalize_origin(origin)
            if clean is None:
                raise ValueError(
                    f"allowed_origins: {origin[:100]!r} is not an origin like "
                    "https://shop.example.com (scheme and host, no path), nor *"
                )
            normalized.append(clean)
        return normalized

    @field_validator("identity_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(f"identity_secret: must be at least {MIN_SECRET_LENGTH} characters")
        return value
