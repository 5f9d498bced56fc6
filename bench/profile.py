"""Where the bridge's time goes under the throughput workload.

    .venv/bin/python -m bench.profile spy [--backend sqlite] [--chats 100] [--messages 10]
        [--first-contact] [--svg profile.svg]
    .venv/bin/python -m bench.profile store [--backend sqlite] [--messages 300]
    .venv/bin/python -m bench.profile statements [--backend sqlite]
    .venv/bin/python -m bench.profile sqlpath [--calls 500]
    .venv/bin/python -m bench.profile burst [--attempts 4] [--chats 1000] [--spy]
    .venv/bin/python -m bench.profile sends [--messages 300]
    .venv/bin/python -m bench.profile timeline [--backend sqlite] [--chats 1000] [--latency 1]
        [--warm]

``spy``: the bridge process against the fakes (as in :mod:`bench.run`), warm chats, Parloa
latency 0, a closed-loop warm workload; py-spy (``pip install py-spy``) samples it with
``--gil`` (only the thread holding the GIL: where Python CPU goes) and the CPU of each of the
bridge's threads is read from ``/proc``. ``--first-contact``: first messages of new chats
instead (each opens a Parloa conversation). Prints the top functions (inclusive and self) and a
breakdown by cost centre. ``--svg`` also records a flamegraph (a second, identical run).

``store``: the store calls the engine makes for one warm message (accept, claim, commit,
update_outbox, finish, and the dispatcher's due_conversations), timed on their own in this
process: CPU and wall milliseconds per call.

``statements``: the bridge with ``database.echo = true``: SQL statements and transactions per
warm message, counted from its log.

``sqlpath``: one lease-claiming transaction (``BEGIN; UPDATE ... RETURNING; COMMIT``) on SQLite
through SQLAlchemy's asyncio engine (as the store ran it before each call became one
synchronous unit on a thread of its own), through aiosqlite directly, and
through the synchronous sqlite3 module; plus building the statement alone.

``burst``: the 1000-chat first-contact burst (Parloa latency 0) repeated on fresh bridges, each
after a 100-chat warm-up; per attempt the answered count, CPU, the bridge's delivery outcomes
(``/metrics``) and, with ``--spy``, the top self-time functions. Bursts do not always behave
alike: this shows how often, and where the time goes when they go wrong.

``timeline``: the first-contact burst (1000 chats, Parloa 1 s) once, and when the simulator
saw each chat's launch and message calls arrive: how long the bridge takes to get every
launch out, and whether each message call follows its launch at once. ``--warm``: then one
more message from every chat at once (bench.run's warm burst), lined up the same way.

``sends``: one Telegram ``sendMessage`` to the fake Bot API (in another process) made with
python-telegram-bot on httpx (how the bridge first sent), with ``sniffio`` importable (a stub),
on the bridge's aiohttp transport, as the bridge sends now (the same, without building the sent
``Message``), and with a bare aiohttp POST: CPU milliseconds per call.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import signal
import sys
import tempfile
import time
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import DEFAULT_POSTGRES_URL  # noqa: E402
from bench.systems import (  # noqa: E402
    CLK_TCK,
    Bridge,
    Database,
    Fakes,
    cpu_seconds,
    postgres_cpu,
    postgres_cpu_since,
)

# Cost centres: the first pattern found in a stack names the sample's centre. SQLAlchemy runs
# statements inside a greenlet whose stack does not show the caller, so SQL is one centre; the
# share by Store method (where the stack shows it) is printed separately.
CENTRES: list[tuple[str, str]] = [
    (
        "SQL: SQLAlchemy Core + asyncio adaptation + driver",
        r"sqlalchemy|aiosqlite|asyncpg|greenlet"
        r"|Store\.|bridge/store/",
    ),
    ("Telegram: sendChatAction (typing indicator)", r"Bot\.send_chat_action\b"),
    ("Telegram: sendMessage", r"Bot\.send_message\b|Bot\.send_photo\b|Bot\.send_for_id\b"),
    ("Telegram: getUpdates", r"get_raw_updates|Bot\.get_updates\b"),
    (
        "Telegram: update parsing (Update.de_json, normalise)",
        r"Update\.de_json|to_inbound|TelegramObject",
    ),
    ("Telegram: other PTB/httpx", r"telegram/|httpx/|httpcore/"),
    (
        "Parloa call (TextchatClient, aiohttp client, pydantic)",
        r"TextchatClient|textchat/client|textchat/models",
    ),
    ("engine (other)", r"bridge/engine"),
    ("metrics (prometheus_client)", r"prometheus_client"),
    ("logging", r"logging/"),
    ("asyncio event loop and callbacks", r"asyncio/|selectors"),
    ("native code holding the GIL (no Python frame)", r"^$"),
]
# A store call's frame: the method of the store's part that runs it (bridge/store/facade.py).
STORE_METHOD = re.compile(
    r"(?:Intake|Leases|Commits|Housekeeping|DeadLetters|ChannelStates)\.(\w+) \(bridge/store/"
)


def _frames(stack: str) -> list[str]:
    return [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]


def aggregate(raw: Iterable[str]) -> dict[str, Any]:
    """Totals from py-spy's ``--format raw`` output (collapsed stacks with counts)."""
    total = 0
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    centres: collections.Counter[str] = collections.Counter()
    store: collections.Counter[str] = collections.Counter()
    for line in raw:
        line = line.rstrip("\n")
        if not line or " " not in line:
            continue
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = _frames(stack)
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
        joined = ";".join(frames)
        methods = STORE_METHOD.findall(joined)
        if methods:
            store[methods[-1]] += count
        for name, pattern in CENTRES:
            if re.search(pattern, joined):
                centres[name] += count
                break
        else:
            centres["other"] += count
    return {
        "total": total,
        "self": self_time,
        "inclusive": inclusive,
        "centres": centres,
        "store": store,
    }


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of ``pid``'s main thread (the event loop) and of all its other threads (the
    aiosqlite connection thread, PTB/httpx and asyncio helper threads)."""
    out: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        name = "main thread" if task.name == str(pid) else "other threads"
        out[name] += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return dict(out)


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


async def _bridge_and_fakes(args: argparse.Namespace, name: str) -> tuple[Path, Fakes, Bridge]:
    """The fakes process and a bridge of ``args.backend`` on them (stop both when done)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"parloa-{name}-"))
    fakes = Fakes(workdir)
    await fakes.start()
    bridge = Bridge(f"{name}-{args.backend}", args.backend, fakes, workdir, args.postgres_url)
    await bridge.start()
    return workdir, fakes, bridge


