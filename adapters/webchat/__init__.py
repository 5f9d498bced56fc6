"""The web chat channel: a chat page, an embed script and a WebSocket served by the bridge
itself. See :mod:`adapters.webchat.channel` for the protocol."""
