"""Starting and stopping the systems under test, and reading what they cost.

* :class:`Fakes` — the fakes process (:mod:`bench.fakes`) and a client for its control API.
* :class:`Database` — one fresh SQLite file or PostgreSQL database per bridge run, migrated and
  optionally seeded with stored conversations (rows inserted with SQL, as the bridge writes them).
* :class:`Bridge` — ``python -m bridge run --config X`` with a real TOML configuration: a
  Telegram channel in polling mode against the fake Bot API, or an HTTP-mode Slack channel
  against the fake Slack; Parloa is the simulator.
* :class:`Reference` — one of the two reference bots (:mod:`bench.references`).
* :func:`cpu_seconds`, :func:`memory_kib` — from ``/proc/<pid>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.process import child_env, free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
TELEGRAM_CHANNEL = "tg"
SLACK_CHANNEL = "slack"
SEEDED_TEXT = "a message stored before the benchmark"

# The bridge's per-chat send budget in the benchmark. Telegram's own limit is about 1/s per
# chat; the closed-loop single-chat workload would measure only that. 30 is the highest the
# bridge accepts, and still holds the 1-chat rows (bench.report says so beside them).
CHAT_MESSAGES_PER_SECOND = 30


# --- /proc ---------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def postgres_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every process called ``postgres`` on this machine, by
    pid: from ``schedstat``, in nanoseconds, since the clock ticks of ``stat`` (10 ms) are too
    coarse for one store call."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if not stat[stat.find("(") + 1 : stat.rfind(")")].startswith("postgres"):
                continue
            found[int(entry.name)] = int((entry / "schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError, IndexError):
            continue
    return found


def postgres_cpu_since(before: Mapping[int, float]) -> float:
    """PostgreSQL's CPU seconds since the snapshot ``before`` (backends that exited in between
    are not counted: a slight undercount)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in postgres_cpu().items())


def memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS in KiB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


# --- processes -----------------------------------------------------------------------------------


