"""Sandboxes under load: many at once, and hostile neighbours.

1. `--many` sandboxes (default 100) running `sleep 30` at once on the bwrap backend: all must start;
   reports start time, host `true` latency meanwhile, and memory per sandbox (MemAvailable drop / N).
2. Host `true` latency (median of repeated `subprocess.run(["true"])`) idle, then while one sandbox runs
   a fork bomb and another a memory hog, each under its cgroup limits; the target is a ratio within 2x.

Needs root. `.venv/bin/python bench/sandbox_load.py --many 100`
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish, table

from outpost.sandbox.base import RequestedLimits, SandboxRun, SandboxSpec
from outpost.sandbox.bwrap import BwrapSandbox
from outpost.sandbox.cgroups import Limits

# The main shell stays: when a sandbox's command ends, the kernel kills its whole pid namespace.
FORK_BOMB = ":(){ :|:& };:; sleep 30"
# Over the limit again and again: the kernel's OOM killer is kept busy for the whole measurement.
MEMORY_HOG = "while :; do /usr/bin/python3 -c 'x = bytearray(400 * 2**20)'; done"


def host_true_ms(samples: int) -> float:
    """Median wall time of starting and reaping `true` on the host, in ms."""
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        subprocess.run(["true"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def mem_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


async def start(sandbox: BwrapSandbox, base: Path, name: str, script: str) -> SandboxRun:
    """A run as the worker makes it: in a capped tmpfs workspace of its own."""
    workdir = await sandbox.create_workspace(name, RequestedLimits())
    spec = SandboxSpec(run_id=name, argv=["/bin/bash", "-c", script], env={}, workdir=workdir)
    return await sandbox.start(spec)


async def many_at_once(sandbox: BwrapSandbox, base: Path, count: int, sandbox_uids: range) -> dict[str, Any]:
    before = mem_available_bytes()
    started = time.perf_counter()
    runs = [await start(sandbox, base, f"many{i}.1", "sleep 30") for i in range(count)]
    start_s = time.perf_counter() - started
    await asyncio.sleep(1)
    during = mem_available_bytes()
    true_ms = await asyncio.to_thread(host_true_ms, 50)
    alive = len(await asyncio.to_thread(sleepers, sandbox_uids))
    for run in runs:
        await run.kill()
    return {
        "sandboxes": count, "alive_after_1s": alive, "start_all_s": start_s,
        "memory_per_sandbox_mib": (before - during) / count / 2**20, "host_true_ms_meanwhile": true_ms,
    }  # fmt: skip


def sleepers(uids: range) -> list[int]:
    """Pids of `sleep 30` processes running as one of `uids`: the sandboxes that are really running."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if proc.stat().st_uid in uids and (proc / "cmdline").read_bytes() == b"sleep\x0030\x00":
                found.append(int(proc.name))
        except OSError:
            continue
    return found


async def hostile_neighbours(sandbox: BwrapSandbox, base: Path) -> dict[str, Any]:
    idle = await asyncio.to_thread(host_true_ms, 200)
    bomb = await start(sandbox, base, "bomb.1", FORK_BOMB)
    hog = await start(sandbox, base, "hog.1", MEMORY_HOG)
    await asyncio.sleep(2)  # both at full tilt: the bomb at its process limit, the hog being OOM-killed
    loaded = await asyncio.to_thread(host_true_ms, 200)
    limits = {"fork bomb": await bomb.limit_exceeded(), "memory hog": await hog.limit_exceeded()}
    for run in (bomb, hog):
        await run.kill()
    return {
        "host_true_idle_ms": idle,
        "host_true_loaded_ms": loaded,
        "ratio": loaded / idle,
        "limits_hit": limits,
    }


async def measure(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    limits = Limits(memory_bytes=256 * 2**20, pids_max=128, cpu_cores=1.0)
    first = 700_000 + random.randrange(100) * 1024
    sandbox = BwrapSandbox(base / "data", 16384, first, args.many + 16, limits)
    try:
        return {
            "many": await many_at_once(sandbox, base, args.many, range(first, first + args.many + 16)),
            "neighbours": await hostile_neighbours(sandbox, base),
        }
    finally:
        await sandbox.reap_leftovers()  # the workspaces' tmpfs mounts


def report(results: dict[str, Any]) -> str:
    many, hostile = results["many"], results["neighbours"]
    rows = [[key, value] for key, value in many.items()]
    lines = ["many sandboxes running `sleep 30`", table(["figure", "value"], rows), ""]
    rows = [[key, value] for key, value in hostile.items()]
    lines += [
        "host `true` latency with a fork bomb and a memory hog running",
        table(["figure", "value"], rows),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--many", type=int, default=100, help="sandboxes started at once (default 100)")
    parser.add_argument("--name", default="sandbox_load", help="results file name (no extension)")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="outpost-bench-load-"))
    try:
        results = asyncio.run(measure(args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
