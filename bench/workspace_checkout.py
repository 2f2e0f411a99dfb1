"""Preparing a workspace from a repository, and capturing its changes, side by side in one run.

The repository is generated deterministically (cached across runs): one commit of `--files` text files
(about 2 KB each), then 99 commits each changing 20 of them and rewriting a random binary, for about
`--history-mb` of history. It is mirrored once through `MirrorCache` (a file:// remote) and left to the
mirror's background recompression. Rounds then interleave:
- Outpost's checkout from the warm mirror (uncompressed, the default), and from a mirror kept as
  fetched (zlib-compressed packs, `uncompressed_mirrors=False`);
- `git clone` of the same repository: over `file://` (a full pack transfer, what a clone costs without
  the network) and from its path (git's local clone: objects hardlinked, only the checkout is left).
Then diff capture of `--changed` files edited in a checked-out workspace, with the checkout's stat data
intact and with every file's stat data stale (what a chown of the workspace does before a run).
Workspaces go to /dev/shm when it is writable (runs' workspaces are tmpfs), else the temp dir.

    .venv/bin/python bench/workspace_checkout.py --runs 20 --warmup 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import publish, summarize

from outpost.workspaces.capture import capture_changes
from outpost.workspaces.checkout import Baseline, checkout
from outpost.workspaces.git import Git
from outpost.workspaces.index_stat import restamp_index
from outpost.workspaces.mirrors import MirrorCache, ResolvedRef
from outpost.workspaces.settings import GitSettings

COMMITS = 100
CHANGED_PER_COMMIT = 20
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta")
TARGET_CHECKOUT_P50_MS, TARGET_CAPTURE_P50_MS = 300.0, 500.0
RUN_PAUSE_S = 1.1


def _text(rng: random.Random) -> bytes:
    lines = (" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(30))
    return ("\n".join(lines) + "\n").encode()


def _file_name(index: int) -> bytes:
    return b"src/d%03d/f%05d.txt" % (index // 100, index)


def build_origin(path: Path, files: int, history_mb: int) -> None:
    """A bare repository at `path`, the same bytes for the same arguments."""
    rng = random.Random(20_000)
    blob_bytes = history_mb * 1024 * 1024 // COMMITS
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    importer = subprocess.Popen(["git", "--git-dir", str(path), "fast-import", "--quiet", "--done"],
                                stdin=subprocess.PIPE)  # fmt: skip
    assert importer.stdin is not None
    write = importer.stdin.write
    for number in range(COMMITS):
        write(
            b"commit refs/heads/main\ncommitter Bench <bench@example.org> %d +0000\n"
            % (1_700_000_000 + number)
        )
        write(b"data 10\ncommit %03d\n" % number)
        changed = range(files) if number == 0 else (rng.randrange(files) for _ in range(CHANGED_PER_COMMIT))
        for index in changed:
            data = _text(rng)
            write(b"M 644 inline %s\ndata %d\n%s\n" % (_file_name(index), len(data), data))
        data = rng.randbytes(blob_bytes)
        write(b"M 644 inline assets/blob.bin\ndata %d\n%s\n" % (len(data), data))
    write(b"done\n")
    importer.stdin.close()
    if importer.wait() != 0:
        raise RuntimeError("git fast-import failed")
    subprocess.run(["git", "--git-dir", str(path), "symbolic-ref", "HEAD", "refs/heads/main"], check=True)
    subprocess.run(["git", "--git-dir", str(path), "repack", "-a", "-d", "-q"], check=True)


def cached_origin(cache_dir: Path, files: int, history_mb: int) -> Path:
    origin = cache_dir / f"origin-{files}-files-{history_mb}-mb-v1.git"
    if not (origin / "outpost-bench-complete").exists():
        shutil.rmtree(origin, ignore_errors=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"generating {origin} (once; cached for later runs)...", file=sys.stderr)
        build_origin(origin, files, history_mb)
        (origin / "outpost-bench-complete").touch()
    return origin


class Bench:
    def __init__(self, work: Path, origin: Path) -> None:
        self.work = work
        self.origin = origin
        self._count = 0

    def fresh(self, name: str) -> Path:
        self._count += 1
        path = self.work / f"{name}-{self._count}"
        path.mkdir()
        return path

    async def checked_out(self, git: Git, resolved: ResolvedRef) -> tuple[Baseline, Path]:
        workdir = self.fresh("ws")
        return await checkout(git, resolved, workdir, self.work / f"private-{self._count}"), workdir

    async def checkout_ms(self, git: Git, resolved: ResolvedRef) -> float:
        """One checkout into a fresh directory, timed, then deleted."""
        elapsed, (baseline, workdir) = await _timed(self.checked_out(git, resolved))
        self.discard(workdir, baseline.git_dir)
        return float(elapsed)

    def clone_ms(self, source: str) -> float:
        target = self.work / f"clone-{self._count + 1}"
        self._count += 1
        started = time.perf_counter()
        subprocess.run(["git", "clone", "-q", source, str(target)], check=True)
        elapsed = (time.perf_counter() - started) * 1000
        shutil.rmtree(target)
        return elapsed

    def discard(self, *paths: Path) -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)


async def _timed(action: Awaitable[Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = await action
    return (time.perf_counter() - started) * 1000, result


async def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    origin = cached_origin(args.cache_dir, args.files, args.history_mb)
    url = f"file://{origin}"
    bench = Bench(work, origin)
    fast = Git(GitSettings(allow_local=True), work / "home")
    as_fetched = Git(GitSettings(allow_local=True, uncompressed_mirrors=False), work / "home")
    fast_cache = MirrorCache(work / "mirrors", fast)
    plain_cache = MirrorCache(work / "mirrors-plain", as_fetched)
    first_ms, resolved = await _timed(fast_cache.resolve(url, "main", None, scope="bench"))
    settle_ms, _ = await _timed(fast_cache.settle())
    plain = await plain_cache.resolve(url, "main", None, scope="bench")
    warm_ms = [(await _timed(fast_cache.resolve(url, "main", None, scope="bench")))[0] for _ in range(5)]
    samples: dict[str, list[float]] = {"checkout": [], "checkout_compressed": [], "clone_file_url": [],
                                       "clone_local_path": []}  # fmt: skip
    for round_number in range(args.warmup + args.runs):
        ours_ms = await bench.checkout_ms(fast, resolved)
        compressed_ms = await bench.checkout_ms(as_fetched, plain)
        if round_number >= args.warmup:
            samples["checkout"].append(ours_ms)
            samples["checkout_compressed"].append(compressed_ms)
        if 0 <= round_number - args.warmup < args.clone_runs:
            samples["clone_file_url"].append(bench.clone_ms(url))
            samples["clone_local_path"].append(bench.clone_ms(str(origin)))
    samples |= await measure_capture(args, bench, fast, resolved)
    await fast_cache.close()
    await plain_cache.close()
    summaries = {key: summarize(values) for key, values in samples.items()}
    return {"first_resolve_ms": first_ms, "recompress_ms": settle_ms, "warm_resolve_ms": summarize(warm_ms),
            **summaries}  # fmt: skip


async def measure_capture(
    args: argparse.Namespace, bench: Bench, git: Git, resolved: ResolvedRef
) -> dict[str, list[float]]:
    """Capture after editing `--changed` files, with the checkout's stat data intact, and with every
    file's ctime new. A pause after the checkout stands for the run: git re-reads files whose mtime is
    in the same second as its index ("racily clean"), which no real run is short enough to hit."""
    samples: dict[str, list[float]] = {
        "capture": [], "capture_stale_stat": [], "capture_restamped": [], "restamp": []
    }  # fmt: skip
    step = max(1, args.files // args.changed)
    for round_number in range(args.warmup + args.runs):
        cases = ("capture", "capture_stale_stat", "capture_restamped")
        workspaces = {key: await bench.checked_out(git, resolved) for key in cases}
        await asyncio.sleep(RUN_PAUSE_S)
        for key, (baseline, workdir) in workspaces.items():
            if key != "capture":
                for path in (workdir / "src").rglob("*.txt"):
                    path.chmod(0o644)  # a new ctime for every file, as the chown before a run gives
            if key == "capture_restamped":
                restamp_ms, _ = await _timed(asyncio.to_thread(restamp_index, baseline.index_path, workdir))
                if round_number >= args.warmup:
                    samples["restamp"].append(restamp_ms)
            for index in range(0, step * args.changed, step):
                with (workdir / os.fsdecode(_file_name(index))).open("a") as edited:
                    edited.write("changed by the benchmark\n")
            out_dir = bench.fresh("out")
            elapsed, changes = await _timed(capture_changes(git, baseline, workdir, out_dir))
            if len(changes.files) != args.changed:
                raise RuntimeError(f"captured {len(changes.files)} changed files, expected {args.changed}")
            if round_number >= args.warmup:
                samples[key].append(elapsed)
            bench.discard(workdir, baseline.git_dir, out_dir)
    return samples


def report(args: argparse.Namespace, results: dict[str, Any], work: Path) -> str:
    ours = results["checkout"]["p50"]
    rows = [
        ("checkout from the warm mirror (uncompressed)", results["checkout"]),
        ("checkout from a mirror kept as fetched (zlib)", results["checkout_compressed"]),
        ("`git clone file://` (pack transfer)", results["clone_file_url"]),
        ("`git clone <path>` (local, hardlinks)", results["clone_local_path"]),
        (f"capture, {args.changed} files changed", results["capture"]),
        (f"capture, {args.changed} changed, every ctime new (chown)", results["capture_stale_stat"]),
        (f"capture, {args.changed} changed, ctime new, index re-stamped", results["capture_restamped"]),
        ("re-stamping the index after the chown", results["restamp"]),
        ("resolve a branch, warm mirror (a fetch)", results["warm_resolve_ms"]),
    ]
    lines = [
        f"{args.files} files, ~{args.history_mb} MB of history; workspaces on {work.parent}",
        "",
        "| operation | p50 ms | p90 ms | n | p50 / our checkout p50 |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, stats in rows:
        ratio = stats["p50"] / ours
        lines.append(f"| {label} | {stats['p50']:.0f} | {stats['p90']:.0f} | {stats['n']} | {ratio:.1f}x |")
    capture = results["capture"]["p50"]
    lines += [
        "",
        f"first resolve (a full fetch into a new mirror): {results['first_resolve_ms']:.0f} ms; "
        f"recompression after it (background): {results['recompress_ms']:.0f} ms",
        f"targets: checkout p50 <= {TARGET_CHECKOUT_P50_MS:.0f} ms: "
        f"{verdict(ours, TARGET_CHECKOUT_P50_MS)}; capture p50 <= {TARGET_CAPTURE_P50_MS:.0f} ms: "
        f"{verdict(capture, TARGET_CAPTURE_P50_MS)}",
    ]
    return "\n".join(lines)


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--clone-runs", type=int, default=5, help="clones per kind (each copies the repository)"
    )
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--history-mb", type=int, default=200)
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "outpost-bench-git")
    args = parser.parse_args()
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs, like runs' workspaces; mkdtemp makes a private dir in it
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="outpost-bench-ws-", dir=base))
    try:
        results = asyncio.run(measure(args, work))
        sizes = {"files": args.files, "history_mb": args.history_mb, "changed": args.changed}
        publish("workspace_checkout", {**sizes, **results}, report(args, results, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
