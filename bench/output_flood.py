"""How fast the worker reads and drops a run's output once the log budget is spent.

A host process floods its stdout; the worker's own output path (line splitting, batching, the agent
parser, the recorder past its budget) reads it to the end. Two floods: a gigabyte of 1,000-byte lines,
and millions of one-character lines (the worst case: all per-line cost, no bytes).

    .venv/bin/python bench/output_flood.py --tiny-mb 20 --long-mb 1000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import publish, table

from outpost.agents.parsers.shell import ShellOutputParser
from outpost.sandbox.base import OutputBatch
from outpost.sandbox.streams import merged_lines
from outpost.worker.output_reader import record_output
from outpost.worker.run_report import RunReport

MAX_LINE_BYTES = 16 * 1024


class _SpentRecorder:
    """A recorder whose budget is spent: it drops everything, as the real one does past its notice."""

    def add(self, batch: OutputBatch) -> None:
        pass

    def add_event(self, kind: str, data: dict[str, object]) -> None:
        pass


class _HostRun:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process

    def output(self) -> Any:
        assert self._process.stdout is not None
        assert self._process.stderr is not None
        return merged_lines(self._process.stdout, self._process.stderr, MAX_LINE_BYTES)


async def flood(script: str, line_bytes: int, total_bytes: int) -> dict[str, float]:
    process = await asyncio.create_subprocess_shell(
        script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    started = time.perf_counter()
    await record_output(_HostRun(process), _SpentRecorder(), RunReport(ShellOutputParser()))  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    await process.wait()
    lines = total_bytes // line_bytes
    return {
        "lines": lines,
        "seconds": elapsed,
        "us_per_line": elapsed / lines * 1e6,
        "mb_per_s": total_bytes / elapsed / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-mb", type=int, default=20, help="Megabytes of one-character lines.")
    parser.add_argument("--long-mb", type=int, default=1000, help="Megabytes of 1,000-byte lines.")
    args = parser.parse_args()
    tiny, long = args.tiny_mb * 10**6, args.long_mb * 10**6
    results = {
        "tiny_lines": asyncio.run(flood(f"yes | head -c {tiny}", 2, tiny)),
        "long_lines": asyncio.run(
            flood(f'yes "$(head -c 999 /dev/zero | tr "\\0" x)" | head -c {long}', 1000, long)
        ),
    }
    rows = [
        (name, int(r["lines"]), r["seconds"], r["us_per_line"], r["mb_per_s"]) for name, r in results.items()
    ]
    publish("output_flood", results, table(("flood", "lines", "s", "us/line", "MB/s"), rows))


if __name__ == "__main__":
    main()
