"""End-to-end dispatch latency: POST a `shell` dispatch, poll it until `succeeded`, check its log.

Each run: POST /v1/dispatches {agent: shell, task: "echo hello world"}, then GET /v1/dispatches/{id} in a
tight loop (one keep-alive client, a short sleep between polls) until the status is `succeeded`; the time
from before the POST to seeing `succeeded` is the run's latency. Then GET /v1/dispatches/{id}/logs must
hold a `log` event whose line is "hello world". Runs are sequential, after a few warm-up runs.

The breakdown uses the server's own event timestamps (created_at of queued, provisioning, running, the
first log line and succeeded), so it shows where the time goes inside the server.

    .venv/bin/python bench/dispatch_latency.py --runs 200 --warmup 10 --poll-ms 1
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, percentile, publish, summarize, table

TASK = "echo hello world"
EXPECTED_LINE = "hello world"
TARGET_P50_MS = 50.0
# Names of the breakdown steps, in order, with the events that bound them.
STEPS = (
    ("queued->provisioning", "queued", "provisioning"),
    ("provisioning->running", "provisioning", "running"),
    ("running->first log", "running", "log"),
    ("first log->succeeded", "log", "succeeded"),
    ("queued->succeeded", "queued", "succeeded"),
)


@dataclass
class Run:
    total_ms: float
    post_ms: float
    polls: int
    steps_ms: dict[str, float]
    seen_after_ms: float
    """From the server's `succeeded` event to the client seeing it (same host clock)."""


def _timestamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _event_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """created_at of each status event by status, and of the first log line under "log"."""
    times: dict[str, float] = {}
    for event in events:
        if event["kind"] == "status":
            times.setdefault(event["data"]["status"], _timestamp(event["created_at"]))
        elif event["kind"] == "log":
            times.setdefault("log", _timestamp(event["created_at"]))
    return times


def one_run(client: httpx.Client, poll_s: float, timeout_s: float) -> Run:
    started = time.perf_counter()
    response = client.post("/v1/dispatches", json={"agent": "shell", "task": TASK})
    posted = time.perf_counter()
    response.raise_for_status()
    dispatch_id = response.json()["id"]
    polls = 0
    deadline = started + timeout_s
    while True:
        status = client.get(f"/v1/dispatches/{dispatch_id}").json()["status"]
        polls += 1
        if status == "succeeded":
            break
        if status in {"failed", "timed_out", "cancelled"}:
            detail = client.get(f"/v1/dispatches/{dispatch_id}").json().get("failure")
            raise RuntimeError(f"dispatch {dispatch_id} ended {status}: {detail}")
        if time.perf_counter() > deadline:
            raise RuntimeError(f"dispatch {dispatch_id} still {status} after {timeout_s} s")
        if poll_s > 0:
            time.sleep(poll_s)
    done = time.perf_counter()
    seen_wall = time.time()
    events = client.get(f"/v1/dispatches/{dispatch_id}/logs").json()["items"]
    lines = [e["data"].get("line") for e in events if e["kind"] == "log"]
    if EXPECTED_LINE not in lines:
        raise RuntimeError(f"dispatch {dispatch_id}: {EXPECTED_LINE!r} not in its log lines {lines!r}")
    times = _event_times(events)
    steps = {name: (times[end] - times[begin]) * 1000 for name, begin, end in STEPS}
    return Run(
        total_ms=(done - started) * 1000,
        post_ms=(posted - started) * 1000,
        polls=polls,
        steps_ms=steps,
        seen_after_ms=(seen_wall - times["succeeded"]) * 1000,
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {"OUTPOST_WORKER__SLOTS": str(args.slots), "OUTPOST_SANDBOX__BACKEND": args.backend}
    with BenchServer(env) as server:
        tenant = server.create_tenant("latency")
        server.start()
        with server.client(tenant) as client:
            for _ in range(args.warmup):
                one_run(client, args.poll_ms / 1000, args.timeout_s)
            runs = [one_run(client, args.poll_ms / 1000, args.timeout_s) for _ in range(args.runs)]
    totals = [run.total_ms for run in runs]
    breakdown = {
        name: {"p50": percentile(values, 50), "p90": percentile(values, 90)}
        for name, values in (
            ("client: POST round trip", [r.post_ms for r in runs]),
            *((name, [r.steps_ms[name] for r in runs]) for name, _, _ in STEPS),
            ("succeeded event->client saw it", [r.seen_after_ms for r in runs]),
        )
    }
    end_to_end = summarize(totals)
    return {
        "parameters": {
            "runs": args.runs,
            "warmup": args.warmup,
            "poll_ms": args.poll_ms,
            "worker_slots": args.slots,
            "sandbox_backend": args.backend,
            "task": TASK,
        },
        "end_to_end_ms": end_to_end,
        "end_to_end_samples_ms": [round(value, 3) for value in totals],
        "polls_per_run": summarize([float(run.polls) for run in runs]),
        "breakdown_ms": breakdown,
        "target": {"p50_ms_below": TARGET_P50_MS, "met": end_to_end["p50"] < TARGET_P50_MS},
    }


def report(results: dict[str, Any]) -> str:
    e2e = results["end_to_end_ms"]
    polls = results["polls_per_run"]
    params = results["parameters"]
    lines = [
        f"dispatch latency: {params['runs']} sequential runs of shell {TASK!r} in the "
        f"{params['sandbox_backend']} sandbox (after {params['warmup']} warm-ups, polling every "
        f"{params['poll_ms']} ms)",
        "",
        table(
            ["metric", "p50", "p90", "p99", "max", "mean"],
            [
                ["end-to-end ms", e2e["p50"], e2e["p90"], e2e["p99"], e2e["max"], e2e["mean"]],
                ["polls per run", polls["p50"], polls["p90"], polls["p99"], polls["max"], polls["mean"]],
            ],
        ),
        "",
        "where the time goes (server event timestamps; ms):",
        table(
            ["step", "p50", "p90"],
            [[name, v["p50"], v["p90"]] for name, v in results["breakdown_ms"].items()],
        ),
        "",
        f"target p50 < {TARGET_P50_MS:.0f} ms: {'met' if results['target']['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="measured runs (default 200)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured runs first (default 10)")
    parser.add_argument("--poll-ms", type=float, default=1.0, help="sleep between polls (default 1)")
    parser.add_argument("--slots", type=int, default=8, help="OUTPOST_WORKER__SLOTS (default 8)")
    parser.add_argument(
        "--backend", choices=["bwrap", "process"], default="bwrap", help="sandbox backend (default bwrap)"
    )
    parser.add_argument("--timeout-s", type=float, default=30.0, help="give up on one run after this")
    parser.add_argument("--name", default="dispatch_latency", help="results file name (no extension)")
    args = parser.parse_args(argv)
    results = measure(args)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
