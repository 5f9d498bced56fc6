"""The container image, built from the Dockerfile and run: healthy through its own
HEALTHCHECK, not root, draining on SIGTERM, ``migrate`` as a one-shot container, and two
replicas on PostgreSQL answering a stream of webhook events with nothing lost.

Skipped, with the reason, where no Docker daemon (or no base image) can be had; on this
project's machines ``../shared/tools/docker-standin`` provides both and ``.ci/run`` calls it.
The containers run on the host network: the simulator (Parloa), the receiver (the webhook
channel's ``deliver_url``) and PostgreSQL are on this machine's loopback interface. What the
tests measure is written to ``test-artifacts/image.json``."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.devtools.faults import Faults
from tests.support.containers import Built, Container, Containers, build, unavailable
from tests.support.database import skip_unless_replicas_can_share
from tests.support.net import local_url
from tests.support.paths import ROOT
from tests.support.process import CHANNEL, Receiver, Sender, WebhookWorld, webhook_world

pytestmark = pytest.mark.slow

#: the image's configuration file, as the Dockerfile's PARLOA_BRIDGE_CONFIG names it
CONFIG_IN_IMAGE = "/etc/parloa-bridge/bridge.toml"
DRAIN_SECONDS = 10.0
GRACE_SECONDS = 30
FIGURES: dict[str, Any] = {}


def revision() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


@pytest.fixture(scope="module")
def image() -> Iterator[Built]:
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    built = asyncio.run(build(f"parloa-bridge:test-{version}", f"REVISION={revision()}"))
    FIGURES["build_seconds"] = round(built.seconds, 1)
    FIGURES["image_mib"] = round(built.size_bytes / 2**20, 1)
    yield built
    out = ROOT / "test-artifacts" / "image.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(FIGURES, indent=2) + "\n")


@pytest.fixture
async def containers() -> AsyncIterator[Containers]:
    made = Containers()
    try:
        yield made
    finally:
        await made.remove_all()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[WebhookWorld]:
    async with webhook_world(tmp_path, WebhookWorld) as made:
        yield made


def config_for(
    world: WebhookWorld, name: str, database_url: str, **database: Any
) -> tuple[Path, int]:
    """A configuration file for one container (its own port on the host network)."""
    path, port = world.config(
        name, database_url, engine={"drain_timeout_seconds": DRAIN_SECONDS}, database=database
    )
    path.chmod(0o644)  # read by uid 10001 inside the container
    return path, port


def events_url(port: int) -> str:
    return f"{local_url(port)}/webhook/{CHANNEL}/events"


async def answered(receiver: Receiver, expected: dict[str, list[str]], within: float) -> None:
    await receiver.wait_for(lambda r: r.answered(expected), within)


# --- one container, SQLite on its volume -----------------------------------------------------


async def test_the_image_runs_healthy_as_uid_10001_and_answers(
    image: Built, containers: Containers, world: WebhookWorld
) -> None:
    config = image.inspect["Config"]
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "bridge.healthcheck"]
    assert config["User"] == "10001:10001"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == revision()
    assert labels["org.opencontainers.image.version"] == image.tag.rsplit("-", 1)[1]

    data = await containers.volume("data")
    path, port = config_for(world, "single", "sqlite+aiosqlite:////data/bridge.db")
    bridge = await containers.start(
        image.tag,
        "single",
        mounts=[f"{path}:{CONFIG_IN_IMAGE}:ro", f"{data}:/data"],
        health_interval="1s",
    )
    FIGURES["run_to_healthy_seconds"] = round(await bridge.wait_healthy(), 2)

    status = await bridge.exec("cat", "/proc/1/status")
    uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)", status, re.M)
    assert uids is not None and uids.groups() == ("10001", "10001"), status
    assert "parloa-bridge" in await bridge.exec("cat", "/proc/1/cmdline")

    async with Sender([events_url(port)]) as sender:
        await sender.send("c1", "hello", deadline=time.monotonic() + 20)
    await answered(world.receiver, {"c1": ["hello"]}, within=20)


async def test_sigterm_drains_the_message_in_flight_and_exits_0(
    image: Built, containers: Containers, world: WebhookWorld
) -> None:
    data = await containers.volume("drain")
    path, port = config_for(world, "drain", "sqlite+aiosqlite:////data/bridge.db")
    bridge = await containers.start(
        image.tag, "drain", mounts=[f"{path}:{CONFIG_IN_IMAGE}:ro", f"{data}:/data"]
    )
    await wait_ready(bridge, port)
    # Parloa takes 2 s: the message is in flight when SIGTERM arrives.
    world.simulator.state.faults = Faults(latency=2.0)
    async with Sender([events_url(port)]) as sender:
        await sender.send("c1", "slow", deadline=time.monotonic() + 20)
    async with asyncio.timeout(20):
        await world.simulator.state.wait_for(lambda s: s.stats().in_flight >= 1)

    code, seconds = await bridge.stop(GRACE_SECONDS)
    FIGURES["sigterm_to_exit_seconds"] = round(seconds, 2)
    assert code == 0, await bridge.logs()
    assert seconds < GRACE_SECONDS, "stopped by SIGKILL, not by the drain"
    assert world.receiver.echoes("c1") == ["slow"], "the message in flight was answered"


async def wait_ready(container: Container, port: int) -> None:
    """Until /readyz answers 200 from the container (its start announces nothing else)."""
    import aiohttp

    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(
        trust_env=False, timeout=aiohttp.ClientTimeout(total=2)
    ) as session:
        while True:
            try:
                async with session.get(f"{local_url(port)}/readyz") as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            state = await container.state()
            if not state.get("Running") or time.monotonic() > deadline:
                raise AssertionError(f"{container.name} never ready:\n{await container.logs()}")
            await asyncio.sleep(0.1)


# --- migrate, then two replicas on PostgreSQL --------------------------------------------------


async def test_migrate_then_two_replicas_on_postgresql_lose_nothing(
    image: Built, containers: Containers, world: WebhookWorld, database_url: str
) -> None:
    skip_unless_replicas_can_share(database_url)
    configs = [config_for(world, f"replica-{i}", database_url, auto_migrate=False) for i in (1, 2)]
    mount = f"{configs[0][0]}:{CONFIG_IN_IMAGE}:ro"

    code, out, err, seconds = await containers.run_once(
        image.tag, mounts=[mount], command=["migrate"]
    )
    FIGURES["migrate_seconds"] = round(seconds, 2)
    assert code == 0, err
    assert "database schema is at revision" in out

    replicas = [
        await containers.start(image.tag, f"replica-{i}", mounts=[f"{path}:{CONFIG_IN_IMAGE}:ro"])
        for i, (path, _port) in enumerate(configs, start=1)
    ]
    for replica, (_path, port) in zip(replicas, configs, strict=True):
        await wait_ready(replica, port)

    world.simulator.state.faults = Faults(latency=0.01, latency_max=0.05)
    conversations = {f"conv-{i}": [f"m{j}" for j in range(5)] for i in range(40)}
    started = time.monotonic()
    async with Sender([events_url(port) for _path, port in configs]) as sender:
        await asyncio.gather(
            *(
                sender.send_conversation(c, texts, deadline=time.monotonic() + 60)
                for c, texts in conversations.items()
            )
        )
    await answered(world.receiver, conversations, within=60)
    FIGURES["two_replicas"] = {
        "events": sum(map(len, conversations.values())),
        "accepted_per_replica": sorted(sender.accepted_by.values()),
        "all_answered_seconds": round(time.monotonic() - started, 2),
    }
    assert len(sender.accepted_by) == 2, "both replicas took events"
    for c, texts in conversations.items():
        assert world.receiver.echoes(c) == texts, f"{c}: {world.receiver.echoes(c)}"

    for replica in replicas:
        code, _seconds = await replica.stop(GRACE_SECONDS)
        assert code == 0, await replica.logs()
