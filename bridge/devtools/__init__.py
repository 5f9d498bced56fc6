"""Developer tools: the local TextchatV2 simulator (:mod:`bridge.devtools.simulator`) with its
demo bot. Not on the core's import path: the service imports it only when ``[simulator]
enabled`` is set, the CLI only for the ``simulator`` command."""