async def spy(args: argparse.Namespace) -> None:
    workdir, fakes, bridge = await _bridge_and_fakes(args, "profile")
    try:
        await fakes.set_latency(0.0)
        chats = list(range(20_000_000, 20_000_000 + args.chats))
        if not args.first_contact:
            await fakes.call(
                "POST",
                "/first_contact",
                {"token": bridge.token, "chats": chats, "tag": "p-u", "deadline": 120},
            )
        runs = [("raw", workdir / "profile.txt", ["--gil", "--nolineno"])]
        if args.svg:
            runs.append(("flamegraph", Path(args.svg), ["--gil"]))
        for index, (fmt, output, extra) in enumerate(runs):
            threads_before = thread_cpu(bridge.pid)
            cpu_before = cpu_seconds(bridge.pid)
            fakes_before = cpu_seconds(fakes.pid)
            pg_before = postgres_cpu()
            sampler = await asyncio.create_subprocess_exec(
                _py_spy(),
                "record",
                "--pid",
                str(bridge.pid),
                "--rate",
                str(args.rate),
                "--format",
                fmt,
                "--output",
                str(output),
                *extra,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            await asyncio.sleep(1.0)  # py-spy attaches
            started = time.monotonic()
            if args.first_contact:
                # New chats each run: every message opens a Parloa conversation.
                fresh = [c + (index + 1) * 1_000_000 for c in chats]
                result = await fakes.call(
                    "POST",
                    "/first_contact",
                    {"token": bridge.token, "chats": fresh, "tag": f"p-f{index}", "deadline": 120},
                )
            else:
                result = await fakes.call(
                    "POST",
                    "/closed_loop",
                    {
                        "token": bridge.token,
                        "chats": chats,
                        "tag": f"p-w{index}",
                        "messages_per_chat": args.messages,
                        "deadline": 120,
                    },
                )
            wall = time.monotonic() - started
            cpu = cpu_seconds(bridge.pid) - cpu_before
            others = {"fakes process": cpu_seconds(fakes.pid) - fakes_before}
            if args.backend == "postgres":
                others["PostgreSQL server"] = postgres_cpu_since(pg_before)
            threads = {k: v - threads_before.get(k, 0.0) for k, v in thread_cpu(bridge.pid).items()}
            sampler.send_signal(signal.SIGINT)  # py-spy writes its output
            async with asyncio.timeout(60):
                await sampler.wait()
            if fmt != "raw":
                print(f"flamegraph: {output}")
                continue
            kind = "first-contact" if args.first_contact else "warm"
            print(
                f"workload: {result['answered']} {kind} messages in {wall:.1f} s = "
                f"{result['answered'] / wall:.1f} msg/s; bridge CPU {cpu:.1f} s "
                f"({cpu / wall:.0%} of one core, {1000 * cpu / result['answered']:.1f} ms "
                "per message)"
            )
            print(
                "other CPU: "
                + ", ".join(f"{k} {v:.1f} s ({v / wall:.0%})" for k, v in others.items())
            )
            print(
                "bridge CPU by thread (s): "
                + ", ".join(
                    f"{k} {v:.1f}"
                    for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
                    if v > 0.05
                )
            )
            report_profile(aggregate(output.read_text().splitlines()), wall, args.rate)
            print(f"raw profile: {output}")
    finally:
        await bridge.stop(fast=True)
        await fakes.close()


def report_profile(agg: dict[str, Any], wall: float, rate: int) -> None:
    total = agg["total"]
    if not total:
        print("no samples")
        return
    print(f"\nsamples holding the GIL: {total} ({total / rate / wall:.0%} of the wall time)")
    print("\ncost centres (share of GIL-holding samples):")
    for name, count in agg["centres"].most_common():
        print(f"  {100 * count / total:5.1f}%  {name}")
    store_total = sum(agg["store"].values())
    if store_total:
        print("\nSQL samples whose stack names the Store method (share of all samples):")
        for name, count in agg["store"].most_common():
            print(f"  {100 * count / total:5.1f}%  Store.{name}")
    print("\ntop functions, inclusive (project code and the libraries it calls):")
    shown = 0
    for frame, count in agg["inclusive"].most_common():
        if re.search(
            r"runpy|bridge/cli|bridge/__main__|asyncio/(runners|base_events|events)"
            r"|Runner\.run|^<module>",
            frame,
        ):
            continue
        print(f"  {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= 45:
            break
    print("\ntop functions, self:")
    for frame, count in agg["self"].most_common(25):
        print(f"  {100 * count / total:5.1f}%  {frame}")


# --- store microbenchmark ------------------------------------------------------------------------


async def store_bench(args: argparse.Namespace) -> None:
    from bridge.store import Store
    from bridge.store.database import create_engine, migrate
    from bridge.vocabulary import Answered, Done, InboundKind, NewReply, Sent, Step

    workdir = Path(tempfile.mkdtemp(prefix="parloa-store-"))
    db = Database(args.backend, workdir, args.postgres_url)
    await db.create()
    engine = create_engine(db.url)
    store = Store(engine)
    try:
        await migrate(engine)
        owner = "bench-owner"
        address = {
            "chat_id": 1,
            "chat_type": "private",
            "thread_id": None,
            "reply_to_message_id": None,
        }
        context = {"platform": "telegram", "chatType": "private", "userName": "Bench"}
        elements = [{"type": "text", "content": "You said: hello", "id": "x"}]
        timings: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
        server = args.backend == "postgres"

        async def timed(name: str, coro: Any) -> Any:
            # the server's CPU is read outside the timed span: scanning /proc costs this process
            before = postgres_cpu() if server else {}
            c0, w0 = time.process_time(), time.perf_counter()
            result = await coro
            cpu, wall = time.process_time() - c0, time.perf_counter() - w0
            timings[name].append((cpu, wall, postgres_cpu_since(before) if server else 0.0))
            return result

        conversations = 50
        for i in range(args.messages):
            key = str(1000 + i % conversations)
            _, cid = await timed(
                "accept",
                store.accept(
                    channel="tg",
                    event_id=f"tg:{i}",
                    conversation_key=key,
                    requester_id=f"tg:{key}",
                    kind=InboundKind.TEXT,
                    text=f"m{i}",
                    address=address,
                    context=context,
                ),
            )
            await timed("due_conversations", store.due_conversations(2000))
            work = await timed("claim", store.claim(cid, owner, 30))
            assert work is not None and work.inbox is not None
            step = Step(
                inbox_id=work.inbox.id,
                outcome=Done(time.time(), 1),
                conversation=Answered(time.time(), address),
                replies=(NewReply(elements, address, work.inbox.id),),
            )
            created = await timed("commit", store.commit(cid, owner, step, "tg"))
            await timed(
                "update_outbox",
                store.update_outbox(cid, owner, created[0].id, Sent(time.time(), 1, "1")),
            )
            await timed("finish", store.finish(cid, owner, 30))
        print(
            f"store calls on {args.backend}, {args.messages} messages, "
            f"{conversations} conversations (CPU of this process incl. driver threads):"
        )
        totals = [0.0, 0.0, 0.0]

        def line(name: str, cpu: float, wall: float, server_cpu: float) -> str:
            text = f"  {name:18s} CPU {cpu * 1000:6.2f} ms  wall {wall * 1000:6.2f} ms"
            return text + (f"  server CPU {server_cpu * 1000:6.2f} ms" if server else "")

        for name, values in timings.items():
            values = values[len(values) // 10 :]  # skip the warm-up tenth
            means = [sum(v[i] for v in values) / len(values) for i in range(3)]
            totals = [t + m for t, m in zip(totals, means, strict=True)]
            print(line(name, *means))
        print(line("per message", *totals))
    finally:
        await store.close()
        await engine.dispose()
        await db.drop()


# --- statements per message ----------------------------------------------------------------------


async def statements(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="parloa-statements-"))
    fakes = Fakes(workdir)
    await fakes.start()
    bridge = Bridge(
        "bridge-echo",
        args.backend,
        fakes,
        workdir,
        args.postgres_url,
        database_options={"echo": True},
    )
    await bridge.start()
    try:
        await fakes.set_latency(0.0)
        chats = list(range(21_000_000, 21_000_000 + args.chats))
        await fakes.call(
            "POST",
            "/first_contact",
            {"token": bridge.token, "chats": chats, "tag": "s-u", "deadline": 60},
        )
        await asyncio.sleep(0.5)
        assert bridge.process is not None
        log = bridge.process.log
        before = len(log.read_text().splitlines())
        result = await fakes.call(
            "POST",
            "/closed_loop",
            {
                "token": bridge.token,
                "chats": chats,
                "tag": "s-w",
                "messages_per_chat": args.messages,
                "deadline": 60,
            },
        )
        await asyncio.sleep(0.5)
        lines = log.read_text().splitlines()[before:]
        kinds: collections.Counter[str] = collections.Counter()
        for line in lines:
            # SQLAlchemy's own echo handler ("INFO sqlalchemy.engine.Engine <SQL>")
            match = re.search(r" INFO sqlalchemy\.engine\.Engine (\w+)", line)
            verbs = ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "COMMIT", "ROLLBACK")
            if match and match[1] in verbs:
                kinds[match[1]] += 1
            elif match and match[1] == "BEGIN" and "(implicit)" in line:
                kinds["BEGIN"] += 1
        answered = result["answered"]
        print(
            f"{args.backend}: {answered} warm messages; per message: "
            + ", ".join(f"{k} {v / answered:.1f}" for k, v in sorted(kinds.items()))
        )
        statements_total = sum(kinds[k] for k in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"))
        print(
            f"  statements {statements_total / answered:.1f}, transactions "
            f"{kinds['BEGIN'] / answered:.1f} (COMMIT or ROLLBACK each)"
        )
        if args.backend == "postgres":
            # SQLAlchemy logs BEGIN (implicit) and COMMIT around every unit; a one-statement
            # unit runs in the driver's autocommit, which sends neither.
            print("  (PostgreSQL: one-statement units log BEGIN/COMMIT that are not sent)")
    finally:
        await bridge.stop(fast=True)
        await fakes.close()


# --- one transaction, four ways ------------------------------------------------------------------


async def sqlpath(args: argparse.Namespace) -> None:
    import sqlite3

    import aiosqlite
    from sqlalchemy import or_, text, update

    from bridge.store.database import create_engine, migrate
    from bridge.store.schema import conversations

    workdir = Path(tempfile.mkdtemp(prefix="parloa-sqlpath-"))
    path = workdir / "path.db"
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    n = args.calls

    def report_line(label: str, cpu: float, wall: float) -> None:
        print(f"  {1000 * cpu / n:6.3f} ms CPU  {1000 * wall / n:6.3f} ms wall  {label}")

    def build() -> Any:
        now = time.time()
        return (
            update(conversations)
            .where(
                conversations.c.id == 1,
                or_(
                    conversations.c.lease_owner.is_(None),
                    conversations.c.lease_owner == "o",
                    conversations.c.lease_until < now,
                ),
            )
            .values(lease_owner="o", lease_until=now + 30)
            .returning(*conversations.c)
        )

    sql = (
        "UPDATE conversations SET lease_owner=?, lease_until=? WHERE id=? AND "
        "(lease_owner IS NULL OR lease_owner=? OR lease_until<?) RETURNING *"
    )
    try:
        await migrate(engine)
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO conversations (channel, conversation_key, requester_id, state, "
                    "created_at, updated_at, last_activity_at) "
                    "VALUES ('tg', '1', 'r', 'new', 0, 0, 0)"
                )
            )
        print(f"one claim-like transaction on SQLite (WAL), {n} times:")
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            build()
        report_line(
            "building the UPDATE statement with SQLAlchemy Core (no execution)",
            time.process_time() - c0,
            time.perf_counter() - w0,
        )
        for _ in range(50):  # warm: SQLAlchemy compiles and caches the statement once
            async with engine.begin() as conn:
                (await conn.execute(build())).first()
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            async with engine.begin() as conn:
                (await conn.execute(build())).first()
        report_line(
            "SQLAlchemy asyncio engine + aiosqlite (as the store did at first)",
            time.process_time() - c0,
            time.perf_counter() - w0,
        )
        await engine.dispose()
        db = await aiosqlite.connect(str(path), isolation_level=None)
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            now = time.time()
            await db.execute("BEGIN IMMEDIATE")
            cursor = await db.execute(sql, ("o", now + 30, 1, "o", now))
            await cursor.fetchall()
            await cursor.close()
            await db.execute("COMMIT")
        report_line(
            "aiosqlite directly (one thread hop per call)",
            time.process_time() - c0,
            time.perf_counter() - w0,
        )
        await db.close()
        sync = sqlite3.connect(str(path), isolation_level=None)
        sync.execute("PRAGMA synchronous=NORMAL")
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            now = time.time()
            sync.execute("BEGIN IMMEDIATE")
            sync.execute(sql, ("o", now + 30, 1, "o", now)).fetchall()
            sync.execute("COMMIT")
        report_line(
            "sqlite3 synchronously (no thread, no event loop)",
            time.process_time() - c0,
            time.perf_counter() - w0,
        )
        sync.close()
    finally:
        await engine.dispose()


# --- bursts ---------------------------------------------------------------------------------------


async def _metric_lines(url: str, prefixes: tuple[str, ...]) -> list[str]:
    import aiohttp

    async with aiohttp.ClientSession(trust_env=False) as http, http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return [line for line in text.splitlines() if line.startswith(prefixes)]


async def burst(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="parloa-burst-"))
    fakes = Fakes(workdir)
    await fakes.start()
    try:
        for attempt in range(args.attempts):
            bridge = Bridge(f"burst{attempt}", args.backend, fakes, workdir, args.postgres_url)
            await bridge.start()
            try:
                await fakes.set_latency(0.0)
                base = 22_000_000 + attempt * 100_000
                warm = list(range(base, base + 100))
                await fakes.call(
                    "POST",
                    "/first_contact",
                    {"token": bridge.token, "chats": warm, "tag": f"b{attempt}u", "deadline": 60},
                )
                await fakes.call(
                    "POST",
                    "/closed_loop",
                    {
                        "token": bridge.token,
                        "chats": warm,
                        "tag": f"b{attempt}w",
                        "messages_per_chat": 5,
                        "deadline": 60,
                    },
                )
                sampler = None
                output = workdir / f"burst{attempt}.txt"
                if args.spy:
                    sampler = await asyncio.create_subprocess_exec(
                        _py_spy(),
                        "record",
                        "--pid",
                        str(bridge.pid),
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "--output",
                        str(output),
                        "--gil",
                        "--nolineno",
                        stdout=asyncio.subprocess.DEVNULL,
                        stderr=asyncio.subprocess.DEVNULL,
                    )
                    await asyncio.sleep(1.0)
                before = cpu_seconds(bridge.pid)
                chats = list(range(base + 1000, base + 1000 + args.chats))
                result = await fakes.call(
                    "POST",
                    "/first_contact",
                    {
                        "token": bridge.token,
                        "chats": chats,
                        "tag": f"b{attempt}b",
                        "deadline": args.deadline,
                    },
                )
                cpu = cpu_seconds(bridge.pid) - before
                print(
                    f"attempt {attempt + 1}: {result['answered']}/{args.chats} answered in "
                    f"{result['elapsed']:.1f} s, bridge CPU {cpu:.1f} s "
                    f"({1000 * cpu / max(1, result['answered']):.0f} ms per answer); "
                    f"requests cut off mid-body at the fake: {result.get('requests_lost')}"
                )
                for line in await _metric_lines(bridge.url, ("parloa_bridge_deliveries_total",)):
                    print(f"    {line}")
                if sampler is not None:
                    sampler.send_signal(signal.SIGINT)
                    await sampler.wait()
                    agg = aggregate(output.read_text().splitlines())
                    total = max(1, agg["total"])
                    print(
                        "    top self time: "
                        + "; ".join(
                            f"{100 * count / total:.0f}% {frame}"
                            for frame, count in agg["self"].most_common(5)
                        )
                    )
            finally:
                await bridge.stop(fast=True)
    finally:
        await fakes.close()


