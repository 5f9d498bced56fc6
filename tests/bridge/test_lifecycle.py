"""Parts start in order and stop in reverse, and one part that fails to stop does not keep the
others open: the lifecycle alone with fake parts, then the whole service."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bridge.lifecycle import Lifecycle
from bridge.service import Service
from bridge.textchat.client import TextchatClient
from tests.support.config import BOT_OPTIONS, config_data, service_config, sqlite_url

log = logging.getLogger("tests.lifecycle")


class Part:
    """A fake part that writes what happens to it into a shared journal."""

    def __init__(self, name: str, journal: list[str], *, fail_start: bool = False) -> None:
        self.name = name
        self.journal = journal
        self.fail_start = fail_start
        self.fail_stop: BaseException | None = None

    async def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.journal.append(f"start {self.name}")

    async def stop(self) -> None:
        self.journal.append(f"stop {self.name}")
        if self.fail_stop is not None:
            raise self.fail_stop


async def started(names: str, journal: list[str]) -> tuple[Lifecycle, dict[str, Part]]:
    parts = Lifecycle(log)
    made = {name: Part(name, journal) for name in names}
    for name, part in made.items():
        await parts.start(name, part.start, part.stop)
    return parts, made


async def test_a_failing_stop_is_logged_and_every_other_part_still_stops_in_reverse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    journal: list[str] = []
    parts, made = await started("abcd", journal)
    made["c"].fail_stop = RuntimeError("c broke")
    assert parts.parts == ["a", "b", "c", "d"]
    with caplog.at_level(logging.ERROR, logger=log.name):
        failures = await parts.stop()
    assert journal == [*(f"start {n}" for n in "abcd"), *(f"stop {n}" for n in "dcba")]
    assert [(f.part, str(f.error)) for f in failures] == [("c", "c broke")]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["c did not stop cleanly"]
    assert errors[0].exc_info is not None
    # Idempotent: nothing is stopped twice.
    assert await parts.stop() == [] and parts.parts == []
    assert journal.count("stop a") == 1


async def test_a_part_whose_start_fails_is_not_stopped_but_those_before_it_are() -> None:
    journal: list[str] = []
    parts, _ = await started("ab", journal)
    broken = Part("c", journal, fail_start=True)
    with pytest.raises(RuntimeError, match="c cannot start"):
        await parts.start("c", broken.start, broken.stop)
    assert await parts.stop() == []
    assert journal == ["start a", "start b", "stop b", "stop a"]


async def test_a_cancelled_stop_still_stops_the_rest_then_passes_the_cancellation_on() -> None:
    journal: list[str] = []
    parts, made = await started("abc", journal)
    made["b"].fail_stop = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await parts.stop()
    assert journal[-3:] == ["stop c", "stop b", "stop a"]


async def test_as_a_context_manager_it_stops_on_the_way_out_of_an_error() -> None:
    journal: list[str] = []
    with pytest.raises(KeyError):
        async with Lifecycle(log) as parts:
            part = Part("a", journal)
            await parts.start("a", part.start, part.stop)
            raise KeyError("the command failed")
    assert journal == ["start a", "stop a"]


# --- the service ------------------------------------------------------------------------------


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_the_service_stops_every_part_when_one_fails_to_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Fault injection: the "broken" bot's client closes, then reports a failure.
    real_close = TextchatClient.close

    async def close_then_fail(client: TextchatClient) -> None:
        await real_close(client)
        if client.release_id == "rel-broken":
            raise RuntimeError("the connector would not close")

    monkeypatch.setattr(TextchatClient, "close", close_then_fail)
    unused = "http://127.0.0.1:9"  # no conversation runs: Parloa is never called
    hook = {
        "name": "hook",
        "type": "webhook",
        "secret": "lifecycle-secret-0123456789",
        "deliver_url": unused + "/deliver",
    }
    data = config_data(sqlite_url(tmp_path), unused, hook, engine={"drain_timeout_seconds": 2})
    # A second bot before the channel's: its client (the broken one) stops after the other.
    broken = {**BOT_OPTIONS, "release_id": "rel-broken", "base_url": unused}
    data["bots"] = {"broken": broken, **data["bots"]}
    data["simulator"] = {"enabled": True, "port": 0}
    service = Service(service_config(data))
    stop = asyncio.Event()
    stop.set()  # run() starts everything, then stops at once
    with caplog.at_level(logging.DEBUG, logger="bridge.service"):
        async with asyncio.timeout(60):
            await service.run(stop)

    stopping = [
        r.getMessage().removeprefix("stopping ")
        for r in caplog.records
        if r.name == "bridge.service" and r.getMessage().startswith("stopping ")
    ]
    assert stopping == [
        "channel hook intake",
        "engine",
        "channel hook",
        "console event streams",
        "HTTP server",
        "Parloa client demo",
        "Parloa client broken",
        "simulator",
        "store",
        "database",
    ]
    failed = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in failed] == ["Parloa client broken did not stop cleanly"]
    assert any("not cleanly: Parloa client broken" in r.getMessage() for r in caplog.records)
    # Nothing is left open: both listeners are gone and no connection is checked out.
    assert service.http is not None and service.simulator is not None
    assert await refuses_connections(service.http.port)
    simulator_port = int(service.simulator.url.rsplit(":", 1)[1])
    assert await refuses_connections(simulator_port)
    assert service.db.pool.checkedout() == 0  # type: ignore[attr-defined]
