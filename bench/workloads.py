"""The load drivers. They run inside the fakes process (:mod:`bench.fakes`), next to the fake
Bot API, so that "an update became available" (``push_update``) and "the send call arrived"
(the fake's :class:`~tests.fakes.telegram.Call` ``at``) are read from one clock, and the next
message of a closed loop is pushed the moment the previous answer arrives.

Every pushed message has a unique text; the bots answer ``You said: <text>`` (the simulator's
echo), which is how an answer is matched to its message. The welcome of a first contact (sent
before the echo) is counted but is not "the answer".

Workloads:

* :func:`closed_loop` — throughput. A first-contact round (every chat sends its first message
  at the same instant: ``launch`` + ``message`` = two Parloa round trips, welcome + echo sent),
  then a warm phase in which each chat sends its next message as soon as the previous one was
  answered (one Parloa round trip, one send), for a bounded number of messages and time.
* :func:`open_loop` — latency at a fixed rate on warm chats: message ``i`` is pushed at
  ``t0 + i / rate`` whatever happened before; bridge-added latency is
  ``send call - push - Parloa's own time for that message`` (measured inside the simulator).
* :func:`slack_acks` — signed Events API requests at a fixed rate; the time until the bridge
  answered each HTTP request (Slack's acknowledgement).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.slack import dm_message, event_callback, post_event
from tests.fakes.telegram import FakeTelegram

ECHO_PREFIX = "You said: "

clock = time.monotonic  # the fakes' clock (FakeTelegram's default clock is time.monotonic too)


@dataclass(slots=True)
class Msg:
    text: str
    chat: int
    future: asyncio.Future[float]
    pushed: float = math.nan
    answered: float = math.nan

    @property
    def latency(self) -> float:
        return self.answered - self.pushed


@dataclass
class AnswerBoard:
    """Messages waiting for their answer, by text. Fed by the fake Bot API's send hook."""

    waiting: dict[str, Msg] = field(default_factory=dict)
    welcomes: int = 0
    other_sends: int = 0
    duplicate_answers: int = 0

    def expect(self, text: str, chat: int) -> Msg:
        msg = Msg(text, chat, asyncio.get_running_loop().create_future())
        self.waiting[text] = msg
        return msg

    def on_sent(self, chat_id: int, text: str | None, at: float) -> None:
        if text is None:
            self.other_sends += 1
            return
        if text.startswith(ECHO_PREFIX):
            msg = self.waiting.pop(text[len(ECHO_PREFIX) :], None)
            if msg is None:
                self.duplicate_answers += 1
                return
            msg.answered = at
            if not msg.future.done():
                msg.future.set_result(at)
        elif "demo bot" in text:
            self.welcomes += 1
        else:
            self.other_sends += 1

    def forget(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            self.waiting.pop(msg.text, None)
            if not msg.future.done():
                msg.future.cancel()


def _push(
    tg: FakeTelegram,
    board: AnswerBoard,
    token: str,
    chat: int,
    text: str,
    update: dict[str, Any] | None = None,
) -> Msg:
    update = update if update is not None else tg.private_text(chat, text)
    msg = board.expect(text, chat)
    tg.push_update(update, token)
    msg.pushed = clock()
    return msg


async def _wait(msgs: Sequence[Msg], until: float) -> None:
    pending = [m.future for m in msgs if not m.future.done()]
    if pending:
        await asyncio.wait(pending, timeout=max(0.0, until - clock()))


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    ordered = sorted(v for v in values if not math.isnan(v))

    def pick(q: float) -> float | None:
        if not ordered:
            return None
        # nearest rank
        k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
        return ordered[k]

    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "max": pick(1.0)}


def _round(msgs: Sequence[Msg], started: float, deadline: float) -> dict[str, Any]:
    answered = [m for m in msgs if not math.isnan(m.answered)]
    complete = len(answered) == len(msgs)
    last = max((m.answered for m in answered), default=started)
    elapsed = (last - started) if complete else deadline
    return {
        "messages": len(msgs),
        "answered": len(answered),
        "complete": complete,
        "elapsed": elapsed,
        "throughput": len(answered) / elapsed if elapsed > 0 else None,
        "push_spread": (max(m.pushed for m in msgs) - started) if msgs else 0.0,
        "latency": _percentiles([m.latency for m in answered]),
    }


async def first_contact(
    tg: FakeTelegram,
    board: AnswerBoard,
    token: str,
    chats: Sequence[int],
    tag: str,
    deadline: float,
) -> dict[str, Any]:
    """Every chat sends its first message at once; wait until all are answered (or the
    deadline). Updates are built first so that pushing is quick."""
    texts = [(chat, f"{tag}-{chat}-0") for chat in chats]
    updates = [tg.private_text(chat, text) for chat, text in texts]
    started = clock()
    msgs = [
        _push(tg, board, token, chat, text, update)
        for (chat, text), update in zip(texts, updates, strict=True)
    ]
    await _wait(msgs, started + deadline)
    result = _round(msgs, started, deadline)
    result["started"] = started  # the fakes' clock: bench.profile timeline lines calls up
    board.forget(msgs)
    return result


