"""The options of a ``type = "slack"`` channel."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_SCOPES = (
    "app_mentions:read",
    "chat:write",
    "im:history",
    "im:read",
    "channels:history",
    "groups:history",
    "users:read",
    "im:write",
    "commands",
    "files:read",
)


class SlackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    #: one workspace: the bot token (xoxb-...). Leave it out when installing through OAuth.
    bot_token: SecretStr | None = None
    #: verifies every Events API / interactivity request (HTTP mode)
    signing_secret: SecretStr | None = None
    #: "http" (Events API at /slack/{channel}/events) or "socket" (Socket Mode websocket)
    mode: Literal["http", "socket"] = "http"
    #: Socket Mode's app-level token (xapp-...), required in socket mode
    app_token: SecretStr | None = None
    #: the Web API root (keep the trailing slash)
    api_base_url: str = "https://slack.com/api/"
    #: OAuth installation into many workspaces: both set → /slack/{channel}/install
    client_id: str | None = None
    client_secret: SecretStr | None = None
    #: bot scopes asked for at installation
    scopes: list[str] = Field(default_factory=lambda: list(DEFAULT_SCOPES))
    #: chat.postMessage budget per Slack channel (short bursts of 3 allowed)
    channel_messages_per_second: Annotated[float, Field(gt=0, le=50)] = 1
    #: chat.postMessage budget per workspace
    workspace_messages_per_minute: Annotated[float, Field(gt=0, le=10_000)] = 600
    #: the text that carries suggestion buttons when there is no message to attach them to
    chips_prompt: str = "Please choose:"
    #: conversations.open calls per workspace for conversations the bot starts (a Tier 3
    #: method: a broadcast resolves its recipients at this pace)
    lookups_per_minute: Annotated[float, Field(gt=0, le=1000)] = 50
    #: how long a users.info profile is reused
    profile_cache_seconds: Annotated[float, Field(ge=0)] = 3600
    #: users.info may take at most this long before an event is stored without the profile
    profile_timeout_seconds: Annotated[float, Field(gt=0, le=2)] = 1.0

    @field_validator("api_base_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("api_base_url: must be an http(s) URL")
        return value if value.endswith("/") else value + "/"

    @model_validator(mode="after")
    def _consistent(self) -> SlackOptions:
        oauth = self.client_id is not None or self.client_secret is not None
        if oauth and (self.client_id is None or self.client_secret is None):
            raise ValueError("client_id and client_secret: set both for OAuth installation")
        if not oauth and self.bot_token is None:
            raise ValueError("bot_token: required (or client_id and client_secret for OAuth)")
        if self.bot_token is not None and not self.bot_token.get_secret_value().startswith("xoxb-"):
            raise ValueError("bot_token: a bot token starts with xoxb-")
        if self.mode == "http" and self.signing_secret is None:
            raise ValueError('signing_secret: required when mode = "http"')
        if self.mode == "socket":
            if self.app_token is None:
                raise ValueError('app_token: required when mode = "socket"')
            if not self.app_token.get_secret_value().startswith("xapp-"):
                raise ValueError("app_token: an app-level token starts with xapp-")
        return self

    @property
    def oauth(self) -> bool:
        return self.client_id is not None
