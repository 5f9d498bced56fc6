"""Channel types are plugins: a distribution that declares an entry point in the group
``parloa_bridge.channels`` adds a channel type by being installed, and the core imports no
adapter. The tiny distribution here is written into a directory (a package and its
``*.dist-info``) put on the path, as ``pip install --target`` would leave it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.channels import (
    ENTRY_POINT_GROUP,
    ChannelTypeError,
    UnknownChannelType,
    channel_type,
    known_channel_types,
)
from bridge.config import ConfigError
from bridge.devtools.simulator import RunningSimulator
from tests.support.config import config_data, service_config, sqlite_url
from tests.support.paths import ROOT
from tests.support.service import running_service, service_url

BUILT_IN = ["slack", "telegram", "webchat", "webhook"]
PLUGIN_MODULES = ("memo_channel", "other_channel", "odd_channel", "odd_channel.nowhere")

# The whole channel: an HTTP route takes events, replies are kept in memory for the test.
MEMO_CHANNEL = '''
"""A channel type shipped in a distribution of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from aiohttp import web
from pydantic import BaseModel

from bridge.channel import (
    Adapter,
    AdapterServices,
    AdapterType,
    Delivery,
    Inbound,
    InboundKind,
    Intake,
    IntakeUnavailable,
)


class MemoOptions(BaseModel):
    greeting: str


class MemoAdapter(Adapter):
    def __init__(self, name: str, options: MemoOptions, services: AdapterServices) -> None:
        super().__init__(name)
        self.options = options
        self.intake: Intake | None = None
        self.replies: list[tuple[str, str]] = []  # (user, text)
        self._changed = asyncio.Condition()

    def routes(self) -> Sequence[web.RouteDef]:
        return [web.post(f"/memo/{self.name}/events", self._event)]

    async def _event(self, request: web.Request) -> web.Response:
        if self.intake is None:
            return web.json_response({"error": "not started"}, status=503)
        body = await request.json()
        event = Inbound(
            event_id=body["id"],
            conversation_key=body["user"],
            user_id=body["user"],
            kind=InboundKind.TEXT,
            text=body["text"],
            address={"user": body["user"]},
        )
        try:
            result = await self.intake.accept(event)
        except IntakeUnavailable:
            return web.json_response({"error": "try again"}, status=503)
        return web.json_response({"status": str(result)})

    async def start(self, intake: Intake) -> None:
        self.intake = intake

    async def stop(self) -> None:
        self.intake = None

    async def deliver(self, delivery: Delivery) -> None:
        if delivery.parts_done >= 1:
            return
        async with self._changed:
            for element in delivery.elements:
                text = getattr(element, "content", None)
                if isinstance(text, str):
                    self.replies.append((delivery.address["user"], text))
            self._changed.notify_all()
        await delivery.progress(0, None)

    async def until(self, predicate: Callable[[list[tuple[str, str]]], bool]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.replies))