async def closed_loop(
    tg: FakeTelegram,
    board: AnswerBoard,
    token: str,
    chats: Sequence[int],
    tag: str,
    messages_per_chat: int,
    deadline: float,
) -> dict[str, Any]:
    """Warm phase: each chat sends ``messages_per_chat`` messages, each as soon as the previous
    one was answered; all chats start at the same instant. Bounded by ``deadline`` seconds."""
    started = clock()
    until = started + deadline
    msgs: list[Msg] = []
    firsts: list[Msg] = []

    async def one_chat(chat: int) -> None:
        for k in range(1, messages_per_chat + 1):
            msg = _push(tg, board, token, chat, f"{tag}-{chat}-{k}")
            msgs.append(msg)
            if k == 1:
                firsts.append(msg)
            await _wait([msg], until)
            if not msg.future.done():
                return

    await asyncio.gather(*(one_chat(chat) for chat in chats))
    planned = len(chats) * messages_per_chat
    answered = [m for m in msgs if not math.isnan(m.answered)]
    complete = len(answered) == planned
    last = max((m.answered for m in answered), default=started)
    elapsed = (last - started) if complete else deadline
    burst = _round(firsts, started, deadline)
    board.forget(msgs)
    return {
        "messages": planned,
        "pushed": len(msgs),
        "answered": len(answered),
        "complete": complete,
        "elapsed": elapsed,
        "throughput": len(answered) / elapsed if elapsed > 0 else None,
        "latency": _percentiles([m.latency for m in answered]),
        # the first warm message of every chat, all pushed at once
        "burst_elapsed": burst["elapsed"] if burst["complete"] else None,
        "burst_latency": burst["latency"],
        "started": started,  # the fakes' clock: bench.profile timeline lines calls up
    }


async def open_loop(
    tg: FakeTelegram,
    board: AnswerBoard,
    parloa_times: dict[str, float],
    token: str,
    chats: Sequence[int],
    tag: str,
    rate: float,
    duration: float,
    drain: float,
) -> dict[str, Any]:
    """Message ``i`` goes to ``chats[i % len(chats)]`` at ``t0 + i / rate``."""
    count = max(1, round(rate * duration))
    msgs: list[Msg] = []
    t0 = clock() + 0.05
    lateness: list[float] = []
    for i in range(count):
        target = t0 + i / rate
        delay = target - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        msgs.append(_push(tg, board, token, chats[i % len(chats)], f"{tag}-{i}"))
        lateness.append(msgs[-1].pushed - target)
    last_push = clock()
    await _wait(msgs, last_push + drain)
    answered = [m for m in msgs if not math.isnan(m.answered)]
    added: list[float] = []
    totals: list[float] = []
    parloa: list[float] = []
    missing_parloa = 0
    for m in answered:
        spent = parloa_times.pop(m.text, None)
        totals.append(m.latency)
        if spent is None:
            missing_parloa += 1
            continue
        parloa.append(spent)
        added.append(m.latency - spent)
    board.forget(msgs)
    achieved = (count - 1) / (last_push - msgs[0].pushed) if count > 1 else None
    return {
        "messages": count,
        "answered": len(answered),
        "rate_target": rate,
        "rate_achieved": achieved,
        "push_lateness": _percentiles(lateness),
        "added": _percentiles(added),
        "total": _percentiles(totals),
        "parloa": _percentiles(parloa),
        "missing_parloa_times": missing_parloa,
    }


async def slack_acks(
    url: str,
    signing_secret: str,
    team: str,
    users: Sequence[str],
    tag: str,
    rate: float,
    duration: float,
    on_posted: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """DM events from ``users`` in turn, signed like Slack's, at ``rate`` per second."""
    count = max(1, round(rate * duration))
    t0 = clock() + 0.05
    tasks: list[asyncio.Task[Any]] = []
    for i in range(count):
        delay = t0 + i / rate - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        user = users[i % len(users)]
        body = event_callback(team, dm_message(user, f"{tag}-{i}", channel="D" + user[1:]))
        tasks.append(asyncio.create_task(post_event(url, body, signing_secret, within=10.0)))
    results = await asyncio.gather(*tasks)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
    return {
        "events": count,
        "statuses": statuses,
        "ack": _percentiles([r.elapsed for r in results if r.status == 200]),
        "ack_all": _percentiles([r.elapsed for r in results]),
        "posted_replies_so_far": on_posted() if on_posted else None,
    }
