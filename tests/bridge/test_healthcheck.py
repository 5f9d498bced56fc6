"""``parloa-bridge healthcheck`` / ``python -m bridge.healthcheck``: the address it probes and
its exit codes against a live listener (the image's own run is in tests/deploy/)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from aiohttp import web

from bridge import cli
from bridge.healthcheck import healthz_url
from tests.support.net import serving


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080/healthz"),
        ("::", "http://127.0.0.1:8080/healthz"),
        ("", "http://127.0.0.1:8080/healthz"),
        ("127.0.0.1", "http://127.0.0.1:8080/healthz"),
        ("::1", "http://[::1]:8080/healthz"),
        ("bridge.internal", "http://bridge.internal:8080/healthz"),
    ],
)
def test_the_address_probed(host: str, url: str) -> None:
    assert healthz_url(host, 8080) == url


def config_on(tmp_path: Path, port: int) -> str:
    path = tmp_path / "bridge.toml"
    path.write_text(
        f'[database]\nurl = "sqlite+aiosqlite:///{tmp_path}/b.db"\n'
        f'[http]\nhost = "0.0.0.0"\nport = {port}\n'
    )
    return str(path)


def app_answering(status: int) -> web.Application:
    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    return app


@pytest.mark.parametrize(("status", "code"), [(200, 0), (503, 1), (500, 1)])
async def test_exit_code_follows_healthz(tmp_path: Path, status: int, code: int) -> None:
    async with serving(app_answering(status)) as url:
        port = int(url.rsplit(":", 1)[1])
        # a blocking probe, as the container runs it: off the loop that serves the app
        config = config_on(tmp_path, port)
        assert await asyncio.to_thread(cli.main, ["healthcheck", "--config", config]) == code


def test_nothing_listening_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        config = config_on(tmp_path, sock.getsockname()[1])
        assert cli.main(["healthcheck", "--config", config, "--timeout", "2"]) == 1
    assert "unhealthy:" in capsys.readouterr().err


def test_an_unreadable_configuration_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["healthcheck", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "config error" in capsys.readouterr().err
