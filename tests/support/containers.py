"""The Docker command line, for the tests that build the image and run it: availability (with
the reason a test is skipped), a build, and containers on the host network that a test starts,
waits on, signals and removes."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.paths import ROOT

BASE_IMAGE = "python:3.11-slim"
STANDIN = "../shared/tools/docker-standin"


def unavailable() -> str | None:
    """Why no image can be built here, or None when it can."""
    if shutil.which("docker") is None:
        return "no docker command here"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, timeout=20)
        if info.returncode != 0:
            return (
                "no Docker daemon answers (on this project's machines "
                f"`{STANDIN}` starts one; see README, Deployment)"
            )
        base = subprocess.run(
            ["docker", "image", "inspect", BASE_IMAGE], capture_output=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker does not answer: {exc}"
    if base.returncode != 0:
        return f"the base image {BASE_IMAGE} is not here and no registry may be reachable"
    return None


async def docker(*args: str, within: float = 120, check: bool = True) -> tuple[int, str, str]:
    """``docker ARGS``: exit code, stdout, stderr (AssertionError when ``check`` and not 0)."""
    proc = await asyncio.create_subprocess_exec(
        "docker",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(within):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"docker {' '.join(args)}: no answer in {within}s") from None
    code = proc.returncode
    assert code is not None
    if check and code != 0:
        raise AssertionError(f"docker {' '.join(args)} exited {code}:\n{err.decode()[-4000:]}")
    return code, out.decode(), err.decode()


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    size_bytes: int
    inspect: dict[str, Any]


async def build(tag: str, *build_args: str) -> Built:
    """``docker build`` of the repository's Dockerfile with the classic builder (what any
    engine has), on the host network (the registry is reached as this machine reaches it)."""
    argv = ["build", "--network", "host", "--tag", tag]
    for arg in build_args:
        argv += ["--build-arg", arg]
    started = time.monotonic()
    await docker(*argv, str(ROOT), within=900)
    seconds = time.monotonic() - started
    _, out, _ = await docker("image", "inspect", tag)
    (inspect,) = json.loads(out)
    return Built(tag, seconds, int(inspect["Size"]), inspect)


@dataclass
class Containers:
    """Every container and volume a test made, removed at the end whatever happened."""

    prefix: str = field(default_factory=lambda: f"pb-test-{uuid.uuid4().hex[:8]}")
    names: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    async def volume(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        await docker("volume", "create", full)
        self.volumes.append(full)
        return full

    async def start(
        self,
        image: str,
        name: str,
        *,
        mounts: Sequence[str] = (),
        command: Sequence[str] = (),
        health_interval: str | None = None,
    ) -> Container:
        """``docker run -d`` on the host network (this machine's PostgreSQL, simulator and
        receiver are on its loopback interface)."""
        full = f"{self.prefix}-{name}"
        argv = ["run", "--detach", "--name", full, "--network", "host"]
        if health_interval is not None:
            # The image's own HEALTHCHECK command, probed more often than in production.
            argv += ["--health-interval", health_interval]
        for mount in mounts:
            argv += ["--volume", mount]
        self.names.append(full)
        started = time.monotonic()
        await docker(*argv, image, *command)
        return Container(full, started)

    async def run_once(
        self, image: str, *, mounts: Sequence[str] = (), command: Sequence[str] = ()
    ) -> tuple[int, str, str, float]:
        """A one-shot container (``docker run --rm``): exit code, stdout, stderr, seconds."""
        argv = ["run", "--rm", "--network", "host"]
        for mount in mounts:
            argv += ["--volume", mount]
        started = time.monotonic()
        code, out, err = await docker(*argv, image, *command, within=120, check=False)
        return code, out, err, time.monotonic() - started

    async def remove_all(self) -> None:
        if self.names:
            await docker("rm", "--force", "--volumes", *self.names, check=False)
        if self.volumes:
            await docker("volume", "rm", "--force", *self.volumes, check=False)


@dataclass
class Container:
    name: str
    started_at: float

    async def state(self) -> dict[str, Any]:
        _, out, _ = await docker("inspect", "--format", "{{json .State}}", self.name)
        state: dict[str, Any] = json.loads(out)
        return state

    async def logs(self) -> str:
        _, out, err = await docker("logs", "--tail", "80", self.name, check=False)
        return out + err

    async def wait_healthy(self, within: float = 60) -> float:
        """Seconds from ``docker run`` until the HEALTHCHECK reported healthy (the engine's
        state is polled: a container start announces nothing else)."""
        deadline = time.monotonic() + within
        while True:
            state = await self.state()
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return time.monotonic() - self.started_at
            if not state.get("Running") or health == "unhealthy" or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: {health or state.get('Status')}; log:\n{await self.logs()}"
                )
            await asyncio.sleep(0.2)

    async def exec(self, *argv: str) -> str:
        _, out, _ = await docker("exec", self.name, *argv)
        return out

    async def stop(self, grace: int) -> tuple[int, float]:
        """``docker stop`` (SIGTERM, SIGKILL after ``grace`` seconds): exit code, seconds."""
        started = time.monotonic()
        await docker("stop", "--time", str(grace), self.name, within=grace + 30)
        seconds = time.monotonic() - started
        state = await self.state()
        return int(state["ExitCode"]), seconds
