"""The built-in channel adapters, one package per channel type. Each type is registered as an
entry point of the group ``parloa_bridge.channels`` in pyproject.toml and found through it
(:mod:`bridge.channels`), as a channel shipped in a distribution of its own would be."""