@dataclass
class Process:
    """A subprocess with its output in a log file."""

    name: str
    argv: Sequence[str]
    log: Path
    env: Mapping[str, str] | None = None
    proc: asyncio.subprocess.Process | None = None

    async def start(self, stdout_pipe: bool = False) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if stdout_pipe else log,
                stderr=log,
                env=dict(self.env) if self.env is not None else child_env(),
                cwd=str(self.log.parent),
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def stop(self, within: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``within`` seconds; the exit code."""
        if self.proc is None:
            return None
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(within):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text("utf-8", "replace")[-chars:]
        except OSError:
            return ""


# --- the fakes process ---------------------------------------------------------------------------


class Fakes:
    """``python -m bench.fakes`` and its control API."""

    def __init__(self, workdir: Path) -> None:
        self.process = Process(
            "fakes", [sys.executable, "-m", "bench.fakes"], workdir / "fakes.log"
        )
        self.info: dict[str, Any] = {}
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        await self.process.start(stdout_pipe=True)
        assert self.process.proc is not None and self.process.proc.stdout is not None
        try:
            async with asyncio.timeout(30):
                line = await self.process.proc.stdout.readline()
        except TimeoutError:
            raise RuntimeError("the fakes process did not start:\n" + self.process.tail()) from None
        if not line:
            raise RuntimeError("the fakes process exited:\n" + self.process.tail())
        self.info = json.loads(line)
        self._http = aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=None)
        )

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.process.stop(5)

    @property
    def pid(self) -> int:
        return self.process.pid

    def token(self, system: str) -> str:
        return str(self.info["telegram_tokens"][system])

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._http is not None
        async with self._http.request(method, f"{self.info['control']}{path}", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"fakes {path}: HTTP {resp.status}: {await resp.text()}")
            return await resp.json()

    async def set_latency(self, seconds: float) -> None:
        await self.call("PUT", "/parloa", {"latency": seconds})

    async def reset(self, token: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("POST", "/reset", {"token": token})
        return result

    async def wait_polling(self, token: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self._http is not None
            async with self._http.get(
                f"{self.info['control']}/polling", params={"token": token}
            ) as resp:
                if (await resp.json())["polling"]:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError("the bot under test never started long polling")


# --- databases -----------------------------------------------------------------------------------


@dataclass
class Database:
    """A fresh database for one bridge run: ``sqlite`` (a file in ``workdir``) or ``postgres``
    (a new database on the server of ``postgres_url``, dropped afterwards)."""

    backend: str
    workdir: Path
    postgres_url: str
    url: str = ""
    _name: str = ""

    async def create(self) -> str:
        from sqlalchemy import text
        from sqlalchemy.ext.asyncio import create_async_engine

        self._name = f"pb_bench_{uuid.uuid4().hex[:10]}"
        if self.backend == "sqlite":
            self.url = f"sqlite+aiosqlite:///{self.workdir / (self._name + '.db')}"
            return self.url
        from sqlalchemy.engine import make_url

        admin = make_url(self.postgres_url)
        engine = create_async_engine(admin, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'CREATE DATABASE "{self._name}"'))
        finally:
            await engine.dispose()
        self.url = admin.set(database=self._name).render_as_string(hide_password=False)
        return self.url

    async def drop(self) -> None:
        if not self._name:
            return
        if self.backend == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    (self.workdir / f"{self._name}.db{suffix}").unlink()
            return
        from sqlalchemy import text
        from sqlalchemy.engine import make_url
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(make_url(self.postgres_url), isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'))
        finally:
            await engine.dispose()

    async def seed(self, conversations: int, first_chat: int, batch: int = 5000) -> float:
        """Migrate, then store ``conversations`` Telegram conversations (private chats
        ``first_chat...``) as the bridge leaves them after one exchange: the conversation
        (active session), one processed inbox row, one sent outbox row. Returns seconds."""
        from sqlalchemy import insert

        from bridge.store.database import create_engine, migrate
        from bridge.store.schema import conversations as conv_t
        from bridge.store.schema import inbox as inbox_t
        from bridge.store.schema import outbox as outbox_t

        started = time.monotonic()
        engine = create_engine(self.url)
        try:
            await migrate(engine)
            now = time.time()
            for start in range(0, conversations, batch):
                chats = range(first_chat + start, first_chat + min(conversations, start + batch))
                address = {
                    chat: {
                        "chat_id": chat,
                        "chat_type": "private",
                        "thread_id": None,
                        "reply_to_message_id": None,
                    }
                    for chat in chats
                }
                async with engine.begin() as conn:
                    rows = await conn.execute(
                        insert(conv_t).returning(conv_t.c.id, conv_t.c.conversation_key),
                        [
                            {
                                "channel": TELEGRAM_CHANNEL,
                                "conversation_key": str(chat),
                                "requester_id": f"{TELEGRAM_CHANNEL}:{chat}",
                                "state": "active",
                                "session_id": str(uuid.uuid4()),
                                "parloa_conversation_id": str(uuid.uuid4()),
                                "address": address[chat],
                                "created_at": now,
                                "updated_at": now,
                                "last_activity_at": now,
                            }
                            for chat in chats
                        ],
                    )
                    ids = {int(key): int(cid) for cid, key in rows}
                    inbox_rows = await conn.execute(
                        insert(inbox_t).returning(inbox_t.c.id, inbox_t.c.conversation_id),
                        [
                            {
                                "channel": TELEGRAM_CHANNEL,
                                "event_id": f"seed:{chat}",
                                "conversation_id": ids[chat],
                                "kind": "text",
                                "text": SEEDED_TEXT,
                                "address": address[chat],
                                "context": {
                                    "platform": "telegram",
                                    "chatType": "private",
                                    "userName": "Seeded User",
                                },
                                "status": "done",
                                "attempts": 1,
                                "next_attempt_at": now,
                                "created_at": now,
                                "finished_at": now,
                            }
                            for chat in chats
                        ],
                    )
                    by_conv = {int(c): int(i) for i, c in inbox_rows}
                    await conn.execute(
                        insert(outbox_t),
                        [
                            {
                                "conversation_id": ids[chat],
                                "inbox_id": by_conv[ids[chat]],
                                "channel": TELEGRAM_CHANNEL,
                                "address": address[chat],
                                "elements": [
                                    {
                                        "type": "text",
                                        "content": f"You said: {SEEDED_TEXT}",
                                    }
                                ],
                                "parts_done": 1,
                                "status": "sent",
                                "attempts": 0,
                                "next_attempt_at": now,
                                "platform_message_id": "1",
                                "created_at": now,
                                "finished_at": now,
                            }
                            for chat in chats
                        ],
                    )
        finally:
            await engine.dispose()
        return time.monotonic() - started


# --- the bridge ----------------------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no TOML for {value!r}")


def _section(header: str, values: Mapping[str, Any]) -> str:
    return "\n".join([header, *(f"{k} = {_toml(v)}" for k, v in values.items())]) + "\n"


def bridge_config(
    info: Mapping[str, Any],
    *,
    database_url: str,
    port: int,
    channel: str = "telegram",
    database: Mapping[str, Any] | None = None,
) -> str:
    """A complete configuration. Everything not named here has its default
    (config/bridge.example.toml)."""
    parts = [
        _section("[database]", {"url": database_url, **(database or {})}),
        _section("[http]", {"host": "127.0.0.1", "port": port}),
        _section("[logging]", {"level": "INFO"}),
        _section(
            "[bots.bench]",
            {
                "release_id": info["release_id"],
                "api_token": info["parloa_token"],
                "base_url": info["parloa_url"],
            },
        ),
    ]
    if channel == "telegram":
        parts.append(
            _section(
                "[[channels]]",
                {
                    "name": TELEGRAM_CHANNEL,
                    "type": "telegram",
                    "bot": "bench",
                    "token": info["telegram_tokens"]["bridge"],
                    "mode": "polling",
                    "api_base_url": info["telegram_api_root"],
                    "rate_limit_per_second": 1000,
                    "chat_messages_per_second": CHAT_MESSAGES_PER_SECOND,
                    "poll_timeout_seconds": 2,
                },
            )
        )
    else:
        parts.append(
            _section(
                "[[channels]]",
                {
                    "name": SLACK_CHANNEL,
                    "type": "slack",
                    "bot": "bench",
                    "mode": "http",
                    "bot_token": info["slack_bot_token"],
                    "signing_secret": info["slack_signing_secret"],
                    "api_base_url": info["slack_api_url"],
                },
            )
        )
    return "\n".join(parts)


@dataclass
class Bridge:
    """One bridge process with its own fresh database."""

    name: str
    backend: str
    fakes: Fakes
    workdir: Path
    postgres_url: str
    channel: str = "telegram"
    seed: int = 0
    seed_first_chat: int = 0
    port: int = 0
    database: Database | None = None
    process: Process | None = None
    seed_seconds: float = 0.0
    starts: int = field(default=0)
    database_options: dict[str, Any] = field(default_factory=dict)  # extra [database] keys

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def token(self) -> str:
        return self.fakes.token("bridge")

    async def start(self) -> None:
        self.starts += 1
        self.database = Database(self.backend, self.workdir, self.postgres_url)
        await self.database.create()
        if self.seed:
            self.seed_seconds = await self.database.seed(self.seed, self.seed_first_chat)
        self.port = free_port()
        label = f"{self.name}-{self.starts}"
        config = self.workdir / f"{label}.toml"
        config.write_text(
            bridge_config(
                self.fakes.info,
                database_url=self.database.url,
                port=self.port,
                channel=self.channel,
                database=self.database_options,
            ),
            encoding="utf-8",
        )
        self.process = Process(
            label,
            [sys.executable, "-m", "bridge", "run", "--config", str(config)],
            self.workdir / f"{label}.log",
        )
        if self.channel == "telegram":
            await self.fakes.reset(self.token)
        await self.process.start()
        await self._wait_ready()
        if self.channel == "telegram":
            await self.fakes.wait_polling(self.token)

    async def _wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession(
            trust_env=False, timeout=aiohttp.ClientTimeout(total=2)
        ) as http:
            while True:
                assert self.process is not None
                if not self.process.running:
                    raise RuntimeError(f"{self.name} exited:\n{self.process.tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} not ready:\n{self.process.tail()}")
                await asyncio.sleep(0.05)

    async def stop(self, fast: bool = False) -> None:
        """SIGTERM (the bridge drains), or SIGKILL when ``fast`` (its database is dropped
        anyway)."""
        if self.process is not None:
            if fast:
                await self.process.kill()
            else:
                await self.process.stop(20)
        if self.database is not None:
            await self.database.drop()
            self.database = None

    async def restart(self) -> None:
        """A fresh process on a fresh database (nothing left over from a capped run)."""
        await self.stop(fast=True)
        await self.start()


# --- the references ------------------------------------------------------------------------------


@dataclass
class Reference:
    kind: str  # "ptb" or "bare"
    fakes: Fakes
    workdir: Path
    process: Process | None = None
    starts: int = 0

    @property
    def name(self) -> str:
        return self.kind

    @property
    def token(self) -> str:
        return self.fakes.token(self.kind)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.starts += 1
        info = self.fakes.info
        self.process = Process(
            f"{self.kind}-{self.starts}",
            [
                sys.executable,
                "-m",
                "bench.references",
                self.kind,
                "--api-root",
                info["telegram_api_root"],
                "--token",
                self.token,
                "--parloa-url",
                info["parloa_url"],
                "--parloa-token",
                info["parloa_token"],
                "--release",
                info["release_id"],
            ],
            self.workdir / f"{self.kind}-{self.starts}.log",
        )
        await self.fakes.reset(self.token)
        await self.process.start()
        await self.fakes.wait_polling(self.token)

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop(10)

    async def restart(self) -> None:
        if self.process is not None:
            await self.process.kill()
        await self.start()
