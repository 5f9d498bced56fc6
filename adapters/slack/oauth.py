"""Slack OAuth installs (multi-workspace mode): the installation store that tells the log
redactor every token it sees, Bolt's OAuth settings for the channel's routes, and the
install and redirect pages."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.installation_store.models.bot import Bot
from slack_sdk.oauth.installation_store.models.installation import Installation
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.slack.options import SlackOptions
from bridge.logsetup import add_secrets


def _tokens(record: Any) -> list[str]:
    """The token values an installation or bot record carries."""
    names = ("bot_token", "bot_refresh_token", "user_token", "user_refresh_token")
    return [value for name in names if isinstance(value := getattr(record, name, None), str)]


class RedactingInstallationStore(AsyncSQLAlchemyInstallationStore):
    """slack-sdk's installation store, telling the log redactor every token it saves or
    finds: workspaces' tokens are issued at installation, so no configuration names them."""

    async def async_save(self, installation: Installation) -> None:
        add_secrets(_tokens(installation))
        await super().async_save(installation)

    async def async_save_bot(self, bot: Bot) -> None:
        add_secrets(_tokens(bot))
        await super().async_save_bot(bot)

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        bot = await super().async_find_bot(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        if bot is not None:
            add_secrets(_tokens(bot))
        return bot

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        found = await super().async_find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            user_id=user_id,
            is_enterprise_install=is_enterprise_install,
        )
        if found is not None:
            add_secrets(_tokens(found))
        return found


def oauth_settings(
    opts: SlackOptions,
    store: RedactingInstallationStore,
    engine: AsyncEngine,
    base_path: str,
    public_url: str | None,
) -> AsyncOAuthSettings:
    """Bolt's OAuth settings: the install and redirect pages under ``base_path``."""
    assert opts.client_id is not None and opts.client_secret is not None
    public = (public_url or "").rstrip("/")
    return AsyncOAuthSettings(
        client_id=opts.client_id,
        client_secret=opts.client_secret.get_secret_value(),
        scopes=opts.scopes,
        install_path=f"{base_path}/install",
        redirect_uri_path=f"{base_path}/oauth_redirect",
        redirect_uri=f"{public}{base_path}/oauth_redirect" if public else None,
        installation_store=store,
        state_store=AsyncSQLAlchemyOAuthStateStore(expiration_seconds=600, engine=engine),
    )


async def oauth_page(request: web.Request, oauth: AsyncOAuthFlow) -> web.Response | None:
    """The install page or the redirect's answer for a GET of either; None for other paths."""
    bolt_request = await to_bolt_request(request)
    if request.path == oauth.install_path:
        return await to_aiohttp_response(await oauth.handle_installation(bolt_request))
    if request.path == oauth.redirect_uri_path:
        return await to_aiohttp_response(await oauth.handle_callback(bolt_request))
    return None