# --- sends microbenchmark ------------------------------------------------------------------------


async def timeline(args: argparse.Namespace) -> None:
    """When the Parloa calls of a first-contact burst left the bridge (as the simulator saw
    them arrive): how long intake and dispatch take to get every launch out."""
    import aiohttp

    _workdir, fakes, bridge = await _bridge_and_fakes(args, "timeline")
    try:
        await fakes.set_latency(0.0)
        warm = list(range(30_000_000, 30_000_100))
        await fakes.call(
            "POST",
            "/first_contact",
            {"token": bridge.token, "chats": warm, "tag": "t-u", "deadline": 60},
        )
        await fakes.set_latency(args.latency)
        chats = list(range(20_000_000, 20_000_000 + args.chats))
        result = await fakes.call(
            "POST",
            "/first_contact",
            {"token": bridge.token, "chats": chats, "tag": "t-b", "deadline": 60},
        )
        if args.warm:
            # The warm burst: every chat's next message at once (as bench.run's warm phase
            # at 1000 chats), its Parloa calls and answers lined up the same way.
            result = await fakes.call(
                "POST",
                "/closed_loop",
                {
                    "token": bridge.token,
                    "chats": chats,
                    "tag": "t-w",
                    "messages_per_chat": 1,
                    "deadline": 60,
                },
            )
        url, token = fakes.info["parloa_url"], fakes.info["parloa_token"]
        async with (
            aiohttp.ClientSession(trust_env=False) as http,
            http.get(
                f"{url}/_simulator/requests", headers={"Authorization": f"Bearer {token}"}
            ) as resp,
        ):
            records = await resp.json()
        wanted = {f"tg:{chat}" for chat in chats}
        start = result["started"]
        mine = [r for r in records if r.get("requester_id") in wanted and r["at"] >= start]
        latency = result["latency"] or {}
        what = "warm messages" if args.warm else "first contacts"
        print(
            f"{result['answered']}/{len(chats)} {what} answered, slowest after "
            f"{result['elapsed']:.2f} s (Parloa {args.latency:g} s per call); answers p50 "
            f"{latency.get('p50') or 0:.2f} s, p95 {latency.get('p95') or 0:.2f} s"
        )
        print("Parloa calls arriving, seconds after the updates were offered:")
        for kind in ("launch", "message"):
            times = sorted(r["at"] - start for r in mine if r.get("event_type") == kind)
            if not times:
                continue
            pick = [times[int(q * (len(times) - 1))] for q in (0.0, 0.5, 0.9, 1.0)]
            print(
                f"  {kind:8} {len(times):5}  first {pick[0]:.2f}  p50 {pick[1]:.2f}  "
                f"p90 {pick[2]:.2f}  last {pick[3]:.2f}"
            )
    finally:
        await bridge.stop(fast=True)
        await fakes.close()


