"""The options of a ``type = "telegram"`` channel."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")
#: Shortest accepted ``webhook_secret`` (as the webhook channel's ``secret``): a short one
#: can be guessed.
MIN_SECRET_LENGTH = 16
_SECRET = re.compile(rf"^[A-Za-z0-9_-]{{{MIN_SECRET_LENGTH},256}}$")


class TelegramOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    #: the bot token from @BotFather
    token: SecretStr
    #: "polling" (getUpdates; one poller per bot across replicas) or "webhook"
    mode: Literal["polling", "webhook"] = "polling"
    #: the Bot API root; the adapter calls {root}/bot<token>/<method>
    api_base_url: str = "https://api.telegram.org"
    #: required in webhook mode: Telegram sends it back in X-Telegram-Bot-Api-Secret-Token
    webhook_secret: SecretStr | None = None
    #: this bot's global send budget (paid broadcasts allow up to 1000)
    rate_limit_per_second: Annotated[float, Field(gt=0, le=1000)] = 30
    #: per private chat (short bursts of up to 3 are allowed)
    chat_messages_per_second: Annotated[float, Field(gt=0, le=30)] = 1
    #: per group or supergroup
    group_messages_per_minute: Annotated[float, Field(gt=0, le=600)] = 20
    #: in groups: one conversation per user ("per_user") or one for the whole chat
    group_mode: Literal["per_user", "per_chat"] = "per_user"
    #: "plain" sends text as is; "markdown" converts Markdown to Telegram HTML
    text_format: Literal["plain", "markdown"] = "plain"
    #: a media message's caption is sent to Parloa as its text (else the text is empty)
    forward_captions: bool = True
    #: the text that carries suggestion chips when there is no message to attach them to
    chips_prompt: str = "Please choose:"
    #: long-poll duration of one getUpdates call
    poll_timeout_seconds: Annotated[int, Field(ge=1, le=50)] = 25
    #: a standby replica takes over polling this long after the leader stopped renewing
    #: (at least poll_timeout_seconds + 5, so the lease outlives one long poll)
    leader_lease_seconds: Annotated[float, Field(ge=2)] = 60
    #: connect/read timeout of one API call (not the long poll)
    request_timeout_seconds: Annotated[float, Field(gt=0)] = 30
    #: concurrent HTTP connections to the Bot API
    connection_pool_size: Annotated[int, Field(ge=1, le=1024)] = 128
    #: forget updates that waited while the bridge was down (on start)
    drop_pending_updates: bool = False

    @field_validator("token")
    @classmethod
    def _token_shape(cls, value: SecretStr) -> SecretStr:
        if not _TOKEN.match(value.get_secret_value()):
            raise ValueError("token: not a Telegram bot token (expected <digits>:<secret>)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET.match(value.get_secret_value()):
            raise ValueError(
                f"webhook_secret: {MIN_SECRET_LENGTH}-256 characters of A-Z, a-z, 0-9, _ and -"
            )
        return value

    @field_validator("api_base_url")
    @classmethod
    def _root(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("api_base_url: must be an http(s) URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _webhook_needs_secret(self) -> TelegramOptions:
        if self.mode == "webhook" and self.webhook_secret is None:
            raise ValueError('webhook_secret: required when mode = "webhook"')
        return self
