"""Dispatches on a large git repository, end to end through `outpost serve` and the bwrap sandbox.

The repository is `workspace_checkout`'s generated one (20,000 files, ~200 MB of history; cached across
runs), offered over `file://` (`OUTPOST_GIT__ALLOW_LOCAL=true`). One tenant; dispatches run one at a
time. Each round, interleaved:
1. a `shell` dispatch of `true` on the repository at `main` (ephemeral workspace, no changes);
2. the same with a task that appends a line to 1,000 files (the artifacts event must say 1,000 changed)
   and then prints one line, whose log event marks the end of the task;
3. `git clone -q file://...` of the same repository into a temp dir (on /dev/shm when writable);
4. a `true` dispatch in a persistent workspace (no repository) that holds 20,000 small files, made by
   one untimed dispatch before the first round.
The figures come from the server's own event timestamps: provisioning -> running is the workspace made
ready (mirror resolve and checkout, or the copy into the run's tmpfs), running -> the `artifacts` event is
the run and the capture, the last event before `artifacts` -> `artifacts` isolates the capture when the
task printed a line at its end; POST -> terminal status is the client's. The first dispatch fetches the
mirror (reported on its own); the warm-up rounds follow, then the benchmark waits until the mirror's
background recompression is done (its packs all marked `.keep`), so that measured rounds do not overlap it.

    .venv/bin/python bench/repo_dispatch.py --runs 10 --warmup 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, publish, summarize
from workspace_checkout import cached_origin, verdict

TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
TARGET_READY_P50_MS, TARGET_CAPTURE_P50_MS = 300.0, 500.0
CHANGED_FILES = 1000
EDIT_TASK = (
    f"n=0; for f in $(ls src/d00*/f*.txt | head -{CHANGED_FILES}); do echo x >> $f; n=$((n+1)); done; "
    "echo edited $n"
)
SETTLE_TIMEOUT_S = 600.0


def fill_task(files: int) -> str:
    """Creates `files` (a multiple of 100) small files in directories of 100, and prints their count."""
    return (
        f"for d in $(seq -w 0 {files // 100 - 1}); do mkdir d$d; for f in $(seq -w 0 99); do "
        f'echo "$d $f" > d$d/f$f.txt; done; done; find . -type f | wc -l'
    )


@dataclass(frozen=True)
class Timings:
    """One dispatch's figures, in ms (server event timestamps unless said otherwise)."""

    ready_ms: float
    """provisioning -> running."""
    to_artifacts_ms: float
    """running -> the artifacts event."""
    capture_ms: float
    """the event just before the artifacts event -> the artifacts event."""
    to_terminal_ms: float
    """running -> the terminal status event."""
    total_ms: float
    """the client's POST -> the client seeing the terminal status."""
    artifacts: dict[str, Any]


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run_dispatch(client: httpx.Client, body: dict[str, Any], poll_s: float, timeout_s: float) -> Timings:
    """POST the dispatch, poll it to a terminal status (RuntimeError with the failure detail unless it
    succeeded), and read its figures from its events."""
    started = time.perf_counter()
    response = client.post("/v1/dispatches", json=body)
    if response.status_code != 202:
        raise RuntimeError(f"POST /v1/dispatches answered {response.status_code}: {response.text}")
    dispatch_id = response.json()["id"]
    while (dispatch := client.get(f"/v1/dispatches/{dispatch_id}").json())["status"] not in TERMINAL:
        if time.perf_counter() - started > timeout_s:
            raise RuntimeError(f"dispatch {dispatch_id} still {dispatch['status']} after {timeout_s} s")
        time.sleep(poll_s)
    total_ms = (time.perf_counter() - started) * 1000
    if dispatch["status"] != "succeeded":
        raise RuntimeError(f"dispatch {dispatch_id} ended {dispatch['status']}: {dispatch['failure']}")
    events = client.get(f"/v1/dispatches/{dispatch_id}/logs", params={"limit": 1000}).json()["items"]
    return _timings(dispatch_id, events, total_ms)


def _timings(dispatch_id: str, events: list[dict[str, Any]], total_ms: float) -> Timings:
    times = {e["data"]["status"]: _timestamp(e["created_at"]) for e in events if e["kind"] == "status"}
    found = [i for i, event in enumerate(events) if event["kind"] == "artifacts"]
    if len(found) != 1 or found[0] == 0:
        raise RuntimeError(f"dispatch {dispatch_id}: expected one artifacts event, got {len(found)}")
    artifacts, before = events[found[0]], events[found[0] - 1]
    at = _timestamp(artifacts["created_at"])
    return Timings(
        ready_ms=(times["running"] - times["provisioning"]) * 1000,
        to_artifacts_ms=(at - times["running"]) * 1000,
        capture_ms=(at - _timestamp(before["created_at"])) * 1000,
        to_terminal_ms=(times["succeeded"] - times["running"]) * 1000,
        total_ms=total_ms,
        artifacts=artifacts["data"],
    )


