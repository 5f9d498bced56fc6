"""Channel adapters, one package per channel type, and the registry from a configuration's
channel ``type`` to its adapter. A new channel type is one new package plus one line here.

Entries are import paths, loaded on first use, so the core never imports a platform library
it does not need."""

from __future__ import annotations

import importlib
from typing import cast

from bridge.channel import ChannelType

CHANNEL_TYPES: dict[str, str] = {
    "slack": "adapters.slack.channel:SLACK",
    "telegram": "adapters.telegram.channel:TELEGRAM",
    "webhook": "adapters.webhook.channel:WEBHOOK",
    "webchat": "adapters.webchat.channel:WEBCHAT",
}


class UnknownChannelType(LookupError):
    pass


def channel_type(name: str) -> ChannelType:
    """The registry entry for a channel ``type``; raises UnknownChannelType."""
    try:
        target = CHANNEL_TYPES[name]
    except KeyError:
        known = ", ".join(sorted(CHANNEL_TYPES))
        raise UnknownChannelType(f"unknown channel type {name!r} (known: {known})") from None
    module_name, _, attribute = target.partition(":")
    return cast(ChannelType, getattr(importlib.import_module(module_name), attribute))
