"""How fast `outpost logs ID --follow` shows a line printed inside a sandbox, and what a short dispatch costs
end to end with `outpost dispatch --wait`, `--follow` and `--follow --json`.

Latency: each run submits a `shell` dispatch whose script waits START_DELAY_S, then prints `--lines`
lines, one every `--interval-ms`, each holding its CLOCK_MONOTONIC time at the moment it is written, and
starts `outpost logs ID --follow` (human output, or `--json`) as a subprocess at once; for every line the
benchmark takes the time it read the line from the CLI's stdout minus the print time, on the same host
clock. That holds the event's write, the stream, the CLI's SSE parsing and rendering, and the pipe.
End to end: the wall time of a whole `outpost dispatch … 'echo hi'` process, from exec to exit.
Runs are sequential, against a real `outpost serve` subprocess.

    .venv/bin/python bench/cli_follow.py --runs 3 --lines 100 --interval-ms 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUTPOST, BenchServer, Tenant, publish, summarize, table

MARK = "follow-bench"
# The first line waits for the follower to start (a CLI process takes a few hundred ms to import and
# connect): lines printed before it is connected would measure its start, not the stream.
PRINTER = (
    "import sys, time\n"
    "time.sleep({start_delay_s})\n"
    "for i in range({lines}):\n"
    "    sys.stdout.write(f'" + MARK + " {{i}} {{time.monotonic():.6f}}\\n')\n"
    "    sys.stdout.flush()\n"
    "    time.sleep({interval_s})\n"
)
START_DELAY_S = 1.5
END_TO_END = {"--wait": ["--wait"], "--follow": ["--follow"], "--follow --json": ["--follow", "--json"]}


def task(lines: int, interval_ms: float) -> str:
    script = PRINTER.format(lines=lines, interval_s=interval_ms / 1000, start_delay_s=START_DELAY_S)
    return f"exec python3 -c {shlex.quote(script)}"


def cli_env(server: BenchServer, tenant: Tenant) -> dict[str, str]:
    return {**server.env, "OUTPOST_URL": server.url, "OUTPOST_API_KEY": tenant.key}


def follow_latencies(server: BenchServer, tenant: Tenant, dispatch_id: str, as_json: bool) -> list[float]:
    """Milliseconds from each marked line's print to the follower's stdout, in order."""
    argv = [*OUTPOST, "logs", dispatch_id, "--follow", *(["--json"] if as_json else [])]
    with tempfile.TemporaryFile("w+") as errors:
        follower = subprocess.Popen(
            argv, env=cli_env(server, tenant), stdout=subprocess.PIPE, stderr=errors, text=True
        )
        assert follower.stdout is not None
        samples = []
        for line in follower.stdout:
            received = time.monotonic()
            text = str(json.loads(line)["data"].get("line", "")) if as_json else line
            if text.startswith(MARK):
                samples.append((received - float(text.split()[2])) * 1000)
        follower.wait(60)
        errors.seek(0)
        said = errors.read()[-2000:]
    if follower.returncode != 0:
        raise RuntimeError(f"outpost logs --follow exited with {follower.returncode}: {said}")
    return samples


def end_to_end_s(server: BenchServer, tenant: Tenant, options: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [*OUTPOST, "dispatch", "--agent", "shell", *options, "echo hi"],
        env=cli_env(server, tenant), capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return time.perf_counter() - started


def measure(args: argparse.Namespace) -> dict[str, Any]:
    latency: dict[str, list[float]] = {"human": [], "json": []}
    whole: dict[str, list[float]] = {name: [] for name in END_TO_END}
    with BenchServer({"OUTPOST_SANDBOX__BACKEND": args.backend}) as server:
        tenant = server.create_tenant("cli-follow")
        server.start()
        with server.client(tenant) as client:
            for _ in range(args.runs):
                for mode in latency:
                    body = {"agent": "shell", "task": task(args.lines, args.interval_ms)}
                    response = client.post("/v1/dispatches", json=body)
                    response.raise_for_status()
                    dispatch_id = response.json()["id"]
                    got = follow_latencies(server, tenant, dispatch_id, mode == "json")
                    if len(got) != args.lines:
                        ended = client.get(f"/v1/dispatches/{dispatch_id}").json()
                        raise RuntimeError(
                            f"expected {args.lines} lines from the CLI, got {len(got)}; the dispatch is "
                            f"{ended['status']} ({ended['failure']})"
                        )
                    latency[mode] += got
                for name, options in END_TO_END.items():
                    whole[name].append(end_to_end_s(server, tenant, options) * 1000)
    return {
        "parameters": {
            "runs": args.runs, "lines_per_run": args.lines, "interval_ms": args.interval_ms,
            "sandbox_backend": args.backend,
        },
        "print_to_cli_stdout_ms": {mode: summarize(values) for mode, values in latency.items()},
        "dispatch_echo_end_to_end_ms": {name: summarize(values) for name, values in whole.items()},
    }  # fmt: skip


def report(results: dict[str, Any]) -> str:
    params = results["parameters"]
    headers = ["ms", "n", "p50", "p90", "p99", "max"]
    latency = [
        [f"print -> `logs --follow{' --json' if mode == 'json' else ''}` stdout", *_figures(s)]
        for mode, s in results["print_to_cli_stdout_ms"].items()
    ]
    whole = [
        [f"`dispatch {name} 'echo hi'`", *_figures(s)]
        for name, s in results["dispatch_echo_end_to_end_ms"].items()
    ]
    return "\n".join([
        f"CLI follow: {params['runs']} runs x {params['lines_per_run']} lines every "
        f"{params['interval_ms']} ms in the {params['sandbox_backend']} sandbox",
        "",
        table(headers, latency),
        "",
        table(headers, whole),
    ])  # fmt: skip


def _figures(summary: dict[str, float]) -> list[Any]:
    return [summary["n"], summary["p50"], summary["p90"], summary["p99"], summary["max"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="rounds, one after another (default 3)")
    parser.add_argument("--lines", type=int, default=100, help="lines each dispatch prints (default 100)")
    parser.add_argument("--interval-ms", type=float, default=20.0, help="between two lines (default 20)")
    parser.add_argument(
        "--backend", choices=["bwrap", "process"], default="bwrap", help="sandbox backend (default bwrap)"
    )
    args = parser.parse_args(argv)
    results = measure(args)
    publish("cli_follow", results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
