"""Paired before/after throughput of two checkouts of the bridge, for a change on the hot path.

    .venv/bin/python -m bench.compare BEFORE_DIR AFTER_DIR [--rounds 5] [--backends sqlite,postgres]

Runs the Parloa-latency-0 throughput rows (100 and 1000 chats, first contact and warm) of the
bridge from each checkout in turn against one fakes process, the order swapped every round so
that a drift of the machine favours neither side, and prints each row's per-round figures and
the median of the paired ratios after / before. Each side's bridge runs with ``PYTHONPATH`` set
to its checkout (the installed dependencies are this environment's). Make the BEFORE checkout
with ``git worktree add ../before <commit>``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import DEFAULT_POSTGRES_URL, POSTGRES_ENV, Plan, Runner  # noqa: E402
from bench.systems import Bridge, Fakes  # noqa: E402

ROWS = ("0.0:100", "0.0:1000")
PHASES = ("first", "warm")


async def measure(
    sides: dict[str, Path], rounds: int, backends: list[str], postgres_url: str
) -> list[dict[str, Any]]:
    plan = dataclasses.replace(Plan.full(), chats=[100, 1000], latencies=[0.0])
    workdir = Path(tempfile.mkdtemp(prefix="parloa-compare-"))
    fakes = Fakes(workdir)
    await fakes.start()
    runner = Runner(plan, fakes, workdir, postgres_url)
    results: list[dict[str, Any]] = []
    try:
        for number in range(rounds):
            order = list(sides) if number % 2 == 0 else list(sides)[::-1]
            for backend in backends:
                for side in order:
                    os.environ["PYTHONPATH"] = str(sides[side])
                    system = Bridge(
                        f"bridge-{backend}",
                        backend,
                        fakes,
                        workdir,
                        postgres_url,
                        starts=100 * (number + 1),
                    )
                    await system.start()
                    cells: dict[str, Any] = {}
                    try:
                        await runner.throughput(system, cells, [0.0])
                    finally:
                        await system.stop(fast=True)
                    row: dict[str, Any] = {"round": number, "side": side, "backend": backend}
                    for key in ROWS:
                        cell = cells.get(key, {})
                        row[key] = {
                            phase: (cell.get(phase) or {}).get("throughput") for phase in PHASES
                        }
                    results.append(row)
    finally:
        await fakes.close()
    return results


def figures(
    results: list[dict[str, Any]], backend: str, side: str, key: str, phase: str
) -> list[float]:
    return [
        r[key][phase]
        for r in results
        if r["backend"] == backend and r["side"] == side and r[key][phase]
    ]


def summary(results: list[dict[str, Any]], backends: list[str]) -> list[str]:
    """One line per backend, row and phase: the figures of each side and the median ratio."""
    lines = []
    for backend in backends:
        for key in ROWS:
            for phase in PHASES:
                before = figures(results, backend, "before", key, phase)
                after = figures(results, backend, "after", key, phase)
                ratios = [a / b for a, b in zip(after, before, strict=False)]
                median = f"{statistics.median(ratios):.3f}" if ratios else "n/a"
                lines.append(
                    f"{backend:8} {key:9} {phase:5} before {[round(x) for x in before]} "
                    f"after {[round(x) for x in after]} msg/s; after/before median {median}"
                )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--postgres-url", default=os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES_URL
    )
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    results = asyncio.run(measure(sides, args.rounds, backends, args.postgres_url))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")
    print("\n".join(summary(results, backends)))


if __name__ == "__main__":
    main()
