"""The desks of the configured bots: one per bot whose ``[bots.<name>.handover]`` names a
desk, built after the adapters (a Slack desk registers its room with its channel's adapter
before the adapter starts)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from bridge.channel import Adapter
from bridge.config import BridgeConfig, HandoverConfig
from bridge.handover.console import ConsoleDesk
from bridge.handover.desk import Desk
from bridge.handover.slack import SlackDesk
from bridge.handover.webhook import WebhookDesk

log = logging.getLogger("bridge.handover")


def build_desks(config: BridgeConfig, adapters: Mapping[str, Adapter]) -> dict[str, Desk]:
    """Each bot's desk, by bot name (nothing started)."""
    desks: dict[str, Desk] = {}
    for bot, settings in config.bots.items():
        handover = settings.handover
        match handover.desk:
            case None:
                if handover != HandoverConfig():
                    log.warning(
                        "bot %s: [bots.%s.handover] has settings but no desk: handovers are "
                        "not started (a bot's request is ignored)",
                        bot,
                        bot,
                    )
            case "slack":
                assert handover.slack_channel is not None  # checked by the configuration
                desks[bot] = SlackDesk(bot, handover, adapters[handover.slack_channel])
            case "webhook":
                desks[bot] = WebhookDesk(bot, handover)
            case "console":
                desks[bot] = ConsoleDesk(bot, handover)
    return desks


def handover_settings(config: BridgeConfig) -> dict[str, HandoverConfig]:
    """Every bot's handover settings, by bot name."""
    return {bot: settings.handover for bot, settings in config.bots.items()}