MEMO = AdapterType(MemoOptions, MemoAdapter)
'''


def write_distribution(site: Path, name: str, entry_points: str, package: str = "") -> None:
    """A distribution as an installer leaves it: the package and its metadata."""
    if package:
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(package, encoding="utf-8")
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(entry_points, encoding="utf-8")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on sys.path to install distributions into."""
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    yield path
    for module in PLUGIN_MODULES:
        sys.modules.pop(module, None)


@pytest.fixture
def memo(site: Path) -> Path:
    write_distribution(
        site, "memo_channel", f"[{ENTRY_POINT_GROUP}]\nmemo = memo_channel:MEMO\n", MEMO_CHANNEL
    )
    return site


def notes(tmp_path: Path, parloa_url: str = "http://127.0.0.1:9", **channel: Any) -> dict[str, Any]:
    """A configuration with one channel named ``notes`` (its type and options)."""
    return config_data(sqlite_url(tmp_path), parloa_url, {"name": "notes", **channel})


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        service_config(data)
    return caught.value.problems


# --- a conversation through a channel from its own distribution --------------------------------


async def test_an_installed_channel_distribution_runs_a_conversation(
    memo: Path, tmp_path: Path, sim: RunningSimulator
) -> None:
    assert sorted(known_channel_types()) == sorted([*BUILT_IN, "memo"])
    config = service_config(notes(tmp_path, sim.url, type="memo", greeting="hello"))
    async with running_service(config) as service:
        adapter: Any = service.adapters["notes"]
        assert type(adapter).__module__ == "memo_channel" and adapter.options.greeting == "hello"
        assert service.channel_state["notes"] == "started"
        url = f"{service_url(service)}/memo/notes/events"
        async with aiohttp.ClientSession(trust_env=False) as http:
            event = {"id": "e-1", "user": "ada", "text": "hi there"}
            for expected in ("accepted", "duplicate"):
                async with http.post(url, json=event) as resp:
                    assert resp.status == 200 and await resp.json() == {"status": expected}
            async with asyncio.timeout(20):
                await adapter.until(lambda replies: ("ada", "You said: hi there") in replies)
            async with http.post(url, json={"id": "e-2", "user": "ada", "text": "bye"}) as resp:
                assert resp.status == 200
            async with asyncio.timeout(20):
                await adapter.until(lambda replies: ("ada", "Bye! See you later :)") in replies)
    assert sim.state.events()[0] == ("launch", None)
    assert [e for e in sim.state.events() if e[0] == "message"] == [
        ("message", "hi there"),
        ("message", "bye"),
    ]
    assert adapter.replies[0][1].startswith("Hello! I am the demo bot")


async def test_a_plugin_types_its_own_options(memo: Path, tmp_path: Path) -> None:
    assert problems(notes(tmp_path, type="memo")) == ["channels[0].greeting: Field required"]


# --- what goes wrong --------------------------------------------------------------------------


def test_an_unknown_type_names_the_known_ones(tmp_path: Path) -> None:
    known = ", ".join(BUILT_IN)
    with pytest.raises(UnknownChannelType) as caught:
        channel_type("fax")
    assert str(caught.value) == f"unknown channel type 'fax' (known: {known})"
    assert problems(notes(tmp_path, type="fax")) == [
        f"channels[0].type: unknown channel type 'fax' (known: {known})"
    ]


def test_an_installed_type_is_among_the_known_ones(memo: Path) -> None:
    with pytest.raises(UnknownChannelType, match=r"\(known: memo, slack, telegram, "):
        channel_type("fax")


def test_a_type_declared_by_two_distributions_is_refused(memo: Path) -> None:
    write_distribution(memo, "other_channel", f"[{ENTRY_POINT_GROUP}]\nmemo = other_channel:X\n")
    with pytest.raises(ChannelTypeError, match="'memo' is declared more than once") as caught:
        channel_type("memo")
    assert not isinstance(caught.value, UnknownChannelType)


def test_a_type_that_does_not_load_or_is_no_channel_type_is_a_config_problem(
    site: Path, tmp_path: Path
) -> None:
    write_distribution(
        site,
        "odd_channel",
        f"[{ENTRY_POINT_GROUP}]\nmissing = odd_channel.nowhere:X\nodd = odd_channel:ODD\n",
        "ODD = 42\n",
    )
    with pytest.raises(ChannelTypeError, match=r"'missing' \(odd_channel\.nowhere:X\) does not"):
        channel_type("missing")
    assert problems(notes(tmp_path, type="odd")) == [
        "channels[0].type: channel type 'odd' (odd_channel:ODD) is not a channel type "
        "(it needs options_model and create)"
    ]


def test_the_core_imports_no_adapter_nor_platform_library() -> None:
    probe = (
        "import json, sys\n"
        "import bridge.cli, bridge.service, bridge.engine, bridge.parts, bridge.channels\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('adapters', 'telegram', 'slack_bolt', 'slack_sdk'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    declared = textwrap.dedent(
        """
        from importlib.metadata import entry_points
        print(sorted(e.name for e in entry_points(group="parloa_bridge.channels")))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", declared], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == repr(BUILT_IN), result.stderr
