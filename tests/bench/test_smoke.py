"""A short smoke run of the benchmark (``python -m bench.run --quick``): every process starts,
every workload runs end to end against the fakes, and the printed table has a number in every
row. The benchmark itself is not part of the test suite; see docs/benchmarks.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.process import ROOT, child_env

REFERENCE_COLUMNS = ("(a) PTB application", "(b) bare forwarder")


def _table(stdout: str) -> tuple[list[str], list[list[str]]]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| workload |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return header, rows


@pytest.mark.slow
@pytest.mark.timeout(200)  # a guard against a hang: on a loaded machine --quick takes 90 s
def test_quick_benchmark_prints_a_number_in_every_row(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--quick",
            "--repeat",
            "2",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(results),
        ],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=190,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    header, rows = _table(proc.stdout)
    assert header[:2] == ["workload", "unit"]
    assert header[2:] == ["bridge, SQLite", *REFERENCE_COLUMNS]
    labels = [row[0] for row in rows]
    # 2 Parloa latencies x 2 chat counts x (first contact, warm), then the other workloads
    assert sum(label.startswith("throughput") for label in labels) == 8
    for prefix in ("bridge-added latency", "Slack ack", "peak RSS", "CPU per warm message"):
        assert any(label.startswith(prefix) for label in labels), prefix
    for row in rows:
        assert len(row) == len(header), row
        for column, cell in zip(header[2:], row[2:], strict=True):
            if column in REFERENCE_COLUMNS and (
                row[0].startswith("Slack") or (row[0].startswith("peak RSS") and cell == "—")
            ):
                continue  # Telegram-only references; no stored conversations to vary
            assert re.search(r"\d", cell), f"no number for {column} in {row[0]!r}: {cell!r}"
        assert re.search(r"\d", row[2]), row  # the bridge column always has a figure

    data = json.loads(results.read_text())
    first = data["throughput"]["bridge-sqlite"]["0.0:20"]["first"]
    assert first["answered"] == first["messages"] == 20
    assert data["slack"]["bridge-sqlite"]["statuses"] == {"200": 10}
    assert "| target | verdict | measured |" in proc.stdout
    # --repeat 2: one more round of the bridge and the bare forwarder at Parloa latency 0
    (again,) = data["rounds"]
    assert set(again) == {"bridge-sqlite", "bare"}
    assert again["bare"]["0.0:20"]["warm"]["answered"] == 40
    assert "| run 1 | run 2 | median |" in proc.stdout
    assert "median" in proc.stdout.split("| target | verdict | measured |")[1]