async def sends_bench(args: argparse.Namespace) -> None:
    import aiohttp
    from telegram import Bot
    from telegram.request import HTTPXRequest

    workdir = Path(tempfile.mkdtemp(prefix="parloa-sends-"))
    fakes = Fakes(workdir)
    await fakes.start()
    try:
        root = fakes.info["telegram_api_root"]
        token = fakes.token("bare")
        results: dict[str, float] = {}

        async def measure(name: str, send: Any) -> None:
            for i in range(20):  # warm up connections and caches
                await send(i)
            c0 = time.process_time()
            for i in range(args.messages):
                await send(i)
            results[name] = (time.process_time() - c0) / args.messages
            await fakes.reset(token)

        bot = Bot(token, base_url=f"{root}/bot", request=HTTPXRequest(connection_pool_size=128))
        await bot.initialize()
        await measure(
            "python-telegram-bot send_message on HTTPXRequest (sniffio missing)",
            lambda i: bot.send_message(30_000_000 + i % 50, f"hello {i}"),
        )
        had = "sniffio" in sys.modules
        if not had:
            stub = types.ModuleType("sniffio")
            stub.current_async_library = lambda: "asyncio"  # type: ignore[attr-defined]
            sys.modules["sniffio"] = stub
        await measure(
            "python-telegram-bot send_message, sniffio importable (stub)",
            lambda i: bot.send_message(30_000_000 + i % 50, f"hello {i}"),
        )
        if not had:
            del sys.modules["sniffio"]
        await bot.shutdown()
        from adapters.telegram.aiohttp_request import AiohttpRequest
        from adapters.telegram.channel import _Bot

        own = _Bot(token, base_url=f"{root}/bot", request=AiohttpRequest(connection_pool_size=128))
        await own.initialize()
        await measure(
            "python-telegram-bot send_message on AiohttpRequest",
            lambda i: own.send_message(30_000_000 + i % 50, f"hello {i}"),
        )
        await measure(
            "the same without building the sent Message (as the bridge sends)",
            lambda i: own.send_for_id(
                "sendMessage", {"chat_id": 30_000_000 + i % 50, "text": f"hello {i}"}
            ),
        )
        await own.shutdown()
        async with aiohttp.ClientSession() as http:

            async def post(i: int) -> None:
                async with http.post(
                    f"{root}/bot{token}/sendMessage",
                    json={"chat_id": 30_000_000 + i % 50, "text": f"hello {i}"},
                ) as resp:
                    await resp.read()

            await measure("aiohttp POST sendMessage (the bare forwarder)", post)
        print(f"CPU per Telegram sendMessage call, {args.messages} calls:")
        for name, value in results.items():
            print(f"  {value * 1000:6.2f} ms  {name}")
    finally:
        await fakes.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("spy")
    p.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    p.add_argument("--chats", type=int, default=100)
    p.add_argument("--messages", type=int, default=10, help="warm messages per chat")
    p.add_argument(
        "--first-contact",
        action="store_true",
        help="profile first messages of new chats (--chats of them) instead of warm ones",
    )
    p.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--svg", help="also write a flamegraph here")
    p.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    s = sub.add_parser("store")
    s.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    s.add_argument("--messages", type=int, default=300)
    s.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    st = sub.add_parser("statements")
    st.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    st.add_argument("--chats", type=int, default=20)
    st.add_argument("--messages", type=int, default=5, help="warm messages per chat")
    st.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    q = sub.add_parser("sqlpath")
    q.add_argument("--calls", type=int, default=500)
    b = sub.add_parser("burst")
    b.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    b.add_argument("--attempts", type=int, default=4)
    b.add_argument("--chats", type=int, default=1000)
    b.add_argument("--deadline", type=float, default=60.0)
    b.add_argument("--spy", action="store_true", help="sample each burst with py-spy")
    b.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    tl = sub.add_parser("timeline")
    tl.add_argument("--backend", default="sqlite", choices=["sqlite", "postgres"])
    tl.add_argument("--chats", type=int, default=1000)
    tl.add_argument("--latency", type=float, default=1.0, help="Parloa seconds per call")
    tl.add_argument(
        "--warm", action="store_true", help="then one more message from every chat at once"
    )
    tl.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    t = sub.add_parser("sends")
    t.add_argument("--messages", type=int, default=300)
    args = parser.parse_args(argv)
    handler = {
        "spy": spy,
        "store": store_bench,
        "statements": statements,
        "sqlpath": sqlpath,
        "burst": burst,
        "sends": sends_bench,
        "timeline": timeline,
    }[args.command]
    asyncio.run(handler(args))


if __name__ == "__main__":
    main()
