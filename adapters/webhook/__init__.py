"""A generic HTTP channel (``type = "webhook"``): signed JSON events in, signed JSON replies out.

For integrators with their own chat front end, and for the project's own subprocess tests.

Inbound: ``POST /webhook/{channel}/events`` on the bridge's HTTP server. Outbound: each reply
is POSTed to the channel's ``deliver_url``. Both directions are signed the same way::

    X-Bridge-Timestamp: <unix seconds>
    X-Bridge-Signature: v1=<hex HMAC-SHA256(secret, b"<timestamp>." + raw_body)>

A reply may be POSTed more than once (the bridge retries after a timeout or a 5xx whose fate it
cannot know): receivers should deduplicate by ``outbox_id``.

:mod:`adapters.webhook.convert` holds the pure conversions, :mod:`adapters.webhook.channel` the
options, the adapter and the registry entry ``WEBHOOK``.
"""
