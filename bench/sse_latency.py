"""How fast a line printed inside a sandbox reaches a client following the dispatch's event stream.

Each run submits a `shell` dispatch whose script prints `--lines` lines, one every `--interval-ms`, each
holding its own CLOCK_MONOTONIC and wall-clock time at the moment it is written, and follows
GET /v1/dispatches/{id}/events from the first event over one keep-alive connection. For every line the
client takes receive time minus print time on the same host clock; the server's event timestamp
(`created_at`, taken when the event is written) splits that into print -> stored and stored -> received.
Runs are sequential, against a real `outpost serve` subprocess.

    .venv/bin/python bench/sse_latency.py --runs 3 --lines 200 --interval-ms 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, publish, summarize, table

MARK = "sse-bench"
TARGET_P50_MS = 10.0
TARGET_P99_MS = 25.0
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
# Runs inside the sandbox: the timestamps are taken right before the line is written and flushed.
PRINTER = (
    "import sys, time\n"
    "for i in range({lines}):\n"
    "    sys.stdout.write(f'" + MARK + " {{i}} {{time.monotonic():.6f}} {{time.time():.6f}}\\n')\n"
    "    sys.stdout.flush()\n"
    "    time.sleep({interval_s})\n"
)


@dataclass
class Sample:
    total_ms: float
    to_store_ms: float
    from_store_ms: float


def task(lines: int, interval_ms: float) -> str:
    script = PRINTER.format(lines=lines, interval_s=interval_ms / 1000)
    return f"exec python3 -c {shlex.quote(script)}"


def follow(client: httpx.Client, dispatch_id: str) -> tuple[list[Sample], int]:
    """Read the stream to its end; the samples of our lines, and how many events arrived."""
    samples: list[Sample] = []
    events = 0
    with client.stream("GET", f"/v1/dispatches/{dispatch_id}/events", timeout=120) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            received, received_wall = time.monotonic(), time.time()
            events += 1
            event = json.loads(line[6:])
            sample = _sample(event, received, received_wall)
            if sample is not None:
                samples.append(sample)
            elif event["kind"] == "status" and event["data"]["status"] in TERMINAL - {"succeeded"}:
                raise RuntimeError(f"dispatch {dispatch_id} ended {event['data']} after {events} events")
            elif event["kind"] == "log" and event["data"]["stream"] == "stderr":
                print(f"stderr: {event['data']['line']}", file=sys.stderr)
    return samples, events


def _sample(event: dict[str, Any], received: float, received_wall: float) -> Sample | None:
    if event["kind"] != "log" or not event["data"]["line"].startswith(MARK):
        return None
    _, _, printed, printed_wall = event["data"]["line"].split()
    stored_wall = datetime.fromisoformat(event["created_at"]).timestamp()
    return Sample(
        total_ms=(received - float(printed)) * 1000,
        to_store_ms=(stored_wall - float(printed_wall)) * 1000,
        from_store_ms=(received_wall - stored_wall) * 1000,
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {"OUTPOST_SANDBOX__BACKEND": args.backend}
    if args.flush_ms is not None:
        env["OUTPOST_WORKER__LOG_FLUSH_MS"] = str(args.flush_ms)
    samples: list[Sample] = []
    with BenchServer(env) as server:
        tenant = server.create_tenant("sse-latency")
        server.start()
        with server.client(tenant) as client:
            for _ in range(args.runs):
                response = client.post(
                    "/v1/dispatches", json={"agent": "shell", "task": task(args.lines, args.interval_ms)}
                )
                response.raise_for_status()
                got, _ = follow(client, response.json()["id"])
                if len(got) != args.lines:
                    raise RuntimeError(f"expected {args.lines} lines on the stream, got {len(got)}")
                samples += got[args.skip :]
    total = summarize([s.total_ms for s in samples])
    return {
        "parameters": {
            "runs": args.runs, "lines_per_run": args.lines, "skipped_per_run": args.skip,
            "interval_ms": args.interval_ms, "sandbox_backend": args.backend,
            "log_flush_ms": args.flush_ms,
        },
        "print_to_client_ms": total,
        "print_to_stored_ms": summarize([s.to_store_ms for s in samples]),
        "stored_to_client_ms": summarize([s.from_store_ms for s in samples]),
        "target": {
            "p50_ms_at_most": TARGET_P50_MS, "p99_ms_at_most": TARGET_P99_MS,
            "met": total["p50"] <= TARGET_P50_MS and total["p99"] <= TARGET_P99_MS,
        },
    }  # fmt: skip


def report(results: dict[str, Any]) -> str:
    params = results["parameters"]
    rows = [
        [name, s["n"], s["p50"], s["p90"], s["p99"], s["max"], s["mean"]]
        for name, s in (
            ("print -> client (monotonic)", results["print_to_client_ms"]),
            ("print -> stored (wall clock)", results["print_to_stored_ms"]),
            ("stored -> client (wall clock)", results["stored_to_client_ms"]),
        )
    ]
    target = results["target"]
    return "\n".join([
        f"SSE latency: {params['runs']} runs x {params['lines_per_run']} lines every "
        f"{params['interval_ms']} ms in the {params['sandbox_backend']} sandbox "
        f"(first {params['skipped_per_run']} of each run skipped)",
        "",
        table(["ms", "n", "p50", "p90", "p99", "max", "mean"], rows),
        "",
        f"target p50 <= {TARGET_P50_MS:.0f} ms, p99 <= {TARGET_P99_MS:.0f} ms: "
        + ("met" if target["met"] else "NOT met"),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="dispatches, one after another (default 3)")
    parser.add_argument("--lines", type=int, default=200, help="lines each dispatch prints (default 200)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between two lines (default 20)")
    parser.add_argument("--skip", type=int, default=0, help="first lines of each run left out (default 0)")
    parser.add_argument(
        "--backend", choices=["bwrap", "process"], default="bwrap", help="sandbox backend (default bwrap)"
    )
    parser.add_argument(
        "--flush-ms", type=int, default=None, help="OUTPOST_WORKER__LOG_FLUSH_MS (default: the server's)"
    )
    parser.add_argument("--name", default="sse_latency", help="results file name (no extension)")
    args = parser.parse_args(argv)
    results = measure(args)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
