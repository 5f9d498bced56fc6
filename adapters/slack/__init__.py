"""The Slack channel (``type = "slack"``): slack-bolt and slack-sdk inside the service's loop.

``normalize`` turns Events API payloads, button clicks and slash commands into the core's
inbound events, ``render`` turns response elements into Block Kit messages (both pure), and
``channel`` does the I/O: the Events API route or Socket Mode, OAuth installs, delivery;
``download`` fetches the files users share, which ``files`` describes."""
