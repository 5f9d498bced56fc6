"""The Telegram channel (``type = "telegram"``): python-telegram-bot inside the service's loop.

``normalize`` turns updates into the core's inbound events, ``render`` turns response elements
into Telegram messages (both pure), ``budgets`` keeps sends within Telegram's limits,
``polling`` is the durable getUpdates loop, ``delivery`` sends replies, and ``channel`` ties
them together: the adapter, webhook intake, chip presses."""
