"""``python -m bridge.healthcheck``: is the bridge on this host alive? Exit 0 when its
``/healthz`` answers 200, 1 otherwise, with one line saying why.

The container image's HEALTHCHECK runs this every few seconds, so it imports only the
configuration (not the channels or the engine) and reads the port from the same file the
daemon reads: changing ``[http] port`` needs no change to the image or the manifests."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from bridge.config import ConfigError, config_path, load_config

#: an address the daemon listens on for every interface is reached on the loopback one
_ANY = {"", "0.0.0.0", "::", "[::]"}


def healthz_url(host: str, port: int) -> str:
    if host in _ANY:
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def probe(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200; otherwise why not."""
    # Proxies are bypassed: the probe is always local.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{url}: {reason}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="parloa-bridge healthcheck",
        description="Exit 0 when the bridge configured here answers on /healthz.",
    )
    parser.add_argument("--config", metavar="PATH", help="default: $PARLOA_BRIDGE_CONFIG")
    parser.add_argument("--timeout", type=float, default=4.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    return check(args.config, args.timeout)


def check(config: str | None, timeout: float) -> int:
    """The exit code: 0 healthy, 1 not, 2 the configuration cannot be read."""
    try:
        http = load_config(config_path(config)).http
    except ConfigError as exc:
        for line in exc.problems:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    why = probe(healthz_url(http.host, http.port), timeout)
    if why is not None:
        print(f"unhealthy: {why}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
