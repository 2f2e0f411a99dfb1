"""Sandbox start overhead for `true`, side by side in one run.

Each round runs, in turn: a plain subprocess (`subprocess.Popen(["true"]).wait()`), Outpost's `process`
backend, Outpost's `bwrap` backend (the full job as the worker gets it: a capped tmpfs workspace, a uid
from the pool, staged job files and scratch tmpfs, namespaces, launch handshake, kill, cleanup and
workspace removal), the same without parked launchers (bwrap started directly and moved into its
cgroup), and `srt -c true` (npm `@anthropic-ai/sandbox-runtime`). Each bwrap start follows a pause
(`--pause-ms`), and the two bwrap variants take turns going first.
Two times per run: from the start call (workspace creation included) to the exit of `true` (what a
dispatch waits for: the worker records the outcome before it cleans up; the target applies to it), and to
the end of cleanup (kill, cgroups, staged files, workspace removal). Rounds interleave the four, so that
machine noise falls on all of them alike. Needs root (the bwrap backend switches uid).

    .venv/bin/python bench/sandbox_start.py --rounds 200 --warmup 10

srt is installed into bench/.node with npm when missing, and its Debian prerequisites (ripgrep, socat)
with apt-get.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, publish, summarize, table

from outpost.sandbox.base import RequestedLimits, Sandbox, SandboxSpec, output_lines
from outpost.sandbox.bwrap import BwrapSandbox
from outpost.sandbox.cgroups import Limits
from outpost.sandbox.process import ProcessSandbox

SRT_PACKAGE = "@anthropic-ai/sandbox-runtime@0.0.83"
SRT = BENCH_DIR / ".node" / "node_modules" / ".bin" / "srt"
TARGET_P50_MS, TARGET_P99_MS = 30.0, 60.0


def ensure_srt() -> Path:
    """The srt launcher, installed first when missing (npm, plus ripgrep and socat from Debian)."""
    missing = [tool for tool in ("rg", "socat") if shutil.which(tool) is None]
    if missing:
        packages = ["ripgrep" if tool == "rg" else tool for tool in missing]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", *packages], env=env, check=True, stdout=sys.stderr)
    if not SRT.exists():
        prefix = BENCH_DIR / ".node"
        prefix.mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", SRT_PACKAGE], check=True
        )
    return SRT


def plain_subprocess() -> None:
    subprocess.run(["true"], check=True)


def srt_true() -> None:
    subprocess.run([str(SRT), "-c", "true"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def backend_runner(sandbox: Sandbox, base: Path) -> Callable[[int], Awaitable[float]]:
    """Runs `true` as the worker would; returns the perf_counter() time at which its exit was seen."""

    async def run_true(round_no: int) -> float:
        workdir = await sandbox.create_workspace(f"bench{round_no}", RequestedLimits())
        spec = SandboxSpec(run_id=f"bench{round_no}.1", argv=["/usr/bin/true"], env={}, workdir=workdir)
        run = await sandbox.start(spec)
        async for _ in output_lines(run):
            pass
        if await run.wait() != 0:
            raise RuntimeError(f"{sandbox.name}: true failed")
        exited = time.perf_counter()
        await run.kill()
        await sandbox.remove_workspace(workdir)
        return exited

    return run_true


async def measure(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    """Interleaved rounds of the four ways to run `true`, with data dirs under `base`."""
    process = backend_runner(ProcessSandbox(base / "p", 16384), base)
    limits = Limits(memory_bytes=2**30, pids_max=256, cpu_cores=1.0)
    parked = BwrapSandbox(base / "b", 16384, 500_000, 64, limits)  # the default: 2 parked launchers
    direct = BwrapSandbox(base / "d", 16384, 500_100, 64, limits, parked_launchers=0)
    bwrap, bwrap_direct = backend_runner(parked, base), backend_runner(direct, base)
    names = ("subprocess", "process", "bwrap", "bwrap, no parked launchers", "srt")
    to_exit: dict[str, list[float]] = {name: [] for name in names}
    to_cleanup: dict[str, list[float]] = {name: [] for name in names}
    bwraps = [("bwrap", bwrap), ("bwrap, no parked launchers", bwrap_direct)]
    for round_no in range(args.warmup + args.rounds):
        samples = {
            "subprocess": await _timed_sync(plain_subprocess),
            "process": await _timed(process, round_no),
            "srt": await _timed_sync(srt_true) if round_no % args.srt_every == 0 else None,
        }
        for name, runner in bwraps if round_no % 2 else reversed(bwraps):  # neither always goes first
            await asyncio.sleep(args.pause_ms / 1000)
            samples[name] = await _timed(runner, round_no)
        if round_no >= args.warmup:
            for name, value in samples.items():
                if value is not None:
                    to_exit[name].append(value[0])
                    to_cleanup[name].append(value[1])
    await parked.close()
    exit_stats = {name: summarize(values) for name, values in to_exit.items()}
    p50 = {name: stats["p50"] for name, stats in exit_stats.items()}
    ratios = {
        "bwrap / subprocess (p50, start to exit)": p50["bwrap"] / p50["subprocess"],
        "srt / bwrap (p50, start to exit)": p50["srt"] / p50["bwrap"],
        "bwrap / bwrap without parked launchers (p50, start to exit)": p50["bwrap"]
        / p50["bwrap, no parked launchers"],
    }
    met = exit_stats["bwrap"]["p50"] <= TARGET_P50_MS and exit_stats["bwrap"]["p99"] <= TARGET_P99_MS
    return {
        "parameters": vars(args),
        "start_to_exit_ms": exit_stats,
        "start_to_cleanup_ms": {name: summarize(values) for name, values in to_cleanup.items()},
        "ratios": ratios,
        "target_met": met,
    }


async def _timed(runner: Callable[[int], Awaitable[float]], round_no: int) -> tuple[float, float]:
    """(start to exit, start to end of cleanup) in ms."""
    started = time.perf_counter()
    exited = await runner(round_no)
    return (exited - started) * 1000, (time.perf_counter() - started) * 1000


async def _timed_sync(function: Callable[[], None]) -> tuple[float, float]:
    started = time.perf_counter()
    function()
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed, elapsed


def report(results: dict[str, Any]) -> str:
    lines = []
    for key, title in (
        ("start_to_exit_ms", "start to exit"),
        ("start_to_cleanup_ms", "start to end of cleanup"),
    ):
        rows = [[name, s["n"], s["p50"], s["p90"], s["p99"], s["max"]] for name, s in results[key].items()]
        lines += [f"`true`, {title} (ms)", "", table(["how", "n", "p50", "p90", "p99", "max"], rows), ""]
    lines += [f"{name}: {value:.1f}x" for name, value in results["ratios"].items()]
    verdict = "met" if results["target_met"] else "NOT met"
    target = f"target bwrap p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms (start to exit)"
    lines += ["", f"{target}: {verdict}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200, help="measured rounds (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first (default 10)")
    parser.add_argument("--srt-every", type=int, default=4, help="run srt every Nth round (it takes ~0.4 s)")
    parser.add_argument(
        "--pause-ms", type=float, default=100.0,
        help="pause before each bwrap start (default 100): spaced out as on a worker, not back to back",
    )  # fmt: skip
    parser.add_argument("--name", default="sandbox_start", help="results file name (no extension)")
    args = parser.parse_args(argv)
    ensure_srt()
    base = Path(tempfile.mkdtemp(prefix="outpost-bench-sandbox-"))
    try:
        results = asyncio.run(measure(args, base))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
