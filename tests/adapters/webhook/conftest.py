"""The channel tests' fixtures (an adapter, its routes served, a receiver for deliver_url),
shared with the other test modules of the webhook channel."""

from tests.adapters.webhook.test_channel import (  # noqa: F401
    http,
    make_adapter,
    open_channel,
    receiver,
)
