"""The Parloa TextchatV2 protocol: wire models, the client, context helpers, the simulator.
Knows nothing of channels or SQL."""
