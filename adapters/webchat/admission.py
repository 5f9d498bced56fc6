"""Who may use the web chat, and how fast: the identities the bridge issues, the caps on
open sockets (per address and in total; per user in the adapter, which knows a user's
sockets), the token buckets per socket and per client address, and a user's events waiting
for the bot."""

from __future__ import annotations

import collections
import secrets
import time

from adapters.webchat.options import WebchatOptions
from adapters.webchat.protocol import (
    RATE_LIMITED,
    SLOW_DOWN,
    TokenBucket,
    identity_token,
    identity_valid,
)

#: An event counts as pending (for ``max_pending_events``) until a delivery to its user, or
#: for this long when the bot sends nothing back.
PENDING_WINDOW_SECONDS = 60.0
#: Address buckets kept before full (idle) ones are forgotten.
MAX_ADDRESS_BUCKETS = 10_000


class Admission:
    """The limits of one web chat channel, in this process."""

    def __init__(self, channel: str, options: WebchatOptions) -> None:
        self._channel = channel
        self.options = options
        secret = options.identity_secret
        self._identity_key = (
            secret.get_secret_value().encode("utf-8")
            if secret is not None
            else secrets.token_bytes(32)
        )
        self._by_address: collections.Counter[str] = collections.Counter()  # open sockets
        self._address_buckets: dict[str, TokenBucket] = {}
        self._upload_buckets: dict[str, TokenBucket] = {}  # by user
        self._pending: dict[str, collections.deque[float]] = {}  # by user: accepted at

    # --- identity ---------------------------------------------------------------------------

    def issue(self) -> tuple[str, str]:
        """A new user id and its token."""
        user = secrets.token_hex(16)
        return user, identity_token(self._identity_key, self._channel, user)

    def issued(self, user: str, token: str) -> bool:
        """Whether this bridge (its key) issued ``user`` with ``token``."""
        return identity_valid(self._identity_key, self._channel, user, token)

    # --- sockets ----------------------------------------------------------------------------

    def over_cap(self, address: str, open_sockets: int) -> str | None:
        """Why one more socket from ``address`` is refused, or None."""
        if open_sockets >= self.options.max_sockets:
            return "too many connections"
        if self._by_address[address] >= self.options.max_sockets_per_address:
            return "too many connections from this address"
        return None

    def opened(self, address: str) -> None:
        self._by_address[address] += 1

    def closed(self, address: str) -> None:
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    def socket_bucket(self) -> TokenBucket:
        """A new socket's own bucket."""
        return TokenBucket(
            self.options.socket_rate_per_second, self.options.socket_burst, time.monotonic()
        )

    # --- events -----------------------------------------------------------------------------

    def limit(self, user: str, socket_bucket: TokenBucket, address: str) -> str | None:
        """Why the socket's next event is refused (an error reason), or None. A refused event
        spends no token."""
        now = time.monotonic()
        pending = self._pending.get(user)
        if pending is not None:
            while pending and now - pending[0] > PENDING_WINDOW_SECONDS:
                pending.popleft()
            if len(pending) >= self.options.max_pending_events:
                return SLOW_DOWN
        buckets = (socket_bucket, self._address_bucket(address, now))
        if not all(b.ready(now) for b in buckets):
            return RATE_LIMITED
        for b in buckets:
            b.spend()
        return None

    def upload_limit(self, user: str, address: str) -> str | None:
        """Why an upload is refused (``rate_limited``), or None: a user's uploads share a
        bucket as fast as one socket's events, and the client address's bucket."""
        now = time.monotonic()
        buckets = (
            self._bucket(self._upload_buckets, user, now, *self._socket_rate),
            self._address_bucket(address, now),
        )
        if not all(b.ready(now) for b in buckets):
            return RATE_LIMITED
        for b in buckets:
            b.spend()
        return None

    @property
    def _socket_rate(self) -> tuple[float, int]:
        return self.options.socket_rate_per_second, self.options.socket_burst

    def accepted(self, user: str) -> None:
        """An event of ``user`` was stored: it waits for the bot."""
        self._pending.setdefault(user, collections.deque()).append(time.monotonic())

    def answered(self, user: str) -> None:
        """A delivery to ``user``: one of the events waiting for the bot was answered."""
        pending = self._pending.get(user)
        if pending:
            pending.popleft()
        if pending is not None and not pending:
            del self._pending[user]

    def _address_bucket(self, address: str, now: float) -> TokenBucket:
        return self._bucket(
            self._address_buckets,
            address,
            now,
            self.options.address_rate_per_second,
            self.options.address_burst,
        )

    @staticmethod
    def _bucket(
        buckets: dict[str, TokenBucket], key: str, now: float, rate: float, burst: int
    ) -> TokenBucket:
        bucket = buckets.get(key)
        if bucket is None:
            if len(buckets) >= MAX_ADDRESS_BUCKETS:
                # Full buckets are as good as new ones: forget them.
                for old_key, old in list(buckets.items()):
                    if old.full(now):
                        del buckets[old_key]
            bucket = TokenBucket(rate, burst, now)
            buckets[key] = bucket
        return bucket
