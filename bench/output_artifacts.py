"""Keeping a run's outputs directory as artifacts: the listing (no link followed) and the streaming of each
file into the filesystem object store, per scenario.

Scenarios (the outputs directory is on /dev/shm when writable, like runs' workspaces; the object store in
the temp dir, like a data dir):
- `100 x 1 MiB`: the default file count, each file streamed in 1 MiB chunks;
- `10000 tiny`: far more files than the cap: the walk stops at the 100th;
- `hostile`: 1,000 symlinks and 1,000 FIFOs beside 10 files: each left out with a (capped) warning.
No database: the artifact rows RunResults writes afterwards are the same few inserts for any scenario.

    .venv/bin/python bench/output_artifacts.py --runs 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish, summarize, table

from outpost.storage.filesystem import FilesystemObjectStore
from outpost.worker.run_outputs import OutputLimits, RunOutputs, reset_outputs_dir

PREFIX = "tenants/bench/dispatches/bench/"
MIB = 1024 * 1024


def _large_files(outputs: Path) -> None:
    block = os.urandom(MIB)
    for index in range(100):
        (outputs / f"d{index // 10}").mkdir(exist_ok=True)
        (outputs / f"d{index // 10}" / f"f{index:03}.bin").write_bytes(block)


def _tiny_files(outputs: Path) -> None:
    for index in range(10_000):
        (outputs / f"t{index:05}.txt").write_bytes(b"x\n")


def _hostile(outputs: Path) -> None:
    for index in range(1000):
        (outputs / f"link{index:04}").symlink_to("/etc/passwd")
        os.mkfifo(outputs / f"fifo{index:04}")
    for index in range(10):
        (outputs / f"ok{index}.txt").write_bytes(b"ok\n")


SCENARIOS: dict[str, Callable[[Path], None]] = {
    "100 x 1 MiB": _large_files,
    "10000 tiny": _tiny_files,
    "hostile": _hostile,
}


async def keep_once(workdir: Path, store: FilesystemObjectStore) -> tuple[float, float, int, int]:
    """Listing ms, storing ms, files kept, bytes kept."""
    started = time.perf_counter()
    outputs = RunOutputs.open(workdir)
    assert outputs is not None
    try:
        listing = await asyncio.to_thread(outputs.listing, OutputLimits(), PREFIX)
        listed = time.perf_counter()
        for file in listing.files:
            async with contextlib.aclosing(outputs.chunks(file)) as chunks:
                await store.put(PREFIX + file.name, chunks, file.content_type)
    finally:
        outputs.close()
    stored = time.perf_counter()
    kept_bytes = sum(file.size_bytes for file in listing.files)
    return (listed - started) * 1000, (stored - listed) * 1000, len(listing.files), kept_bytes


async def measure(args: argparse.Namespace, work: Path, objects: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, fill in SCENARIOS.items():
        workdir = work / name.replace(" ", "_")
        workdir.mkdir()
        reset_outputs_dir(workdir)
        fill(workdir / ".outpost" / "outputs")
        store = FilesystemObjectStore(objects / workdir.name)
        listing_ms, storing_ms, totals = [], [], []
        for run in range(args.warmup + args.runs):
            listed, stored, files, size = await keep_once(workdir, store)
            if run >= args.warmup:
                listing_ms.append(listed)
                storing_ms.append(stored)
                totals.append(listed + stored)
        results[name] = {
            "files_kept": files, "bytes_kept": size, "listing_ms": summarize(listing_ms),
            "storing_ms": summarize(storing_ms), "total_ms": summarize(totals),
        }  # fmt: skip
    return results


def report(results: dict[str, Any], work: Path) -> str:
    rows = []
    for name, found in results.items():
        total = found["total_ms"]
        mib_s = found["bytes_kept"] / MIB / (total["p50"] / 1000) if found["bytes_kept"] else float("nan")
        rows.append([name, found["files_kept"], found["listing_ms"]["p50"], found["storing_ms"]["p50"],
                     total["p50"], total["p90"], total["p99"], mib_s])  # fmt: skip
    headers = ["scenario", "kept", "list p50", "store p50", "total p50", "p90", "p99", "MiB/s"]
    return f"outputs on {work.parent}; times in ms\n" + table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args()
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs, like runs' workspaces; mkdtemp makes a private dir in it
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="outpost-bench-outputs-", dir=base))
    objects = Path(tempfile.mkdtemp(prefix="outpost-bench-objects-"))
    try:
        results = asyncio.run(measure(args, work, objects))
        publish("output_artifacts", results, report(results, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(objects, ignore_errors=True)


if __name__ == "__main__":
    main()