def expect_changed(timings: Timings, count: int, what: str) -> None:
    changed = timings.artifacts.get("files_changed")
    if changed != count or timings.artifacts.get("warnings"):
        raise RuntimeError(f"{what}: artifacts event {timings.artifacts}, expected {count} files changed")


def clone_ms(url: str, work: Path) -> float:
    target = Path(tempfile.mkdtemp(prefix="clone-", dir=work))
    started = time.perf_counter()
    subprocess.run(["git", "clone", "-q", url, str(target / "repo")], check=True)
    elapsed = (time.perf_counter() - started) * 1000
    shutil.rmtree(target)
    return elapsed


def wait_for_mirrors(mirrors: Path) -> float:
    """Wait until every mirror's packs are all recompressed (`.keep`), twice in a row 0.5 s apart;
    returns the seconds waited."""
    started = time.monotonic()
    settled_once = False
    while time.monotonic() - started < SETTLE_TIMEOUT_S:
        packs = list(mirrors.glob("*/objects/pack/pack-*.pack"))
        settled = bool(packs) and all(pack.with_suffix(".keep").exists() for pack in packs)
        if settled and settled_once:
            return time.monotonic() - started
        settled_once = settled
        time.sleep(0.5)
    raise RuntimeError(f"the mirror's packs were not all recompressed after {SETTLE_TIMEOUT_S:.0f} s")


class Rounds:
    """The dispatches of one round, with the samples they add."""

    def __init__(self, client: httpx.Client, args: argparse.Namespace, url: str, work: Path) -> None:
        self.client, self.args, self.url, self.work = client, args, url, work
        self.repo = {"url": url, "ref": "main"}
        self.persistent = {"mode": "persistent", "name": "bench-files"}
        self.samples: dict[str, list[Timings]] = {"repo_unchanged": [], "repo_changed": [], "persistent": []}
        self.clones_ms: list[float] = []

    def dispatch(self, task: str, **extra: Any) -> Timings:
        body = {"agent": "shell", "task": task, **extra}
        return run_dispatch(self.client, body, self.args.poll_ms / 1000, self.args.timeout_s)

    def fill_persistent(self) -> Timings:
        filled = self.dispatch(fill_task(self.args.persistent_files), workspace=self.persistent)
        expect_changed(filled, self.args.persistent_files, "filling the persistent workspace")
        return filled

    def one(self, measured: bool) -> None:
        unchanged = self.dispatch("true", repo=self.repo)
        expect_changed(unchanged, 0, "`true` on the repository")
        changed = self.dispatch(EDIT_TASK, repo=self.repo)
        expect_changed(changed, CHANGED_FILES, "the edit task")
        cloned = clone_ms(self.url, self.work)
        persistent = self.dispatch("true", workspace=self.persistent)
        expect_changed(persistent, 0, "`true` in the persistent workspace")
        if measured:
            self.samples["repo_unchanged"].append(unchanged)
            self.samples["repo_changed"].append(changed)
            self.samples["persistent"].append(persistent)
            self.clones_ms.append(cloned)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    origin = cached_origin(args.cache_dir, args.files, args.history_mb)
    url = f"file://{origin}"
    env = {"OUTPOST_GIT__ALLOW_LOCAL": "true", "OUTPOST_SANDBOX__DISK_MB": str(args.disk_mb)}
    with BenchServer(env) as server:
        tenant = server.create_tenant("repo-dispatch")
        server.start()
        with server.client(tenant, timeout_s=60.0) as client:
            rounds = Rounds(client, args, url, work)
            first = rounds.dispatch("true", repo=rounds.repo)
            filled = rounds.fill_persistent()
            for _ in range(args.warmup):
                rounds.one(measured=False)
            settle_s = wait_for_mirrors(server.data_dir / "mirrors")
            for _ in range(args.runs):
                rounds.one(measured=True)
    return summarize_rounds(rounds, first, filled, settle_s)


def _figures(samples: list[Timings]) -> dict[str, dict[str, float]]:
    fields = ("ready_ms", "to_artifacts_ms", "capture_ms", "to_terminal_ms", "total_ms")
    return {name: summarize([getattr(t, name) for t in samples]) for name in fields}


