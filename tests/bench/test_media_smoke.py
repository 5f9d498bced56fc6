"""A short smoke run of the media benchmark (``python -m bench.media --quick``): the bridge
answers a burst of texts and one of texts and photos, the fake served every photo's bytes, the
memory phase sampled the bridge's RSS, and the printed table has a figure in every row. The
benchmark itself is not part of the test suite; see docs/benchmarks.md."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import media
from tests.support.process import ROOT, child_env


@pytest.mark.slow
@pytest.mark.timeout(200)  # a guard against a hang, not a speed test
def test_quick_media_benchmark_answers_photos_and_samples_memory(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept\n", encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.media",
            "--quick",
            "--workdir",
            str(tmp_path / "work"),
            "--json",
            str(results),
            "--out",
            str(doc),
        ],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=190,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]

    data = json.loads(results.read_text())
    plan = data["plan"]
    (backend,) = data["backends"]
    run = data["backends"][backend]
    (a,) = run["A"]
    (b,) = run["B"]
    assert a["all"]["answered"] == a["all"]["messages"] == plan["chats"]
    assert a["photo"] is None
    photos = plan["chats"] // plan["photo_every"]
    assert b["photo"]["answered"] == b["photo"]["messages"] == photos
    assert b["text"]["answered"] == b["text"]["messages"] == plan["chats"] - photos
    # every photo's bytes were fetched from the fake before its answer
    assert b["fetches"]["asked"] == b["fetches"]["served"] == photos
    assert b["fetches"]["before_fetch"]["max"] > 0
    assert b["fetches"]["fetch_to_answer"]["p50"] > 0
    assert data["download"]["samples"] == plan["download_samples"]

    memory = run["memory"]
    assert memory["photos"] == memory["planned"] == plan["memory_photos"]
    assert memory["samples"] > 0
    assert 0 < memory["baseline"] <= memory["peak"]
    assert memory["big_answered"] == 1

    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|  |"))
    rows = [line for line in lines[start + 2 :] if line.startswith("|")]
    assert len(rows) + 2 <= 8  # docs/benchmarks.md gets a compact table
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert all(re.search(r"\d", c) for c in cells[1:]), row

    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n\nkept\n")
    assert text.count(media.BEGIN) == text.count(media.END) == 1
