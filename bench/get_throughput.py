"""GET /v1/dispatches/{id} throughput and latency under `wrk`, idle and with 50 dispatches running.

Phase "idle": no dispatch running; wrk reads one finished dispatch. Phase "busy": N dispatches running
`sleep 600` (worker slots raised to 64 so they all run); wrk reads one of them. Each phase is run at each
connection count given; every wrk run is preceded by a short unrecorded warm-up. All dispatches are
cancelled at the end. wrk (Debian package `wrk`) is installed with apt-get when missing.

    .venv/bin/python bench/get_throughput.py --connections 16 32 64 --duration 15 --threads 1
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, cancel_all, publish, submit, table, wait_for_status

TARGET_RPS = 1500.0
TARGET_P99_MS = 50.0
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION = re.compile(r"^([\d.]+)(us|ms|s|m|h)$")


def ensure_wrk() -> str:
    """The path of wrk, installing the Debian package first when it is missing (needs root)."""
    found = shutil.which("wrk")
    if found:
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    print("wrk is missing: installing it with apt-get", file=sys.stderr)
    if subprocess.run(install, env=env, check=False, stdout=sys.stderr).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, check=True, stdout=sys.stderr)
        subprocess.run(install, env=env, check=True, stdout=sys.stderr)
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still not on PATH after installing it")
    return found


def to_ms(text: str) -> float:
    """A wrk duration such as 812.00us, 3.21ms or 1.02s, in milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms), request and error counts from `wrk --latency` output."""
    result: dict[str, Any] = {"non_2xx": 0, "socket_errors": {}}
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("Requests/sec:"):
            result["requests_per_s"] = float(line.split()[1])
        elif line.startswith("Latency") and len(line.split()) >= 4 and "Distribution" not in line:
            _, avg, stdev, worst, *_ = line.split()
            result.update(avg_ms=to_ms(avg), stdev_ms=to_ms(stdev), max_ms=to_ms(worst))
        elif re.match(r"^\d+(\.\d+)?%\s+\S+$", line):
            pct, value = line.split()
            result[f"p{pct.rstrip('%').removesuffix('.000')}_ms"] = to_ms(value)
        elif " requests in " in line:
            result["requests"] = int(line.split()[0])
        elif line.startswith("Non-2xx or 3xx responses:"):
            result["non_2xx"] = int(line.split(":")[1])
        elif line.startswith("Socket errors:"):
            for part in line.split(":", 1)[1].split(","):
                kind, count = part.split()
                result["socket_errors"][kind] = int(count)
    if "requests_per_s" not in result or "p99_ms" not in result:
        raise RuntimeError(f"could not parse wrk's output:\n{output}")
    return result


def run_wrk(
    wrk: str, url: str, key: str, *, threads: int, connections: int, duration_s: int
) -> dict[str, Any]:
    command = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--latency",
        "-H", f"Authorization: Bearer {key}", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=duration_s + 60)
    parsed = parse_wrk(done.stdout)
    # Recorded without the key, the machine-specific wrk path and the run-specific dispatch id.
    shown = ["wrk", *command[1:]]
    shown[-2] = "Authorization: Bearer KEY"
    shown[-1] = url.rsplit("/", 1)[0] + "/ID"
    parsed["command"] = " ".join(f"'{arg}'" if " " in arg else arg for arg in shown)
    return parsed


def run_phase(
    args: argparse.Namespace, wrk: str, server: BenchServer, key: str, phase: str, dispatch_id: str
) -> list[dict[str, Any]]:
    url = f"{server.url}/v1/dispatches/{dispatch_id}"
    rows = []
    for connections in args.connections:
        if args.warmup > 0:
            run_wrk(wrk, url, key, threads=args.threads, connections=connections, duration_s=args.warmup)
        measured = run_wrk(
            wrk, url, key, threads=args.threads, connections=connections, duration_s=args.duration
        )
        measured.update(phase=phase, connections=connections, threads=args.threads)
        measured["target_met"] = (
            measured["requests_per_s"] >= TARGET_RPS
            and measured["p99_ms"] < TARGET_P99_MS
            and measured["non_2xx"] == 0
            and not any(measured["socket_errors"].values())
        )
        print(
            f"  {phase:5} c={connections:<3} {measured['requests_per_s']:8.1f} req/s  "
            f"p50 {measured['p50_ms']:.2f} ms  p99 {measured['p99_ms']:.2f} ms",
            file=sys.stderr,
        )
        rows.append(measured)
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    wrk = ensure_wrk()
    version = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    runs: list[dict[str, Any]] = []
    running: list[str] = []
    with BenchServer({"OUTPOST_WORKER__SLOTS": str(args.slots)}) as server:
        tenant = server.create_tenant("throughput")
        server.start()
        with server.client(tenant) as client:
            try:
                finished = submit(client, "echo hello world")["id"]
                wait_for_status(client, [finished], {"succeeded"})
                runs += run_phase(args, wrk, server, tenant.key, "idle", finished)
                running = [submit(client, f"sleep {args.sleep_s}")["id"] for _ in range(args.running)]
                wait_for_status(client, running, {"running"})
                runs += run_phase(args, wrk, server, tenant.key, "busy", running[0])
                still = sum(client.get(f"/v1/dispatches/{i}").json()["status"] == "running" for i in running)
                if still != len(running):
                    raise RuntimeError(f"only {still} of {len(running)} dispatches still ran after wrk")
            finally:
                cancelled = cancel_all(client, running)
                print(f"cancelled {cancelled} of {len(running)} running dispatches", file=sys.stderr)
    busy = [run for run in runs if run["phase"] == "busy"]
    return {
        "parameters": {
            "connections": args.connections,
            "threads": args.threads,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "running_dispatches": args.running,
            "worker_slots": args.slots,
        },
        "wrk_version": (version.stdout or version.stderr or "wrk").splitlines()[0].strip(),
        "runs": runs,
        "target": {
            "requests_per_s_at_least": TARGET_RPS,
            "p99_ms_below": TARGET_P99_MS,
            "met_with_dispatches_running": any(run["target_met"] for run in busy),
        },
    }


def report(results: dict[str, Any]) -> str:
    params = results["parameters"]
    rows = [
        [
            run["phase"], params["running_dispatches"] if run["phase"] == "busy" else 0,
            run["connections"], run["requests_per_s"], run["p50_ms"], run["p90_ms"], run["p99_ms"],
            run["max_ms"], run["non_2xx"] + sum(run["socket_errors"].values()),
            "yes" if run["target_met"] else "no",
        ]
        for run in results["runs"]
    ]  # fmt: skip
    met = results["target"]["met_with_dispatches_running"]
    return "\n".join(
        [
            f"GET /v1/dispatches/{{id}} under wrk ({params['threads']} thread(s), {params['duration_s']} s "
            f"per run, {results['wrk_version']})",
            "",
            table(
                [
                    "phase",
                    "running",
                    "conns",
                    "req/s",
                    "p50 ms",
                    "p90 ms",
                    "p99 ms",
                    "max ms",
                    "errors",
                    "target",
                ],
                rows,
            ),
            "",
            f"target >= {TARGET_RPS:.0f} req/s with p99 < {TARGET_P99_MS:.0f} ms while "
            f"{params['running_dispatches']} dispatches run: {'met' if met else 'NOT met'}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--connections", type=int, nargs="+", default=[16, 32, 64], help="wrk -c values")
    parser.add_argument("--threads", type=int, default=1, help="wrk -t (default 1)")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run (default 15)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded wrk seconds before each run")
    parser.add_argument("--running", type=int, default=50, help="dispatches running in the busy phase")
    parser.add_argument("--sleep-s", type=int, default=600, help="how long each busy dispatch sleeps")
    parser.add_argument("--slots", type=int, default=64, help="OUTPOST_WORKER__SLOTS (default 64)")
    parser.add_argument("--name", default="get_throughput", help="results file name (no extension)")
    args = parser.parse_args(argv)
    if args.running > args.slots:
        parser.error("--running must not exceed --slots (the rest would stay queued)")
    results = measure(args)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