def summarize_rounds(rounds: Rounds, first: Timings, filled: Timings, settle_s: float) -> dict[str, Any]:
    figures = {key: _figures(samples) for key, samples in rounds.samples.items()}
    clone = summarize(rounds.clones_ms)
    ready = figures["repo_unchanged"]["ready_ms"]["p50"]
    capture = figures["repo_changed"]["capture_ms"]["p50"]
    return {
        "figures_ms": figures,
        "git_clone_file_url_ms": clone,
        "clone_over_workspace_ready_p50": clone["p50"] / ready,
        "first_dispatch_ready_ms": first.ready_ms,
        "persistent_fill_ms": {"ready": filled.ready_ms, "running_to_terminal": filled.to_terminal_ms},
        "mirror_recompression_wait_s": settle_s,
        "samples_ms": {
            key: [[round(t.ready_ms, 1), round(t.to_artifacts_ms, 1), round(t.total_ms, 1)] for t in samples]
            for key, samples in rounds.samples.items()
        },
        "targets": {
            "workspace_ready_p50_ms_at_most": TARGET_READY_P50_MS,
            "workspace_ready_met": ready <= TARGET_READY_P50_MS,
            "capture_1000_changed_p50_ms_at_most": TARGET_CAPTURE_P50_MS,
            "capture_1000_changed_met": capture <= TARGET_CAPTURE_P50_MS,
        },
    }


def report(args: argparse.Namespace, results: dict[str, Any], work: Path) -> str:
    fig = results["figures_ms"]
    unchanged, changed, persistent = fig["repo_unchanged"], fig["repo_changed"], fig["persistent"]
    rows = [
        ("repo, no changes: provisioning -> running (workspace ready)", unchanged["ready_ms"]),
        ("repo, no changes: running -> artifacts (run `true`, capture)", unchanged["to_artifacts_ms"]),
        ("repo, no changes: POST -> succeeded (client)", unchanged["total_ms"]),
        ("repo, 1,000 changed: provisioning -> running", changed["ready_ms"]),
        ("repo, 1,000 changed: running -> artifacts (task, capture)", changed["to_artifacts_ms"]),
        ("repo, 1,000 changed: last log line -> artifacts (capture)", changed["capture_ms"]),
        ("repo, 1,000 changed: POST -> succeeded (client)", changed["total_ms"]),
        ("`git clone -q file://` of the same repository", results["git_clone_file_url_ms"]),
        (f"persistent, {args.persistent_files} files: provisioning -> running", persistent["ready_ms"]),
        ("persistent: running -> succeeded (run, capture, copy back)", persistent["to_terminal_ms"]),
        ("persistent: POST -> succeeded (client)", persistent["total_ms"]),
    ]
    first_ms = results["first_dispatch_ready_ms"]
    fill_ms = results["persistent_fill_ms"]["running_to_terminal"]
    ready, capture = unchanged["ready_ms"]["p50"], changed["capture_ms"]["p50"]
    lines = [
        f"{args.files} files, ~{args.history_mb} MB of history; bwrap sandbox; {args.runs} rounds after "
        f"{args.warmup} warm-up; clones on {work.parent}",
        "",
        "| figure | p50 ms | p90 ms | n |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {s['p50']:.0f} | {s['p90']:.0f} | {s['n']} |" for label, s in rows),
        "",
        f"clone / workspace ready (p50): {results['clone_over_workspace_ready_p50']:.1f}x",
        f"first dispatch (fetch into a new mirror): provisioning -> running {first_ms:.0f} ms; waited "
        f"{results['mirror_recompression_wait_s']:.1f} s after the warm-up for the mirror's recompression",
        f"filling the persistent workspace: running -> succeeded {fill_ms:.0f} ms",
        f"targets: workspace ready p50 <= {TARGET_READY_P50_MS:.0f} ms: "
        f"{verdict(ready, TARGET_READY_P50_MS)}; capture of {CHANGED_FILES} changed files p50 <= "
        f"{TARGET_CAPTURE_P50_MS:.0f} ms: "
        f"{verdict(capture, TARGET_CAPTURE_P50_MS)}",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="measured rounds (default 10)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    parser.add_argument("--files", type=int, default=20_000, help="files in the repository")
    parser.add_argument("--history-mb", type=int, default=200, help="size of the repository's history")
    parser.add_argument(
        "--persistent-files",
        type=int,
        default=20_000,
        help="files in the persistent workspace (a multiple of 100)",
    )
    parser.add_argument("--disk-mb", type=int, default=2048, help="OUTPOST_SANDBOX__DISK_MB (default 2048)")
    parser.add_argument("--poll-ms", type=float, default=5.0, help="sleep between polls (default 5)")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="give up on one dispatch after this")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "outpost-bench-git")
    parser.add_argument("--name", default="repo_dispatch", help="results file name (no extension)")
    args = parser.parse_args()
    if args.persistent_files < 100 or args.persistent_files % 100:
        parser.error("--persistent-files must be a positive multiple of 100")
    shm = Path("/dev/shm")  # noqa: S108 - a tmpfs, like runs' workspaces; mkdtemp makes a private dir in it
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="outpost-bench-clone-", dir=base))
    try:
        results = measure(args, work)
        sizes = {
            "files": args.files,
            "history_mb": args.history_mb,
            "persistent_files": args.persistent_files,
        }
        parameters = {
            "runs": args.runs,
            "warmup": args.warmup,
            "disk_mb": args.disk_mb,
            "poll_ms": args.poll_ms,
        }
        publish(args.name, {**sizes, "parameters": parameters, **results}, report(args, results, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
