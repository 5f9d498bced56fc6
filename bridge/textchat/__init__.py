"""The Parloa TextchatV2 protocol: wire models, the client and its errors, context helpers.
Knows nothing of channels or SQL."""
