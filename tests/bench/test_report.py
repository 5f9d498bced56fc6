"""bench.report on made-up results: the share of the bare forwarder per run of
``bench.run --repeat``, and the 60% target judged on their median; ``--out`` rewriting only the
generated section; docs/benchmarks.md itself (its markers, its size, the headings code comments
and the README point to); and the fakes' reset between two processes of one system."""

from __future__ import annotations

import asyncio
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from bench import report
from bench.fakes import BenchTelegram
from bench.run import Plan
from bench.workloads import AnswerBoard
from tests.support.paths import ROOT

TOKEN = "123456:bench-report-test"
DOC = ROOT / "docs" / "benchmarks.md"


def _cell(first: float, warm: float) -> dict[str, Any]:
    return {
        "first": {"throughput": first, "complete": True},
        "warm": {"throughput": warm, "complete": True},
    }


def _results(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "plan": {**asdict(Plan.full()), "latencies": [0.0, 1.0], "chats": [100]},
        "systems": ["bridge-sqlite", "bare"],
        "throughput": {
            # the first run: 50% first contact, 70% warm; the 1 s row is no part of the rounds
            "bridge-sqlite": {"0.0:100": _cell(100, 700), "1.0:100": _cell(40, 80)},
            "bare": {"0.0:100": _cell(200, 1000), "1.0:100": _cell(45, 90)},
        },
        "latency": {},
        "slack": {},
        "rss": {},
        "rounds": rounds,
    }


def _verdicts(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        target.split(":")[0].rsplit(", ", 1)[1]: (verdict, evidence)
        for target, verdict, evidence in report.targets(results)
        if "bare forwarder" in target
    }


def test_each_round_is_compared_with_its_own_bare_forwarder() -> None:
    results = _results(
        [
            {"bridge-sqlite": {"0.0:100": _cell(130, 500)}, "bare": {"0.0:100": _cell(200, 1000)}},
            # a slow round: everything at half speed, the ratio unchanged
            {"bridge-sqlite": {"0.0:100": _cell(65, 250)}, "bare": {"0.0:100": _cell(100, 500)}},
        ]
    )
    shares = report.share_of_bare(results)
    assert shares[("bridge-sqlite", "0.0:100", "first")] == [0.5, 0.65, 0.65]
    assert shares[("bridge-sqlite", "0.0:100", "warm")] == [0.7, 0.5, 0.5]
    assert shares[("bridge-sqlite", "1.0:100", "warm")] == [80 / 90]

    verdicts = _verdicts(results)
    # The first run alone would say missed (50%) and met (70%); the median of three says
    # the opposite for both.
    assert verdicts["first"][0] == "met"
    assert verdicts["first"][1].startswith("median 65% of 3 runs (range 50%–65%)")
    assert verdicts["warm"][0] == "missed"
    assert "the first run 70% (700 vs 1,000 msg/s)" in verdicts["warm"][1]

    table = report.rounds_table(results)
    assert "| Parloa 0 s, 100 chats, first contact | bridge, SQLite | 50% | 65% | 65% |" in table
    assert "**65%**" in table
    assert "Parloa 1 s" not in table  # only the latency-0 rows are repeated
    assert "### Share of the bare forwarder, run by run" in report.markdown(
        {**results, "started": "now", "duration_seconds": 1.0, "machine": {}, "command": "x"}
    )


def test_a_single_run_is_judged_as_before() -> None:
    results = _results([])
    assert report.rounds_table(results) == ""
    verdicts = _verdicts(results)
    assert verdicts["first"] == ("missed", "50% (100 vs 200 msg/s)")
    assert verdicts["warm"] == ("met", "70% (700 vs 1,000 msg/s)")


def test_a_round_whose_bare_forwarder_did_not_finish_is_left_out() -> None:
    results = _results(
        [{"bridge-sqlite": {"0.0:100": _cell(130, 500)}, "bare": {"0.0:100": {"first": None}}}]
    )
    shares = report.share_of_bare(results)
    assert shares[("bridge-sqlite", "0.0:100", "first")] == [0.5]
    assert _verdicts(results)["first"] == ("missed", "50% (100 vs 200 msg/s)")


