"""The Telegram channel in polling mode, as real processes: ``python -m bridge run`` with a
``type = "telegram"`` channel against the fake Bot API, and the simulator as Parloa.

Polling intake is durable: one replica holds the ``poller`` lease and calls getUpdates; an
update is committed to the inbox before its offset is passed on (which confirms it to
Telegram, and the fake drops it only then). These tests crash the poller at random moments
(SIGKILL), run two replicas on one PostgreSQL database (one polls, the other takes over when
it dies) and stop the poller gracefully (SIGTERM releases the lease).

Waiting is on the fake's recorded calls and messages, and on ``/readyz`` (the only view into
another process's role), bounded by deadlines; the only sleeps are the random kill points and
the pauses between the user's messages."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bridge.devtools.simulator import Faults, RunningSimulator, SimulatorState, start_simulator
from tests.fakes import telegram as fake_telegram
from tests.fakes.telegram import Call, FakeTelegram
from tests.support.database import skip_unless_replicas_can_share
from tests.support.process import BridgeProcess, run_seed
from tests.support.process import World as ProcessWorld
from tests.support.waiting import poll_until

TOKEN = "123456:ABC-test-token-0123456789abcdef"
CHANNEL = "tg"
ECHO_PREFIX = "You said: "
POLL_TIMEOUT = 1
LEADER_LEASE = 3
# What the adapter makes of these options: a lease outlives one long poll plus its request
# (adapters/telegram/polling.py, Poller).
LEASE_TTL = max(LEADER_LEASE, POLL_TIMEOUT + 5)
# A standby asks for the lease this often (the same place).
STANDBY_INTERVAL = min(5.0, LEASE_TTL / 4)


# --- configuration ------------------------------------------------------------------------------


def telegram_channel(api_root: str) -> dict[str, Any]:
    """The options of a polling Telegram channel named ``tg`` against the Bot API at
    ``api_root``."""
    return {
        "name": CHANNEL,
        "type": "telegram",
        "token": TOKEN,
        "api_base_url": api_root,
        "poll_timeout_seconds": POLL_TIMEOUT,
        "leader_lease_seconds": LEADER_LEASE,
        "request_timeout_seconds": 5,
        "rate_limit_per_second": 1000,
    }


# --- fixtures -----------------------------------------------------------------------------------


class World(ProcessWorld):
    """The simulator, the fake Bot API and every bridge process a test started."""

    def __init__(self, tmp_path: Path, simulator: RunningSimulator, tg: FakeTelegram) -> None:
        super().__init__(tmp_path, simulator, telegram_channel(tg.api_root))
        self.tg = tg

    # -- what the users saw --

    def echoes(self, chat_id: int) -> list[str]:
        """Every echoed message of one chat, in send order (duplicates included)."""
        return [
            m.text[len(ECHO_PREFIX) :]
            for m in self.tg.sent_messages(chat_id)
            if m.text is not None and m.text.startswith(ECHO_PREFIX)
        ]

    def first_echoes(self, chat_id: int) -> list[str]:
        return list(dict.fromkeys(self.echoes(chat_id)))

    def answered(self, expected: Mapping[int, Sequence[str]]) -> bool:
        return all(set(self.echoes(c)) >= set(msgs) for c, msgs in expected.items())

    def duplicates(self, chats: Sequence[int]) -> int:
        """Echo texts delivered more than once (each extra copy counts)."""
        return sum(n - 1 for c in chats for n in Counter(self.echoes(c)).values() if n > 1)

    async def wait_answered(self, expected: Mapping[int, Sequence[str]], within: float) -> None:
        try:
            await self.tg.wait_for(lambda: self.answered(expected), within=within)
        except AssertionError:
            missing = {
                c: sorted(set(msgs) - set(self.echoes(c)))
                for c, msgs in expected.items()
                if set(msgs) - set(self.echoes(c))
            }
            raise AssertionError(
                f"not answered within {within}s: {missing}; pending updates at the fake: "
                f"{len(self.tg.pending_updates())}\n{self.logs()}"
            ) from None

    # -- the Bot API's view of polling --

    def get_updates(self) -> list[Call]:
        return self.tg.calls_to("getUpdates")

    def conflicts(self, after: float = float("-inf")) -> list[Call]:
        """getUpdates calls (arrived after ``after``) the fake answered 409: two pollers. A
        killed process's long poll, taken over by the next poll, is not one: nobody waits
        for its answer."""
        return [
            c for c in self.get_updates() if c.status == 409 and c.at > after and not c.abandoned
        ]

    def handed_out(self) -> Counter[int]:
        """How often each update id was returned by getUpdates."""
        ids: Counter[int] = Counter()
        for call in self.get_updates():
            result = (call.response or {}).get("result") if call.status == 200 else None
            for update in result or []:
                ids[int(update["update_id"])] += 1
        return ids


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with (
        await start_simulator(state=SimulatorState(seed=1)) as simulator,
        FakeTelegram(tokens=[TOKEN]) as tg,
    ):
        w = World(tmp_path, simulator, tg)
        try:
            yield w
        finally:
            await w.cleanup()


# --- /readyz ------------------------------------------------------------------------------------


async def readyz(bridge: BridgeProcess) -> dict[str, Any] | None:
    """The /readyz body (200 or 503), or None when the process does not answer."""
    try:
        async with (
            aiohttp.ClientSession(
                trust_env=False, timeout=aiohttp.ClientTimeout(total=2)
            ) as session,
            session.get(f"{bridge.url}/readyz") as resp,
        ):
            body: dict[str, Any] = json.loads(await resp.text())
            return body
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def role(bridge: BridgeProcess) -> str | None:
    body = await readyz(bridge)
    if body is None:
        return None
    return str(body.get("channels", {}).get(CHANNEL, {}).get("role"))


async def wait_role(bridge: BridgeProcess, wanted: str, within: float, world: World) -> float:
    """Poll /readyz until the channel's role is ``wanted`` (another process's state: polling is
    the only way); returns the monotonic time it was first seen."""
    deadline = time.monotonic() + within
    seen = None
    while True:
        seen = await role(bridge)
        if seen == wanted:
            return time.monotonic()
        if bridge.proc is not None and bridge.proc.returncode is not None:
            raise AssertionError(
                f"{bridge.name} exited while waiting for {wanted}:\n{world.logs()}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{bridge.name} not {wanted} within {within}s (role {seen!r})\n{world.logs()}"
            )
        await asyncio.sleep(0.05)


async def wait_one_leader(
    bridges: Sequence[BridgeProcess], within: float, world: World
) -> tuple[BridgeProcess, BridgeProcess]:
    """Until exactly one replica is leader and the other standby: (leader, standby)."""
    roles: list[str | None] = []

    async def one_leader() -> bool:
        roles[:] = [await role(b) for b in bridges]
        return sorted(roles, key=str) == ["leader", "standby"]

    await poll_until(
        one_leader,
        within,
        every=0.05,
        failure=lambda: f"roles {roles} after {within}s\n{world.logs()}",
    )
    return bridges[roles.index("leader")], bridges[roles.index("standby")]


async def wait_logged(bridge: BridgeProcess, text_: str, within: float) -> None:
    """Until ``text_`` appears in the process's log (another process: its log file is the
    only view of what it did)."""
    await poll_until(
        lambda: text_ in bridge.stderr(tail=10**6),
        within,
        every=0.05,
        failure=lambda: f"{bridge.name} did not log {text_!r} within {within}s",
    )


# --- the confirm audit ---------------------------------------------------------------------------


class ConfirmAudit:
    """Checks the intake's promise at the fake: when a getUpdates arrives, every update its
    offset confirms (the fake drops them now) must already be committed to the inbox.

    Installed as a wrapper around the fake's getUpdates handler; it reads the inbox through its
    own engine on the bridge's database before the fake drops anything."""

    def __init__(self, database_url: str) -> None:
        self.engine: AsyncEngine = create_async_engine(database_url)
        self.checked = 0  # confirmed updates verified in the inbox
        self.violations: list[str] = []
        self._in_inbox: set[int] = set()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = fake_telegram._HANDLERS["getupdates"]

        async def audited(fake: FakeTelegram, bot: Any, call: Call) -> Any:
            await self._check(bot, call)
            return await original(fake, bot, call)

        monkeypatch.setitem(fake_telegram._HANDLERS, "getupdates", audited)

    async def _check(self, bot: Any, call: Call) -> None:
        offset = call.params.get("offset")
        if not isinstance(offset, int) or offset <= 0:
            return
        confirmed = [
            int(u["update_id"])
            for u in bot.updates
            if int(u["update_id"]) < offset and int(u["update_id"]) not in self._in_inbox
        ]
        if not confirmed:
            return
        wanted = {f"tg:{i}": i for i in confirmed}
        try:
            async with self.engine.connect() as conn:
                rows = await conn.execute(
                    text("SELECT event_id FROM inbox WHERE channel = :channel"),
                    {"channel": CHANNEL},
                )
                stored = {row[0] for row in rows}
        except Exception as exc:  # the audit must not break the fake; a failure is reported
            self.violations.append(f"offset {offset}: inbox not readable: {exc!r}")
            return
        for event_id, update_id in wanted.items():
            if event_id in stored:
                self._in_inbox.add(update_id)
                self.checked += 1
            else:
                self.violations.append(
                    f"getUpdates offset={offset} confirmed update {update_id} "
                    "before it was in the inbox"
                )

    async def close(self) -> None:
        await self.engine.dispose()


