"""Channel types as plugins: a configuration's channel ``type`` names an entry point in the
group ``parloa_bridge.channels``, declared by whichever installed distribution provides it::

    [project.entry-points."parloa_bridge.channels"]
    telegram = "adapters.telegram.channel:TELEGRAM"

The entry point names a :class:`~bridge.channel.ChannelType` (usually an
:class:`~bridge.channel.AdapterType`). The built-in types register the same way, in this
project's pyproject.toml, so the core imports no adapter: a type's module (and its platform
library) is imported only when a configuration uses it.

Errors, one tree::

    ChannelTypeError          root (a LookupError): declared twice, or does not load
    └── UnknownChannelType    no installed distribution declares it; lists the known types
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import cast

from pydantic import ValidationError

from bridge.channel import Adapter, AdapterServices, ChannelType
from bridge.config import ChannelConfig, describe_errors

ENTRY_POINT_GROUP = "parloa_bridge.channels"


class ChannelTypeError(LookupError):
    """A channel type that cannot be used: two distributions claim it, or it does not load."""


class UnknownChannelType(ChannelTypeError):
    """No installed distribution declares this channel type."""


def known_channel_types() -> dict[str, list[EntryPoint]]:
    """Every declared channel type, by name (several entries when distributions disagree)."""
    found: dict[str, list[EntryPoint]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        claims = found.setdefault(entry.name, [])
        # The same distribution can be visible twice (e.g. an editable install beside its
        # source tree): the same target is one claim.
        if all(claim.value != entry.value for claim in claims):
            claims.append(entry)
    return found


def channel_type(name: str) -> ChannelType:
    """The channel type registered as ``name``; raises a ChannelTypeError saying why not."""
    known = known_channel_types()
    claims = known.get(name)
    if not claims:
        names = ", ".join(sorted(known)) or "none installed"
        raise UnknownChannelType(f"unknown channel type {name!r} (known: {names})")
    if len(claims) > 1:
        targets = ", ".join(sorted(claim.value for claim in claims))
        raise ChannelTypeError(f"channel type {name!r} is declared more than once ({targets})")
    entry = claims[0]
    try:
        loaded: object = entry.load()
    except Exception as exc:  # an import error of a plugin: report it as configuration
        raise ChannelTypeError(
            f"channel type {name!r} ({entry.value}) does not load: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(getattr(loaded, "options_model", None), type) or not callable(
        getattr(loaded, "create", None)
    ):
        raise ChannelTypeError(
            f"channel type {name!r} ({entry.value}) is not a channel type "
            "(it needs options_model and create)"
        )
    return cast(ChannelType, loaded)


def validate_channel(channel: ChannelConfig, where: str) -> list[str]:
    """Check a channel's type and its type-specific options; one line per problem."""
    try:
        entry = channel_type(channel.type)
    except ChannelTypeError as exc:
        return [f"{where}.type: {exc}"]
    try:
        entry.options_model.model_validate(channel.options)
    except ValidationError as exc:
        return [f"{where}.{line}" for line in describe_errors(exc)]
    return []


def create_adapter(channel: ChannelConfig, services: AdapterServices) -> Adapter:
    """The adapter of one configured channel (its options validated by its type)."""
    entry = channel_type(channel.type)
    options = entry.options_model.model_validate(channel.options)
    return entry.create(channel.name, options, services)