async def test_reset_ends_a_long_poll_whose_client_went_away() -> None:
    """A system started after another process of its token: the server notices the old
    process's long poll is gone only when it answers it. Left waiting, it passed for the new
    process's poll (Fakes.wait_polling) and took the first update pushed, lost with it."""
    board = AnswerBoard()
    async with BenchTelegram(board, tokens=[TOKEN]) as tg:
        client = aiohttp.ClientSession(trust_env=False)
        poll = asyncio.create_task(
            client.post(f"{tg.api_root}/bot{TOKEN}/getUpdates", json={"timeout": 30})
        )
        await tg.wait_for(lambda: tg.is_polling(TOKEN) or None)
        poll.cancel()  # the process is killed: its connection closes
        await client.close()
        await asyncio.sleep(0.05)
        assert tg.is_polling(TOKEN)  # the server has not noticed

        tg.reset(TOKEN)
        assert not tg.is_polling(TOKEN)
        tg.push_update(tg.private_text(1, "hello"), TOKEN)
        async with (
            aiohttp.ClientSession(trust_env=False) as fresh,
            fresh.post(f"{tg.api_root}/bot{TOKEN}/getUpdates", json={"timeout": 5}) as resp,
        ):
            body = await resp.json()
        assert [u["message"]["text"] for u in body["result"]] == ["hello"]


def test_the_one_chat_rows_name_the_send_budget_that_holds_them() -> None:
    results = _results([])
    results["plan"]["chats"] = [1, 100]
    for system in ("bridge-sqlite", "bare"):
        results["throughput"][system]["0.0:1"] = _cell(30, 30 if system != "bare" else 300)
    results["chat_messages_per_second"] = 30
    evidence = {
        target.split(",")[1].strip(): found
        for target, _verdict, found in report.targets(results)
        if "bare forwarder" in target and ", warm" in target
    }
    assert "per-chat send budget, 30 messages/s" in evidence["1 chats"]
    assert "budget" not in evidence["100 chats"]


def _made_up_run() -> dict[str, Any]:
    return {
        **_results([]),
        "started": "now",
        "duration_seconds": 1.0,
        "machine": {},
        "command": "x",
    }


def test_out_rewrites_only_the_generated_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(
        f"# Benchmarks\n\nmethod, kept\n\n{report.BEGIN}\nan old run\n{report.END}\n\n"
        "## Still missed, and why\n\nkept too\n",
        encoding="utf-8",
    )
    report.write_markdown(doc, _made_up_run())
    text = doc.read_text(encoding="utf-8")
    assert "an old run" not in text
    assert text.startswith("# Benchmarks\n\nmethod, kept\n\n" + report.BEGIN)
    assert text.endswith(report.END + "\n\n## Still missed, and why\n\nkept too\n")
    assert "| target | verdict | measured |" in text
    assert text.count(report.BEGIN) == text.count(report.END) == 1


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _headings() -> set[str]:
    return {
        line.lstrip("#").strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }


def test_the_document_keeps_its_markers_and_stays_short() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert text.count(report.BEGIN) == text.count(report.END) == 1
    assert text.index(report.BEGIN) < text.index(report.END)
    assert len(text.splitlines()) < 250  # the history of rounds lives in git


def test_references_to_the_document_name_its_headings() -> None:
    """Code comments cite a section as ``docs/benchmarks.md, "Heading"`` (the quote may wrap
    onto the next comment or docstring line); links elsewhere use its anchor."""
    headings = _headings()
    anchors = {_slug(h) for h in headings}
    cited: list[tuple[str, str]] = []
    for folder in ("bridge", "adapters", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            # one line per comment or docstring paragraph, whatever its wrapping
            flat = re.sub(r"\s*\n\s*(?:#\s*)?", " ", path.read_text(encoding="utf-8"))
            cited += [(str(path), h) for h in re.findall(r'docs/benchmarks\.md, "([^"]+)"', flat)]
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        text = path.read_text(encoding="utf-8")
        cited += [(str(path), a) for a in re.findall(r"benchmarks\.md#([\w-]+)", text)]
        cited += [(str(path), a) for a in re.findall(r"\]\(#([\w-]+)\)", text) if path == DOC]
    assert cited, "nothing cites the document: the pattern above no longer matches"
    missing = [(where, name) for where, name in cited if name not in headings | anchors]
    assert not missing, missing
