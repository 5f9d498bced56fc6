"""The DM of a conversation the bot starts (the admin API's start and broadcast):
conversations.open with the user, paced per workspace, and what Slack's answer means. The DM's
id is kept: it never changes, so starting again with the same user costs no call."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import ClientError
from aiolimiter import AsyncLimiter
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.normalize import dm_recipient
from adapters.slack.options import SlackOptions
from adapters.slack.pacing import DEFAULT_RETRY_AFTER_SECONDS
from adapters.slack.profiles import Profiles
from bridge.channel import (
    Recipient,
    RecipientGone,
    RecipientUnavailable,
    RecipientUnknown,
)
from bridge.channelkit import retry_after_seconds
from bridge.ratelimit import KeyedLimiter

#: ``user`` or ``team:user`` (a workspace must be named when the app is installed by OAuth)
_WHO = re.compile(r"(?:(?P<team>[TE][A-Z0-9]{2,30}):)?(?P<user>[UW][A-Z0-9]{2,30})")
_UNKNOWN = {"user_not_found", "user_not_visible", "cannot_dm_bot", "channel_not_found"}
_GONE = {"user_disabled"}
#: DM ids kept (the oldest goes first)
MAX_KEPT = 10_000


class Recipients:
    """Finds (and remembers) the bot's DM with a user, for one channel."""

    def __init__(
        self,
        options: SlackOptions,
        client: AsyncWebClient,
        profiles: Profiles,
        token_for: Callable[[str], Awaitable[str | None]],
    ) -> None:
        self._client = client
        self._profiles = profiles
        self._token_for = token_for
        self._limits = KeyedLimiter(lambda _team: AsyncLimiter(options.lookups_per_minute, 60))
        self._dms: OrderedDict[tuple[str, str], str] = OrderedDict()

    async def look_up(
        self, who: str, default_team: str | None, *, only_default: bool = False
    ) -> Recipient:
        """``who``'s DM as a :class:`Recipient` (in ``default_team`` unless ``who`` names
        the workspace; ``only_default``: the app serves no other); raises RecipientUnknown,
        RecipientGone or RecipientUnavailable."""
        found = _WHO.fullmatch(who.strip())
        if found is None:
            raise RecipientUnknown(f"not a Slack user id (U… or TEAM:U…): {who!r}")
        team, user = found["team"] or default_team, found["user"]
        if team is None:
            raise RecipientUnknown(f"name the workspace of {user}: TEAM:{user}")
        if only_default and team != default_team:
            raise RecipientUnknown(f"the app is not installed in team {team}")
        token = await self._token(team)
        channel = self._dms.get((team, user))
        if channel is None:
            channel = await self._open(team, user, token)
            self._dms[(team, user)] = channel
            if len(self._dms) > MAX_KEPT:
                self._dms.popitem(last=False)
        recipient = dm_recipient(team, channel, user)
        profile = await self._profiles.profile(team, user, token)
        if not profile:
            return recipient
        return Recipient(
            recipient.conversation_key,
            recipient.user_id,
            recipient.address,
            {**recipient.context, **profile},
        )

    async def _token(self, team: str) -> str | None:
        """The workspace's bot token; an app not installed there does not know the user."""
        try:
            return await self._token_for(team)
        except RecipientGone:
            raise RecipientUnknown(f"the app is not installed in team {team}") from None
        except Exception as exc:  # the installation store's database
            raise RecipientUnavailable(f"cannot read the installation: {exc}") from exc

    async def _open(self, team: str, user: str, token: str | None) -> str:
        # A broadcast opens many DMs in a row: within the method's per-workspace tier.
        await self._limits.acquire(team)
        try:
            response = await self._client.conversations_open(token=token, users=user)
        except SlackApiError as exc:
            raise _lookup_error(exc) from None
        except (ClientError, TimeoutError) as exc:
            raise RecipientUnavailable(f"Slack request failed: {exc!r}") from None
        channel = (response.get("channel") or {}).get("id")
        if not isinstance(channel, str) or not channel:
            raise RecipientUnavailable("conversations.open answered without a channel")
        return channel


def _lookup_error(exc: SlackApiError) -> Exception:
    response = exc.response
    error = str(response.get("error") or "")
    if response.status_code == 429 or error == "ratelimited":
        seconds = retry_after_seconds(response.headers.get("Retry-After"))
        return RecipientUnavailable(
            f"Slack said 429 ({error})", seconds or DEFAULT_RETRY_AFTER_SECONDS
        )
    if error in _UNKNOWN:
        return RecipientUnknown(error)
    if error in _GONE:
        return RecipientGone(error)
    needed = response.get("needed")
    if error == "missing_scope" and needed:
        return RecipientUnavailable(f"missing_scope: the app needs {needed}")
    return RecipientUnavailable(f"Slack failed: {error or response.status_code}")