# --- 1. SIGKILL during polling intake -------------------------------------------------------------


@pytest.mark.slow
async def test_sigkill_during_polling_intake(
    world: World, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = run_seed()
    rng = random.Random(seed)
    kills = 3
    chats = [1001 + i for i in range(8)]
    messages = [f"m{k}" for k in range(8)]
    expected = {c: list(messages) for c in chats}
    world.simulator.state.faults = Faults(latency=0.05, latency_max=0.1)
    audit = ConfirmAudit(database_url)
    audit.install(monkeypatch)
    tg = world.tg
    bridge = world.bridge(database_url)
    started = time.monotonic()
    try:
        await bridge.start_ready()
        await wait_role(bridge, "leader", 10, world)

        # The users' messages: per chat in order, chats interleaved at random.
        order = [c for c in chats for _ in messages]
        rng.shuffle(order)
        pushed: dict[int, tuple[int, str]] = {}  # update_id -> (chat, text)
        pauses = random.Random(seed + 1)

        async def users() -> None:
            next_index = dict.fromkeys(chats, 0)
            for chat in order:
                text_ = messages[next_index[chat]]
                next_index[chat] += 1
                update_id = tg.push_update(tg.private_text(chat, text_))
                pushed[update_id] = (chat, text_)
                await asyncio.sleep(pauses.uniform(0.05, 0.5))  # the user's typing pause

        kill_times: list[float] = []
        leader_after: list[float] = []  # restart → this process polls (waits for the old lease)
        in_window: list[int] = []  # at each kill: updates read from the fake, not yet confirmed

        async def killer() -> None:
            since = 0.0
            for _ in range(kills):
                # A random moment of polling intake: shortly after this process was handed a
                # batch (its first one is the backlog of the downtime), while it commits and
                # confirms it, or idles in the next long poll. The point of the test.
                await tg.wait_for_call(
                    "getUpdates",
                    lambda c, since=since: c.at > since and bool((c.response or {}).get("result")),
                    within=15,
                )
                await asyncio.sleep(rng.uniform(0.0, 0.3))
                read = world.handed_out()
                in_window.append(sum(1 for u in tg.pending_updates() if u["update_id"] in read))
                await bridge.kill()
                kill_times.append(since := time.monotonic())
                await bridge.start_ready()
                became = await wait_role(bridge, "leader", LEASE_TTL + STANDBY_INTERVAL + 5, world)
                leader_after.append(became - since)

        pushing = asyncio.create_task(users(), name="users")
        killing = asyncio.create_task(killer(), name="killer")
        try:
            await asyncio.gather(pushing, killing)
        finally:
            for task in (pushing, killing):
                task.cancel()
            await asyncio.gather(pushing, killing, return_exceptions=True)
        await world.wait_answered(expected, within=20)
        # The last batch is confirmed by the next long poll; then the fake holds nothing.
        await tg.wait_for(lambda: not tg.pending_updates(), within=5)
        # Quiesce: a graceful stop finishes what is in flight, so every duplicate is counted.
        assert await bridge.terminate(15) == 0, bridge.stderr()
    finally:
        await audit.close()
    took = time.monotonic() - started

    dups = world.duplicates(chats)
    handed = world.handed_out()
    reread = sum(n - 1 for n in handed.values() if n > 1)
    welcomes = Counter(
        m.chat_id
        for m in tg.sent_messages()
        if m.text is not None and not m.text.startswith(ECHO_PREFIX)
    )
    report = (
        f"seed={seed} kills={kills} duplicate echoes={dups} (bound {kills * len(chats)}), "
        f"updates returned again (after a crash, or first to a killed poll)={reread}, "
        f"confirmations audited="
        f"{audit.checked}, getUpdates calls={len(world.get_updates())}, "
        f"read but unconfirmed at each kill={in_window}, leader again after "
        f"{[round(t, 2) for t in leader_after]}s, non-echo messages per chat="
        f"{sorted(Counter(welcomes.values()).items())}, took {took:.1f}s"
    )
    print(report)
    assert not audit.violations, f"{audit.violations}; {report}"
    assert set(handed) == set(pushed), f"updates never handed out: {set(pushed) - set(handed)}"
    for c in chats:
        assert set(world.echoes(c)) == set(messages), f"{c}: {world.echoes(c)}; {report}"
        assert world.first_echoes(c) == messages, (
            f"{c}: first echoes out of order: {world.first_echoes(c)}; {report}"
        )
    assert dups <= kills * len(chats), report
    # One poller at a time: a restarted process took the dead one's lease, never a live one's.
    assert not world.conflicts(), [(c.at, c.description) for c in world.conflicts()]


# --- 2. two replicas, one poller, fail-over ------------------------------------------------------


@pytest.mark.slow
async def test_two_replicas_poll_one_bot_and_fail_over(
    world: World, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    skip_unless_replicas_can_share(database_url)
    chats = [2001 + i for i in range(5)]
    world.simulator.state.faults = Faults(latency=0.02, latency_max=0.05)
    audit = ConfirmAudit(database_url)
    audit.install(monkeypatch)
    tg = world.tg
    a = world.bridge(database_url, name="bridge-a")
    b = world.bridge(database_url, name="bridge-b")
    try:
        # Both start at once: migrations and the first lease race on the same database.
        await asyncio.gather(a.start_ready(), b.start_ready())
        leader, standby = await wait_one_leader([a, b], within=5, world=world)
        await tg.wait_for(tg.is_polling, within=5)
        # Several lease renewals later, still one leader (no flapping, no second poller).
        renewals_seen = time.monotonic() + 2 * POLL_TIMEOUT + STANDBY_INTERVAL
        while time.monotonic() < renewals_seen:
            assert [await role(leader), await role(standby)] == ["leader", "standby"]
            await asyncio.sleep(0.2)

        before = {c: ["m0", "m1", "m2"] for c in chats}
        for k in range(3):
            for c in chats:
                tg.push_update(tg.private_text(c, f"m{k}"))
        await world.wait_answered(before, within=15)

        # Pushed just before the kill: maybe read, maybe committed, maybe neither.
        for c in chats:
            tg.push_update(tg.private_text(c, "m3"))
        await leader.kill()
        killed_at = time.monotonic()
        for k in (4, 5):
            for c in chats:
                tg.push_update(tg.private_text(c, f"m{k}"))
        took_over = await wait_role(standby, "leader", LEASE_TTL + STANDBY_INTERVAL + 3, world)
        takeover = took_over - killed_at
        first_poll = await tg.wait_for_call("getUpdates", lambda c: c.at > killed_at, within=5)
        all_messages = {c: [f"m{k}" for k in range(6)] for c in chats}
        await world.wait_answered(all_messages, within=15)
        assert await standby.terminate(15) == 0, standby.stderr()
    finally:
        await audit.close()

    dups = world.duplicates(chats)
    report = (
        f"takeover after SIGKILL {takeover:.2f}s (/readyz), first getUpdates of the new leader "
        f"{first_poll.at - killed_at:.2f}s after the kill (lease ttl {LEASE_TTL}s, "
        f"leader_lease_seconds {LEADER_LEASE}), duplicate echoes={dups}, "
        f"confirmations audited={audit.checked}, getUpdates calls={len(world.get_updates())}"
    )
    print(report)
    assert not audit.violations, f"{audit.violations}; {report}"
    assert not world.conflicts(), [(c.at, c.description) for c in world.conflicts()]
    # The dead leader's lock ended with its connection (bridge/store/liveness.py): the standby
    # took over at its next turn, not when the lease ran out.
    assert takeover <= STANDBY_INTERVAL + 1.5 < LEASE_TTL - POLL_TIMEOUT, report
    for c in chats:
        assert world.first_echoes(c) == all_messages[c], f"{c}: {world.echoes(c)}; {report}"
    assert dups <= len(chats), report


# --- 2b. the only replica, SIGKILLed and restarted, with the default settings ----------------


@pytest.mark.slow
async def test_the_only_replica_killed_and_restarted_answers_at_once(
    world: World, database_url: str
) -> None:
    """Liveness from the database (bridge/store/liveness.py): the dead process's poller lease
    ends with its lock, so the restarted process polls at once instead of waiting the lease
    out; the dead process's pending long poll does not hold the new one up (Telegram, and
    the fake, let the newer getUpdates take over)."""
    # The default settings: a long poll of 30 s, a lease of 35 s.
    world.channel = {
        k: v
        for k, v in world.channel.items()
        if k not in ("poll_timeout_seconds", "leader_lease_seconds")
    }
    tg = world.tg
    bridge = world.bridge(database_url)
    await bridge.start_ready()
    await wait_role(bridge, "leader", 10, world)
    tg.push_update(tg.private_text(4001, "m0"))
    await world.wait_answered({4001: ["m0"]}, within=15)
    await tg.wait_for(tg.is_polling, within=5)

    await bridge.kill()
    killed = time.monotonic()
    await bridge.start_ready()
    restarted = time.monotonic()
    tg.push_update(tg.private_text(4001, "m1"))
    await world.wait_answered({4001: ["m0", "m1"]}, within=40)
    answered = time.monotonic()
    report = (
        f"restarted {restarted - killed:.2f}s after the SIGKILL; the next message answered "
        f"{answered - restarted:.2f}s after the restart"
    )
    print(report)
    assert answered - restarted <= 3.0, report
    assert await bridge.terminate(15) == 0, bridge.stderr()
    # The kill may fall between m0's echo and the commit that records it (the crash window):
    # then m0 is echoed once more.
    assert world.first_echoes(4001) == ["m0", "m1"], report
    assert world.duplicates([4001]) <= 1, report
    assert not world.conflicts(), [(c.at, c.description) for c in world.conflicts()]


# --- 3. SIGTERM releases the lease ---------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_releases_the_poller_lease(world: World, database_url: str) -> None:
    skip_unless_replicas_can_share(database_url)
    chats = [3001 + i for i in range(4)]
    world.simulator.state.faults = Faults(latency=0.02, latency_max=0.05)
    tg = world.tg
    a = world.bridge(database_url, name="bridge-a")
    b = world.bridge(database_url, name="bridge-b")
    await asyncio.gather(a.start_ready(), b.start_ready())
    leader, standby = await wait_one_leader([a, b], within=5, world=world)
    await tg.wait_for(tg.is_polling, within=5)

    for c in chats:
        tg.push_update(tg.private_text(c, "m0"))
    await world.wait_answered({c: ["m0"] for c in chats}, within=15)
    # The leader renews its lease before every long poll: let it renew once more, so the
    # lease has (almost) its full ttl left when the SIGTERM arrives.
    polls = len(world.get_updates())
    await tg.wait_for(lambda: len(world.get_updates()) > polls, within=POLL_TIMEOUT + 5)

    # terminate() sends SIGTERM at once; the standby is watched while the leader drains.
    stopping = asyncio.create_task(leader.terminate(15), name="sigterm")
    signalled = time.monotonic()
    try:
        took_over = await wait_role(standby, "leader", LEASE_TTL + STANDBY_INTERVAL + 3, world)
    finally:
        code = await stopping
    exited = time.monotonic()
    takeover = took_over - signalled
    for c in chats:
        tg.push_update(tg.private_text(c, "m1"))
    await world.wait_answered({c: ["m0", "m1"] for c in chats}, within=15)
    assert await standby.terminate(15) == 0, standby.stderr()

    report = (
        f"takeover after SIGTERM {takeover:.2f}s (lease ttl {LEASE_TTL}s, a standby asks every "
        f"{STANDBY_INTERVAL}s), leader exited {code} after {exited - signalled:.2f}s, "
        f"duplicate echoes={world.duplicates(chats)}"
    )
    print(report)
    assert code == 0, leader.stderr()
    assert "Traceback" not in leader.stderr(), leader.stderr()
    # Released, not expired: the lease had about LEASE_TTL - (one poll) left.
    assert takeover < LEASE_TTL - POLL_TIMEOUT - 1, report
    # After the old leader was gone, only one process polled.
    assert not world.conflicts(after=exited), world.conflicts(after=exited)
    for c in chats:
        assert world.echoes(c) == ["m0", "m1"], f"{c}: {world.echoes(c)}; {report}"


# --- 4. a database error when the lease is won ---------------------------------------------


@pytest.mark.slow
async def test_offset_read_failure_when_taking_the_lease_does_not_end_polling(
    world: World, database_url: str
) -> None:
    """The new leader reads the stored offset right after winning the lease. A database error
    there (a failover, a dropped connection: here the channel_state table is briefly renamed
    away) must be retried like any other, not end polling for good while /readyz says ready."""
    tg = world.tg
    first = world.bridge(database_url, name="first")
    await first.start_ready()
    await wait_role(first, "leader", 10, world)
    tg.push_update(tg.private_text(4001, "m0"))
    await world.wait_answered({4001: ["m0"]}, within=15)
    assert await first.terminate(15) == 0, first.stderr()  # releases the lease

    admin = create_async_engine(database_url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text("ALTER TABLE channel_state RENAME TO channel_state_away"))
        deletes = len(tg.calls_to("deleteWebhook"))
        polls = len(world.get_updates())  # all of them the first process's
        second = world.bridge(database_url, name="second")
        await second.start_ready()
        # It won the lease (the first one released it) and deleted the webhook, as a new
        # leader does right before it reads the stored offset (which fails now).
        await tg.wait_for(
            lambda: [c for c in tg.calls_to("deleteWebhook")[deletes:] if c.status is not None],
            within=10,
        )
        # The fault happened: the read failed (logged, naming the missing table) and so no
        # getUpdates went out. Without this, the test would pass had the read never failed.
        await wait_logged(second, "polling failed; retrying", within=10)
        assert "channel_state" in second.stderr(tail=10**6), second.stderr()
        assert len(world.get_updates()) == polls, "polled although the offset read failed"
        async with admin.begin() as conn:
            await conn.execute(text("ALTER TABLE channel_state_away RENAME TO channel_state"))
    finally:
        await admin.dispose()

    tg.push_update(tg.private_text(4001, "m1"))
    try:
        await world.wait_answered({4001: ["m0", "m1"]}, within=LEASE_TTL + 10)
    except AssertionError:
        body = await readyz(second)
        raise AssertionError(
            f"polling never resumed after one failed offset read: getUpdates calls since the "
            f"failure {len(world.get_updates()) - polls}, /readyz "
            f"{json.dumps(body and body.get('channels'))}, pending updates "
            f"{len(tg.pending_updates())}"
        ) from None
    assert await second.terminate(15) == 0, second.stderr()
