"""The Slack user's name, locale and time zone for an event's context (``users.info``), cached
per workspace and user, and never waited for longer than the channel's profile timeout."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from aiohttp import ClientError
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.options import SlackOptions
from bridge.channel import Inbound

log = logging.getLogger("adapters.slack")


class Profiles:
    """The users.info cache of one channel (bounded: the oldest entry goes first)."""

    def __init__(self, channel: str, options: SlackOptions, client: AsyncWebClient) -> None:
        self._channel = channel
        self._options = options
        self._client = client
        self._cache: dict[tuple[str, str], tuple[float, dict[str, str]]] = {}

    async def enrich(self, inbound: Inbound, team_id: str, context: AsyncBoltContext) -> Inbound:
        """Add the user's name and locale (users.info, cached; never slower than the limit)."""
        profile = await self._lookup(team_id, inbound.user_id, context.bot_token)
        if not profile:
            return inbound
        return dataclasses.replace(inbound, context={**inbound.context, **profile})

    async def profile(self, team_id: str, user_id: str, token: str | None) -> dict[str, str]:
        """The context items of the user's profile (cached; empty when Slack did not say
        within the limit)."""
        return await self._lookup(team_id, user_id, token)

    async def _lookup(self, team_id: str, user_id: str, token: str | None) -> dict[str, str]:
        key = (team_id, user_id)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._options.profile_cache_seconds:
            return cached[1]
        profile: dict[str, str] = {}
        try:
            async with asyncio.timeout(self._options.profile_timeout_seconds):
                info = await self._client.users_info(token=token, user=user_id, include_locale=True)
            user = info.get("user") or {}
            names = user.get("profile") or {}
            name = names.get("display_name") or names.get("real_name") or user.get("real_name")
            if name:
                profile["userName"] = str(name)
            if user.get("locale"):
                profile["locale"] = str(user["locale"])
            if user.get("tz"):
                profile["timezone"] = str(user["tz"])
        except (SlackApiError, ClientError, TimeoutError) as exc:
            log.debug("slack channel %s: no profile for %s: %s", self._channel, user_id, exc)
            return {}
        self._cache[key] = (now, profile)
        if len(self._cache) > 10_000:
            self._cache.pop(next(iter(self._cache)))
        return profile
