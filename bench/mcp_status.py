"""MCP `outpost_status` round trips over streamable HTTP (`/mcp`) against a real `outpost serve`.

One MCP client (the SDK's own) makes `--runs` sequential `outpost_status` calls for one finished dispatch
on one connection, after `--warmup` unrecorded calls; each call is timed from the client's call to its
validated result. Measured per protocol mode: `auto` (the client negotiates the newest protocol, one
self-contained POST per call) and `legacy` (the initialize handshake of 2025-11-25). For scale, the same
dispatch is also read with `GET /v1/dispatches/{id}` from an async HTTP client on one connection.

    .venv/bin/python bench/mcp_status.py --runs 1000 --warmup 50
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, publish, submit, summarize, table, wait_for_status

TARGET_P50_MS = 10.0


async def time_calls(call: Callable[[], Awaitable[None]], runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of `runs` sequential calls, after `warmup` unrecorded ones."""
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def measure_mcp(url: str, key: str, dispatch_id: str, mode: str, runs: int, warmup: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http), mode=mode) as client,
    ):
        await client.list_tools()  # the client validates results against the listed output schema

        async def status() -> None:
            result = await client.call_tool("outpost_status", {"dispatch_id": dispatch_id})
            if result.is_error or (result.structured_content or {}).get("id") != dispatch_id:
                raise RuntimeError(f"outpost_status failed: {result.structured_content}")

        return await time_calls(status, runs, warmup)


async def measure_rest(url: str, key: str, dispatch_id: str, runs: int, warmup: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def get() -> None:
            (await http.get(f"/v1/dispatches/{dispatch_id}")).raise_for_status()

        return await time_calls(get, runs, warmup)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with BenchServer() as server:
        tenant = server.create_tenant("mcp-status")
        server.start()
        with server.client(tenant) as client:
            dispatch_id = submit(client, "echo hello")["id"]
            wait_for_status(client, [dispatch_id], {"succeeded"})
        for mode in args.modes:
            samples = anyio.run(
                measure_mcp, server.url, tenant.key, dispatch_id, mode, args.runs, args.warmup
            )
            rows.append({"call": f"MCP outpost_status ({mode})", **summarize(samples)})
            print(f"  {rows[-1]['call']}: p50 {rows[-1]['p50']:.2f} ms", file=sys.stderr)
        samples = anyio.run(measure_rest, server.url, tenant.key, dispatch_id, args.runs, args.warmup)
        rows.append({"call": "REST GET /v1/dispatches/{id}", **summarize(samples)})
    met = all(row["p50"] <= TARGET_P50_MS for row in rows if row["call"].startswith("MCP"))
    return {
        "parameters": {"runs": args.runs, "warmup": args.warmup, "modes": args.modes},
        "rows": rows,
        "target": {"p50_ms_at_most": TARGET_P50_MS, "met": met},
    }


def report(results: dict[str, Any]) -> str:
    params = results["parameters"]
    rows = [[row["call"], row["n"], row["mean"], row["p50"], row["p90"], row["p99"], row["max"]]
            for row in results["rows"]]  # fmt: skip
    met = results["target"]["met"]
    return "\n".join([
        f"Round trips in ms: {params['runs']} sequential calls each, on one connection, after "
        f"{params['warmup']} unrecorded ones",
        "",
        table(["call", "n", "mean", "p50", "p90", "p99", "max"], rows),
        "",
        f"target: MCP outpost_status p50 <= {TARGET_P50_MS:.0f} ms: {'met' if met else 'NOT met'}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000, help="recorded calls per mode (default 1000)")
    parser.add_argument("--warmup", type=int, default=50, help="unrecorded calls first (default 50)")
    parser.add_argument("--modes", nargs="+", default=["auto", "legacy"], choices=["auto", "legacy"])
    parser.add_argument("--name", default="mcp_status", help="results file name (no extension)")
    args = parser.parse_args(argv)
    results = measure(args)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
