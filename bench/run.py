"""Run the benchmark and print the table.

    .venv/bin/python -m bench.run [--quick] [--backends sqlite,postgres] [--out docs/benchmarks.md]
        [--repeat 5]

One fakes process (:mod:`bench.fakes`: fake Bot API, simulator as Parloa, fake Slack, and the
load drivers) serves every system under test in turn, each a process of its own:

* the bridge (``python -m bridge run --config X``) on each backend, fresh database each start;
* (a) a python-telegram-bot application with default settings, (b) a bare forwarder
  (:mod:`bench.references`).

Workloads, in this order, per system:

1. **throughput** for every Parloa latency and number of chats: a first-contact round (every
   chat's first message at once: launch + message, welcome + answer) and a warm phase (each chat
   sends its next message when the previous one was answered). A phase that does not finish in
   its bound is cut there (its figure is what was answered within the bound) and the system is
   restarted fresh before the next phase, so nothing left over skews the next figure;
2. **latency** at fixed rates on warm chats (bridge-added = send − push − Parloa's own time);
3. **Slack acknowledgement** latency (bridges only; an HTTP-mode Slack channel);
4. **peak RSS** after seeding the database with stored conversations and running a fixed
   workload (references: the same workload, nothing stored).

``--repeat N`` then runs the Parloa-latency-0 throughput rows of every bridge and the bare
forwarder N-1 more times, each bridge paired with a bare forwarder run within a minute of it;
the 60% target is judged on the median of the paired ratios (bench.report.share_of_bare).

Everything runs on 127.0.0.1. ``--quick`` uses tiny sizes (SQLite only unless ``--backends``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import shlex
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402
from bench.systems import (  # noqa: E402
    CHAT_MESSAGES_PER_SECOND,
    Bridge,
    Fakes,
    Reference,
    cpu_seconds,
    memory_kib,
    postgres_cpu,
    postgres_cpu_since,
)

DEFAULT_POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
POSTGRES_ENV = "PARLOA_BRIDGE_BENCH_POSTGRES_URL"
FIRST_CHAT = 10_000_000  # chat ids handed out to workloads
SEEDED_FIRST_CHAT = 50_000_000  # chat ids of seeded (stored) conversations


@dataclass
class Plan:
    quick: bool
    chats: list[int]
    latencies: list[float]
    # warm messages per chat, by "latency:chats"
    warm_messages: dict[str, int]
    deadline: float  # bound of one measured phase
    first_deadline: float  # bound of a first-contact round
    warmup_deadline: float  # bound of an unmeasured warm-up round
    rates: dict[str, dict[str, Any]]
    slack: dict[str, Any]
    rss_sizes: list[int]
    rss_workload: dict[str, int]

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            chats=[1, 100, 1000],
            latencies=[0.0, 1.0],
            # At Parloa latency 0 long enough to be a steady state even for the bare forwarder:
            # a shorter phase, or one message per chat (a burst, measured at 1 s below), moved
            # with every stall of the machine (docs/benchmarks.md, "Noise: one run is not
            # enough").
            warm_messages={
                "0.0:1": 100,
                "0.0:100": 20,
                "0.0:1000": 3,
                "1.0:1": 5,
                "1.0:100": 3,
                "1.0:1000": 2,
            },
            deadline=30.0,
            first_deadline=40.0,
            warmup_deadline=60.0,
            rates={
                "target": {
                    "rate": 100.0,
                    "duration": 10.0,
                    "chats": 200,
                    "latency": 0.1,
                    "drain": 15.0,
                    "target": True,
                },
                "low": {
                    "rate": 20.0,
                    "duration": 10.0,
                    "chats": 200,
                    "latency": 0.1,
                    "drain": 10.0,
                    "target": False,
                },
            },
            slack={"rate": 20.0, "duration": 10.0, "latency": 5.0, "users": 50},
            rss_sizes=[1000, 100_000],
            rss_workload={"returning": 100, "new": 100, "warm": 2},
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(
            quick=True,
            chats=[1, 20],
            latencies=[0.0, 0.2],
            warm_messages={"0.0:1": 10, "0.0:20": 2, "0.2:1": 3, "0.2:20": 2},
            deadline=5.0,
            first_deadline=5.0,
            warmup_deadline=10.0,
            rates={
                "target": {
                    "rate": 20.0,
                    "duration": 2.0,
                    "chats": 20,
                    "latency": 0.1,
                    "drain": 3.0,
                    "target": True,
                },
            },
            slack={"rate": 10.0, "duration": 1.0, "latency": 1.0, "users": 5},
            rss_sizes=[200, 2000],
            rss_workload={"returning": 10, "new": 10, "warm": 1},
        )


@dataclass
class Chats:
    """Fresh chat ids: every workload talks in chats nobody used before."""

    next_id: int = FIRST_CHAT

    def take(self, n: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + n))
        self.next_id += n
        return ids


@dataclass
class Runner:
    plan: Plan
    fakes: Fakes
    workdir: Path
    postgres_url: str
    chats: Chats = field(default_factory=Chats)
    results: dict[str, Any] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)

    def log(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        self.log_lines.append(line)
        print(line, file=sys.stderr, flush=True)

    # --- measuring one phase ---

    async def _measured(self, system: Any, path: str, body: dict[str, Any]) -> dict[str, Any]:
        pids = {"system": system.pid, "fakes": self.fakes.pid}
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        pg_before = postgres_cpu() if "postgres" in system.name else None
        started = time.monotonic()
        result: dict[str, Any] = await self.fakes.call("POST", path, body)
        wall = time.monotonic() - started
        cpu = {k: cpu_seconds(p) - before[k] for k, p in pids.items()}
        if pg_before is not None:
            cpu["postgres"] = postgres_cpu_since(pg_before)
        result["wall"] = wall
        result["cpu"] = cpu
        result["cpu_share"] = {k: v / wall for k, v in cpu.items() if wall > 0}
        if result.get("requests_lost"):
            self.log(
                f"  ({system.name}: requests the fake Bot API lost mid-body during "
                f"{path}: {result['requests_lost']})"
            )
        answered = result.get("answered") or 0
        result["cpu_per_message"] = cpu["system"] / answered if answered else None
        return result

    async def _first_contact(
        self, system: Any, chats: list[int], tag: str, deadline: float
    ) -> dict[str, Any]:
        return await self._measured(
            system,
            "/first_contact",
            {"token": system.token, "chats": chats, "tag": tag, "deadline": deadline},
        )

    async def _warm_up(self, system: Any, n: int, tag: str) -> list[int] | None:
        """Fresh chats that have had their first contact (at Parloa latency 0)."""
        await self.fakes.set_latency(0.0)
        chats = self.chats.take(n)
        result = await self._first_contact(system, chats, tag, self.plan.warmup_deadline)
        if not result["complete"]:
            self.log(
                f"  {system.name}: warm-up of {n} chats did not finish "
                f"({result['answered']}/{n}); restarting"
            )
            await system.restart()
            return None
        return chats

    # --- workloads ---

    async def throughput(
        self,
        system: Any,
        out: dict[str, Any] | None = None,
        latencies: Sequence[float] | None = None,
    ) -> None:
        if out is None:
            out = self.results["throughput"].setdefault(system.name, {})
        for latency in self.plan.latencies if latencies is None else latencies:
            for n in self.plan.chats:
                key = f"{latency}:{n}"
                cell: dict[str, Any] = {"restarts": 0}
                out[key] = cell
                await self.fakes.set_latency(latency)
                chats = self.chats.take(n)
                tag = f"{system.name}-t{key}"
                first = await self._first_contact(
                    system, chats, f"{tag}-f", self.plan.first_deadline
                )
                cell["first"] = first
                self.log(
                    f"  {system.name} latency {latency:g} s, {n} chats, first contact: "
                    f"{first['answered']}/{n} in {first['elapsed']:.2f} s "
                    f"= {first['throughput']:.1f} msg/s"
                )
                if not first["complete"]:
                    cell["restarts"] += 1
                    await system.restart()
                    warm_chats = await self._warm_up(system, n, f"{tag}-u")
                    if warm_chats is None:
                        cell["warm"] = None
                        continue
                    chats = warm_chats
                    await self.fakes.set_latency(latency)
                per_chat = self.plan.warm_messages[key]
                warm = await self._measured(
                    system,
                    "/closed_loop",
                    {
                        "token": system.token,
                        "chats": chats,
                        "tag": f"{tag}-w",
                        "messages_per_chat": per_chat,
                        "deadline": self.plan.deadline,
                    },
                )
                cell["warm"] = warm
                self.log(
                    f"  {system.name} latency {latency:g} s, {n} chats, warm: "
                    f"{warm['answered']}/{warm['messages']} in {warm['elapsed']:.2f} s "
                    f"= {warm['throughput']:.1f} msg/s "
                    f"(CPU {warm['cpu_share'].get('system', 0):.0%})"
                )
                if not warm["complete"]:
                    cell["restarts"] += 1
                    await system.restart()

    async def latency(self, system: Any) -> None:
        out = self.results["latency"].setdefault(system.name, {})
        for key, spec in self.plan.rates.items():
            chats = await self._warm_up(system, int(spec["chats"]), f"{system.name}-l{key}-u")
            if chats is None:
                continue
            await self.fakes.set_latency(float(spec["latency"]))
            result = await self._measured(
                system,
                "/open_loop",
                {
                    "token": system.token,
                    "chats": chats,
                    "tag": f"{system.name}-l{key}",
                    "rate": spec["rate"],
                    "duration": spec["duration"],
                    "drain": spec["drain"],
                },
            )
            out[key] = result
            added = result["added"]
            self.log(
                f"  {system.name} at {spec['rate']:g} msg/s: "
                f"{result['answered']}/{result['messages']} answered, added p50/p99 "
                f"{report._ms(added['p50'])}/{report._ms(added['p99'])} ms"
            )
            if result["answered"] < result["messages"]:
                await system.restart()

    async def slack(self, backend: str) -> None:
        name = f"bridge-{backend}"
        bridge = Bridge(
            f"{name}-slack", backend, self.fakes, self.workdir, self.postgres_url, channel="slack"
        )
        await bridge.start()
        try:
            await self.fakes.set_latency(float(self.plan.slack["latency"]))
            spec = self.plan.slack
            result = await self._measured(
                bridge,
                "/slack_acks",
                {
                    "url": f"{bridge.url}/slack/slack/events",
                    "tag": f"{name}-s",
                    "rate": spec["rate"],
                    "duration": spec["duration"],
                    "users": spec["users"],
                },
            )
            self.results["slack"][name] = result
            ack = result["ack_all"]
            self.log(
                f"  {name}: Slack ack p50/p99 {report._ms(ack['p50'])}/"
                f"{report._ms(ack['p99'])} ms, statuses {result['statuses']}"
            )
        finally:
            await bridge.stop(fast=True)
            await self.fakes.set_latency(0.0)

    async def _rss_workload(self, system: Any, returning: list[int]) -> dict[str, Any]:
        spec = self.plan.rss_workload
        await self.fakes.set_latency(0.0)
        chats = returning + self.chats.take(spec["new"])
        first = await self._first_contact(
            system, chats, f"{system.name}-m-f", self.plan.warmup_deadline
        )
        warm = await self._measured(
            system,
            "/closed_loop",
            {
                "token": system.token,
                "chats": chats,
                "tag": f"{system.name}-m-w",
                "messages_per_chat": spec["warm"],
                "deadline": self.plan.warmup_deadline,
            },
        )
        memory = memory_kib(system.pid)
        return {
            **memory,
            "answered": first["answered"] + warm["answered"],
            "messages": first["messages"] + warm["messages"],
        }

    async def rss_bridge(self, backend: str) -> None:
        name = f"bridge-{backend}"
        out = self.results["rss"].setdefault(name, {})
        for size in self.plan.rss_sizes:
            bridge = Bridge(
                f"{name}-rss{size}",
                backend,
                self.fakes,
                self.workdir,
                self.postgres_url,
                seed=size,
                seed_first_chat=SEEDED_FIRST_CHAT,
            )
            await bridge.start()
            try:
                idle = memory_kib(bridge.pid)
                returning = list(
                    range(
                        SEEDED_FIRST_CHAT,
                        SEEDED_FIRST_CHAT + min(size, self.plan.rss_workload["returning"]),
                    )
                )
                result = await self._rss_workload(bridge, returning)
                result["idle_VmRSS"] = idle.get("VmRSS")
                result["seed_seconds"] = bridge.seed_seconds
                out[str(size)] = result
                self.log(
                    f"  {name} with {size:,} stored conversations (seeded in "
                    f"{bridge.seed_seconds:.1f} s): VmHWM {result['VmHWM'] / 1024:.0f} MiB "
                    f"({result['answered']}/{result['messages']} answered)"
                )
            finally:
                await bridge.stop(fast=True)

    async def rss_reference(self, ref: Reference) -> None:
        await ref.restart()
        result = await self._rss_workload(ref, [])
        self.results["rss"].setdefault(ref.name, {})["none"] = result
        self.log(f"  {ref.name}: VmHWM {result['VmHWM'] / 1024:.0f} MiB")

    async def rounds(self, backends: Sequence[str], count: int) -> None:
        """``count`` more rounds of the throughput rows at Parloa latency 0 (the 60% target's):
        each round runs the bridge on every backend and the bare forwarder (in turns, first
        one then the other), each started fresh. A bridge's ratio to the bare forwarder of its
        own round is paired in time, and the spread across rounds shows how much one run's
        ratio can be trusted (docs/benchmarks.md, "Noise: one run is not enough")."""
        zero = [min(self.plan.latencies)]
        done: list[dict[str, Any]] = self.results.setdefault("rounds", [])
        # starts=100: logs of their own, <name>-101.log, ...
        systems: list[Any] = [
            Bridge(f"bridge-{b}", b, self.fakes, self.workdir, self.postgres_url, starts=100)
            for b in backends
        ]
        systems.append(Reference("bare", self.fakes, self.workdir, starts=100))
        for number in range(1, count + 1):
            self.log(f"round {number} of {count}: throughput at Parloa latency 0")
            cells: dict[str, Any] = {}
            # Every other round the other way round: a drift within a round then favours
            # neither side.
            for system in systems if number % 2 else systems[::-1]:
                await system.start()
                try:
                    await self.throughput(system, cells.setdefault(system.name, {}), zero)
                finally:
                    if isinstance(system, Bridge):
                        await system.stop(fast=True)
                    else:
                        await system.stop()
            done.append(cells)

    # --- the whole run ---

    async def run(
        self,
        backends: Sequence[str],
        systems: Sequence[str],
        workloads: Sequence[str],
        repeat: int = 1,
    ) -> None:
        self.results.update({"throughput": {}, "latency": {}, "slack": {}, "rss": {}})
        bridges = [f"bridge-{b}" for b in backends] if "bridge" in systems else []
        self.results["systems"] = bridges + [s for s in ("ptb", "bare") if s in systems]
        for backend in backends if "bridge" in systems else []:
            name = f"bridge-{backend}"
            if {"throughput", "latency"} & set(workloads):
                self.log(f"{name}: throughput and latency")
                bridge = Bridge(name, backend, self.fakes, self.workdir, self.postgres_url)
                await bridge.start()
                try:
                    if "throughput" in workloads:
                        await self.throughput(bridge)
                    if "latency" in workloads:
                        await self.latency(bridge)
                finally:
                    await bridge.stop(fast=True)
            if "slack" in workloads:
                self.log(f"{name}: Slack acknowledgements")
                await self.slack(backend)
            if "rss" in workloads:
                self.log(f"{name}: memory")
                await self.rss_bridge(backend)
        for kind in ("ptb", "bare"):
            if kind not in systems:
                continue
            self.log(f"reference {kind}")
            ref = Reference(kind, self.fakes, self.workdir)
            await ref.start()
            try:
                if "throughput" in workloads:
                    await self.throughput(ref)
                if "latency" in workloads:
                    await self.latency(ref)
                if "rss" in workloads:
                    await self.rss_reference(ref)
            finally:
                await ref.stop()
        if repeat > 1 and "throughput" in workloads and "bare" in systems and "bridge" in systems:
            await self.rounds(backends, repeat - 1)


# --- the machine ---------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


async def _postgres_version(url: str) -> str:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return str((await conn.execute(text("SHOW server_version"))).scalar())
    finally:
        await engine.dispose()


async def machine(backends: Sequence[str], postgres_url: str) -> dict[str, str]:
    from importlib.metadata import version

    cpuinfo = _read("/proc/cpuinfo")
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    mhz = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("cpu MHz")
        ),
        "?",
    )
    mem_kib = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    info = {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "CPU": f"{model} @ {mhz} MHz",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "packages": ", ".join(
            f"{p} {version(p)}"
            for p in (
                "aiohttp",
                "python-telegram-bot",
                "httpx",
                "SQLAlchemy",
                "aiosqlite",
                "asyncpg",
                "slack_bolt",
            )
        ),
    }
    if "postgres" in backends:
        with contextlib.suppress(Exception):
            info["PostgreSQL"] = f"{await _postgres_version(postgres_url)} (same machine)"
    return info


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, well under a minute")
    parser.add_argument(
        "--backends", help="comma-separated: sqlite,postgres (default: both; --quick: sqlite)"
    )
    parser.add_argument(
        "--systems", default="bridge,ptb,bare", help="comma-separated subset of bridge,ptb,bare"
    )
    parser.add_argument(
        "--workloads",
        default="throughput,latency,slack,rss",
        help="comma-separated subset of throughput,latency,slack,rss",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL,
        help=f"server for fresh databases (${POSTGRES_ENV}; default {DEFAULT_POSTGRES_URL})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="write the results into this markdown file (between its bench markers)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the Parloa-latency-0 throughput rows of the bridge and the bare forwarder "
        "this many times in all (REPEAT-1 more rounds after the run, the bridges and the bare "
        "forwarder taking turns to go first); the 60%% target is judged on the median of the "
        "rounds' paired ratios",
    )
    parser.add_argument("--json", type=Path, help="write the raw results here as JSON")
    parser.add_argument(
        "--workdir",
        type=Path,
        help="configs, logs, SQLite files (default: a new temporary directory)",
    )
    return parser.parse_args(argv)


def chosen_backends(arg: str | None, quick: bool, prog: str) -> list[str]:
    """``--backends``, else SQLite alone for ``--quick`` and both otherwise."""
    backends = [b.strip() for b in (arg or ("sqlite" if quick else "sqlite,postgres")).split(",")]
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            raise SystemExit(f"{prog}: unknown backend {backend!r}")
    return backends


def workdir_of(arg: Path | None, prefix: str) -> Path:
    """``--workdir``, else a new temporary folder; made when missing."""
    workdir = arg or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


async def run_header(
    module: str,
    argv: Sequence[str],
    plan: Any,
    backends: list[str],
    postgres_url: str,
    workdir: Path,
) -> dict[str, Any]:
    """What every results file of ``module`` starts with: when, how, on what."""
    return {
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "-m", module, *argv]),
        "plan": asdict(plan),
        "machine": await machine(backends, postgres_url),
        "workdir": str(workdir),
    }


def save_results(
    args: argparse.Namespace, results: dict[str, Any], write: Callable[[Path, dict[str, Any]], None]
) -> None:
    """The raw results as JSON (``--json``, else in the working directory) and, with
    ``--out``, the report written into the Markdown file by ``write``."""
    json_path = args.json or Path(results["workdir"]) / "results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    print(f"\nraw results: {json_path}", file=sys.stderr)
    if args.out:
        write(args.out, results)
        print(f"written: {args.out}", file=sys.stderr)


async def amain(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    plan = Plan.quick_plan() if args.quick else Plan.full()
    backends = chosen_backends(args.backends, args.quick, "bench.run")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    workdir = workdir_of(args.workdir, "parloa-bench-")
    started = time.monotonic()
    fakes = Fakes(workdir)
    await fakes.start()
    runner = Runner(plan, fakes, workdir, args.postgres_url)
    runner.log(f"working directory {workdir}")
    header = await run_header("bench.run", argv, plan, backends, args.postgres_url, workdir)
    runner.results.update(header, chat_messages_per_second=CHAT_MESSAGES_PER_SECOND)
    try:
        await runner.run(backends, systems, workloads, max(1, args.repeat))
    finally:
        await fakes.close()
    runner.results["duration_seconds"] = time.monotonic() - started
    return runner.results


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    results = asyncio.run(amain(args, argv))
    print()
    print(report.table(results))
    print()
    print(report.notes(results))
    if results.get("rounds"):
        print()
        print(report.rounds_table(results))
    print()
    print(report.targets_table(results))
    save_results(args, results, report.write_markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
