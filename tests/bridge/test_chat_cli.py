"""``parloa-bridge chat`` driven through stdin against the simulator, as a user would run it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bridge.devtools.simulator import RunningSimulator
from bridge.terminal_chat import TerminalChat, render_for_terminal
from bridge.textchat.client import TextchatClient
from bridge.textchat.models import parse_element
from tests.support.config import BOT, BOT_OPTIONS, write_config
from tests.support.process import bridge_command

TOKEN = "chat-token-XYZ-987"


@pytest.fixture
def simulator(sim: RunningSimulator) -> RunningSimulator:
    """The shared simulator, taking only the token the chat is given."""
    sim.state.token = TOKEN
    return sim


def chat_config(tmp_path: Path, base_url: str, token: str = "env:CHAT_TEST_TOKEN") -> Path:
    bot = {**BOT_OPTIONS, "api_token": token, "base_url": base_url, "context": {"brand": "acme"}}
    return write_config(tmp_path, {"bots": {BOT: bot}})


async def run_chat(
    config: Path, stdin: str, env_token: str = TOKEN, *extra: str
) -> tuple[int, str, str]:
    args = ("chat", "--config", str(config), "--requester", "tester", *extra)
    return await bridge_command(*args, stdin=stdin, env={"CHAT_TEST_TOKEN": env_token})


async def test_launch_chip_card_bye(simulator: RunningSimulator, tmp_path: Path) -> None:
    config = chat_config(tmp_path, simulator.url)
    # "1" picks the first chip of the welcome ("Show me a card"); "bye" ends it.
    code, out, err = await run_chat(config, "1\nbye\n")
    assert code == 0, err
    assert "Show me a card" in out
    assert "[1]" in out and "[3]" in out
    assert "┌─" in out and "image: " + simulator.url in out and "/_simulator/card.png" in out
    assert "(the bot ended the conversation)" in out
    assert TOKEN not in out + err
    events = simulator.state.events()
    assert [e[0] for e in events] == ["launch", "message", "message"]
    assert events[1][1] == "Show me a card"
    assert events[2][1] == "bye"
    # the bot ended it: no quit is sent afterwards
    recorded = list(simulator.state.requests)
    assert {r.session_id for r in recorded} == {recorded[0].session_id}
    assert recorded[0].requester_id == "terminal:tester"
    context = {item["key"]: item["value"] for item in recorded[0].context or []}
    assert context["brand"] == "acme" and context["platform"] == "terminal"


@pytest.mark.parametrize("stdin", ["hello\n", "hello\n/quit\n"], ids=["ctrl-d", "slash-quit"])
async def test_leaving_sends_quit(simulator: RunningSimulator, tmp_path: Path, stdin: str) -> None:
    code, out, err = await run_chat(chat_config(tmp_path, simulator.url), stdin)
    assert code == 0, err
    assert "You said: hello" in out
    assert [e[0] for e in simulator.state.events()] == ["launch", "message", "quit"]


async def test_session_expiry_is_recovered(simulator: RunningSimulator) -> None:
    lines = iter(["again", "/quit"])

    async def read_line(prompt: str) -> str | None:
        simulator.state.expire_sessions()  # Parloa forgot the session while the user typed
        return next(lines, None)

    out = io.StringIO()
    async with TextchatClient(simulator.url, "rel-1", TOKEN) as client:
        chat = TerminalChat(client, requester_id="t", out=out, read_line=read_line)
        assert await chat.run() == 0
    assert "You said: again" in out.getvalue()
    welcome = out.getvalue().splitlines()[0]
    assert out.getvalue().count(welcome) == 1  # the recovery shows no second welcome
    kinds = [e[0] for e in simulator.state.events()]
    assert kinds == ["launch", "launch", "message", "quit"]


async def test_refused_token_is_one_clear_line(simulator: RunningSimulator, tmp_path: Path) -> None:
    code, out, err = await run_chat(chat_config(tmp_path, simulator.url), "hi\n", "wrong-token")
    assert code == 1
    assert "refused the API token" in err
    assert "Traceback" not in err
    assert "wrong-token" not in out + err


async def test_unreachable_parloa_is_reported(tmp_path: Path) -> None:
    config = chat_config(tmp_path, "http://127.0.0.1:9")  # discard port: nothing listens
    code, _out, err = await run_chat(config, "")
    assert code == 1
    assert "cannot talk to Parloa" in err and "Traceback" not in err


async def test_missing_env_secret_is_a_config_error(tmp_path: Path) -> None:
    config = chat_config(tmp_path, "http://127.0.0.1:9", token="env:NOT_SET_ANYWHERE_42")
    code, _out, err = await run_chat(config, "")
    assert code == 2
    assert err.strip() == (
        "config error: bots.demo.api_token: environment variable NOT_SET_ANYWHERE_42 is not set"
    )


def test_render_for_terminal() -> None:
    elements = [
        parse_element({"type": "text", "content": "line one\nline two"}),
        parse_element(
            {"type": "payload", "content": {"quickReplies": [{"title": "A", "value": "a"}]}}
        ),
        parse_element(
            {
                "type": "cross_card",
                "title": "T",
                "subtitle": "S",
                "content": "C",
                "image": {
                    "accessibilityText": "alt",
                    "large": {"url": "http://img/l.png"},
                    "small": {"url": "http://img/s.png"},
                },
            }
        ),
        parse_element({"type": "carousel"}),
    ]
    rendered = render_for_terminal(elements)
    assert rendered.lines[:2] == ["bot> line one", "bot> line two"]
    assert "bot> │  image: http://img/l.png (alt)" in rendered.lines
    assert any("cannot show" in line for line in rendered.lines)
    assert rendered.lines[-1].strip() == "[1] A"
    assert [c.value for c in rendered.chips] == ["a"]
