"""The Telegram channel (``type = "telegram"``): python-telegram-bot inside the service's loop.

``normalize`` turns updates into the core's inbound events (``media`` describes what a message
carries besides text as an attachment), ``render`` turns response elements into Telegram
messages (``parts``; ``media_render`` for a payload's attachments; all pure), ``budgets`` keeps
sends within Telegram's limits, ``polling`` is the durable getUpdates loop, ``delivery`` sends
replies, ``files`` streams an attachment's bytes from the Bot API, and ``channel`` ties them
together: the adapter, webhook intake, chip presses."""
