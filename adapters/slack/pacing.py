"""The Web API budget every post of a Slack channel spends (replies and desk posts alike):
per channel and per workspace, paused after a 429, and Slack's errors as the core's
DeliveryError tree."""

from __future__ import annotations

from aiolimiter import AsyncLimiter
from slack_sdk.errors import SlackApiError

from adapters.slack.options import SlackOptions
from bridge.channel import DeliveryError, DeliveryRejected, DeliveryRetryable, RecipientGone
from bridge.channelkit import retry_after_seconds
from bridge.ratelimit import KeyedLimiter, PauseBoard

# Errors after which nobody will read what we send there.
GONE = {
    "channel_not_found",
    "is_archived",
    "not_in_channel",
    "account_inactive",
    "token_revoked",
    "team_access_not_granted",
    "user_not_found",
}
RETRYABLE = {
    "ratelimited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
}
#: A 429 without a usable Retry-After pauses the channel this long.
DEFAULT_RETRY_AFTER_SECONDS = 1.0


class Pacing:
    """Each post waits its turn in its channel (``key``: "<team>:<channel>") and workspace."""

    def __init__(self, options: SlackOptions) -> None:
        self._channels = KeyedLimiter.per_second(options.channel_messages_per_second)
        self._workspaces = KeyedLimiter(
            lambda _key: AsyncLimiter(options.workspace_messages_per_minute, 60)
        )
        self._paused = PauseBoard()

    async def turn(self, key: str, team_id: str) -> None:
        """Wait for a post's turn; DeliveryRetryable while a 429 pauses the channel or team."""
        paused = self._paused.remaining(key) or self._paused.remaining(team_id)
        if paused:
            raise DeliveryRetryable("paused after a 429", paused, rate_limited=True)
        await self._channels.acquire(key)
        await self._workspaces.acquire(team_id)

    def error(self, exc: SlackApiError, key: str, team_id: str) -> DeliveryError:
        """What a Slack error means for the post (a 429 pauses its channel and team)."""
        response = exc.response
        error = str(response.get("error") or "")
        if response.status_code == 429 or error == "ratelimited":
            retry_after = (
                retry_after_seconds(response.headers.get("Retry-After"))
                or DEFAULT_RETRY_AFTER_SECONDS
            )
            # Slack does not say which budget ran out; a workspace-wide one would answer 429
            # in every channel, so the whole workspace waits (each channel would otherwise
            # spend a request learning it again).
            self._paused.pause(key, retry_after)
            self._paused.pause(team_id, retry_after)
            return DeliveryRetryable(f"Slack said 429 ({error})", retry_after, rate_limited=True)
        if error in GONE or error == "invalid_auth":
            return RecipientGone(error)
        if error in RETRYABLE or response.status_code >= 500:
            return DeliveryRetryable(f"Slack failed: {error or response.status_code}")
        return DeliveryRejected(error or f"HTTP {response.status_code}")
