"""Event streams under fan-out: many SSE clients following many running dispatches on one server.

`--dispatches` shell dispatches (default 50) each wait `--start-delay-s`, then print `--lines` lines, one
every `--interval-ms`, each holding its CLOCK_MONOTONIC time at the moment it is written.
`--clients-per-dispatch` clients (default 10: 500 in all) follow each dispatch's
GET /v1/dispatches/{id}/events from its first event, over plain asyncio connections (HTTP/1.1, chunked),
spread over `--client-procs` processes. Every client checks that it received every event exactly once and
in order (sequence numbers 1, 2, ... up to the terminal status event, as many as the dispatch's /logs
page holds) and measures, for each line, receive time minus print time. The server's resident memory
(VmRSS) is sampled throughout; its CPU time is read at the start and the end.

    .venv/bin/python bench/sse_fanout.py --dispatches 50 --clients-per-dispatch 10 --lines 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, Tenant, publish, summarize, table

MARK = "fanout"
TARGET_P99_MS = 100.0
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}
PRINTER = (
    "import sys, time\n"
    "time.sleep({delay_s})\n"
    "for i in range({lines}):\n"
    "    sys.stdout.write(f'" + MARK + " {{i}} {{time.monotonic():.6f}} {{time.time():.6f}}\\n')\n"
    "    sys.stdout.flush()\n"
    "    time.sleep({interval_s})\n"
)


@dataclass
class Followed:
    """What one client saw of one dispatch."""

    dispatch_id: str
    seqs_ok: bool = True
    """Every event arrived once, in order, with no gap."""
    last_seq: int = 0
    ended: bool = False
    final: dict[str, Any] | None = None
    """The terminal status event's data."""
    latencies_ms: list[float] = field(default_factory=list)
    to_store_ms: list[float] = field(default_factory=list)
    """Print -> the server's event timestamp (wall clock): the worker's share."""
    from_store_ms: list[float] = field(default_factory=list)
    """The server's event timestamp -> received (wall clock): the streams' (and this client's) share."""
    error: str | None = None


def task(args: argparse.Namespace) -> str:
    script = PRINTER.format(delay_s=args.start_delay_s, lines=args.lines, interval_s=args.interval_ms / 1000)
    return f"exec python3 -c {shlex.quote(script)}"


async def follow(port: int, key: str, dispatch_id: str) -> Followed:
    """One client: GET the stream, then read chunked SSE to its end."""
    seen = Followed(dispatch_id)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        writer.write(
            f"GET /v1/dispatches/{dispatch_id}/events HTTP/1.1\r\nHost: bench\r\n"
            f"Authorization: Bearer {key}\r\nConnection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode())
        pending = b""
        while chunk := await _next_chunk(reader):
            pending += chunk
            *blocks, pending = pending.split(b"\n\n")
            now, now_wall = time.monotonic(), time.time()
            for block in blocks:
                _take(seen, block, now, now_wall)
        writer.close()
    except (OSError, RuntimeError, asyncio.IncompleteReadError, ValueError) as exc:
        seen.error = f"{type(exc).__name__}: {exc}"
    return seen


async def _next_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
    data = await reader.readexactly(size + 2)
    return data[:-2]


def _take(seen: Followed, block: bytes, now: float, now_wall: float) -> None:
    fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if line and not line.startswith(b":"))
    if b"id" not in fields:
        if fields:  # an event without an id: `resume` (this client fell behind)
            seen.error = f"got {fields.get(b'event', b'?').decode()} {fields.get(b'data', b'').decode()}"
        return
    seq = int(fields[b"id"])
    if seq != seen.last_seq + 1:
        seen.seqs_ok = False
    seen.last_seq = seq
    event = orjson.loads(fields[b"data"])
    if event["kind"] == "log" and event["data"]["line"].startswith(MARK):
        _, _, printed, printed_wall = event["data"]["line"].split()
        stored_wall = datetime.fromisoformat(event["created_at"]).timestamp()
        seen.latencies_ms.append((now - float(printed)) * 1000)
        seen.to_store_ms.append((stored_wall - float(printed_wall)) * 1000)
        seen.from_store_ms.append((now_wall - stored_wall) * 1000)
    elif event["kind"] == "status" and event["data"]["status"] in TERMINAL:
        seen.ended, seen.final = True, event["data"]


def client_process(port: int, key: str, dispatch_ids: list[str], connect_spread_s: float) -> list[Followed]:
    """Run in a child process: follow each of `dispatch_ids` (one client each), return what they saw."""

    async def run_all() -> list[Followed]:
        async def one(index: int, dispatch_id: str) -> Followed:
            await asyncio.sleep(connect_spread_s * index / max(1, len(dispatch_ids)))
            return await follow(port, key, dispatch_id)

        return list(await asyncio.gather(*(one(i, d) for i, d in enumerate(dispatch_ids))))

    try:
        import uvloop  # noqa: PLC0415 - the client side is faster on it when it is there

        return uvloop.run(run_all())
    except ImportError:
        return asyncio.run(run_all())


class ServerSampler:
    """Samples the server process's VmRSS every `every_s` in a thread, and its CPU time on demand."""

    def __init__(self, pid: int, every_s: float = 0.25) -> None:
        self._status = Path(f"/proc/{pid}/status")
        self._stat = Path(f"/proc/{pid}/stat")
        self._every_s = every_s
        self.rss_mb: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss_now_mb(self) -> float:
        for line in self._status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_s(self) -> float:
        import os  # noqa: PLC0415

        fields = self._stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> ServerSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self.rss_mb.append(self.rss_now_mb())


def run_clients(
    args: argparse.Namespace, server: BenchServer, tenant: Tenant, ids: list[str]
) -> list[Followed]:
    targets = [dispatch_id for dispatch_id in ids for _ in range(args.clients_per_dispatch)]
    shares = [targets[i :: args.client_procs] for i in range(args.client_procs)]
    spread = min(args.start_delay_s / 2, 2.0)
    with multiprocessing.get_context("fork").Pool(args.client_procs) as pool:
        parts = pool.starmap(client_process, [(server.port, tenant.key, share, spread) for share in shares])
    return [seen for part in parts for seen in part]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {
        "OUTPOST_SANDBOX__BACKEND": args.backend,
        "OUTPOST_WORKER__SLOTS": str(max(8, args.dispatches)),
    }
    with BenchServer(env) as server:
        tenant = server.create_tenant("sse-fanout")
        server.start()
        assert server.process is not None
        with server.client(tenant) as client, ServerSampler(server.process.pid) as sampler:
            rss_idle = sampler.rss_now_mb()
            ids = [_submit(client, task(args)) for _ in range(args.dispatches)]
            cpu_before, started = sampler.cpu_s(), time.monotonic()
            seen = run_clients(args, server, tenant, ids)
            elapsed, cpu_used = time.monotonic() - started, sampler.cpu_s() - cpu_before
            expected = {dispatch_id: _event_count(client, dispatch_id) for dispatch_id in ids}
        rss = sampler.rss_mb
    return results_of(args, seen, expected, rss, rss_idle, elapsed, cpu_used)


def _submit(client: httpx.Client, script: str) -> str:
    response = client.post("/v1/dispatches", json={"agent": "shell", "task": script})
    response.raise_for_status()
    return str(response.json()["id"])


def _event_count(client: httpx.Client, dispatch_id: str) -> int:
    body = client.get(f"/v1/dispatches/{dispatch_id}/logs", params={"after": 0, "limit": 1000}).json()
    if body["next_after"] is not None:
        raise RuntimeError("raise /logs paging in the benchmark: a dispatch has over 1000 events")
    return len(body["items"])


def results_of(
    args: argparse.Namespace,
    seen: list[Followed],
    expected: dict[str, int],
    rss: list[float],
    rss_idle: float,
    elapsed: float,
    cpu_used: float,
) -> dict[str, Any]:
    complete = [
        s for s in seen if s.error is None and s.seqs_ok and s.ended and s.last_seq == expected[s.dispatch_id]
    ]
    latencies = [value for s in seen for value in s.latencies_ms]
    expected_lines = len(seen) * args.lines
    failures = sorted({json.dumps(s.final) for s in seen if s.final and s.final["status"] != "succeeded"})
    no_loss = len(complete) == len(seen) and len(latencies) == expected_lines
    delivered = sum(s.last_seq for s in seen)
    delivery = summarize(latencies)
    return {
        "parameters": {
            "dispatches": args.dispatches, "clients_per_dispatch": args.clients_per_dispatch,
            "clients": len(seen), "lines_per_dispatch": args.lines, "interval_ms": args.interval_ms,
            "client_procs": args.client_procs, "sandbox_backend": args.backend,
        },
        "clients_complete": len(complete),
        "clients_with_loss_or_disorder": len(seen) - len(complete),
        "errors": sorted({s.error for s in seen if s.error})[:10],
        "not_succeeded": failures,
        "events_delivered": delivered,
        "events_per_s": delivered / elapsed,
        "delivery_latency_ms": delivery,
        "print_to_stored_ms": summarize([value for s in seen for value in s.to_store_ms]),
        "stored_to_client_ms": summarize([value for s in seen for value in s.from_store_ms]),
        "server_rss_mb": {"idle": rss_idle, "peak": max(rss, default=float("nan"))},
        "server_cpu_s": cpu_used,
        "wall_s": elapsed,
        "target": {
            "p99_ms_at_most": TARGET_P99_MS, "no_loss": no_loss,
            "met": delivery["p99"] <= TARGET_P99_MS and no_loss,
        },
    }  # fmt: skip


def report(results: dict[str, Any]) -> str:
    p, d, rss = results["parameters"], results["delivery_latency_ms"], results["server_rss_mb"]
    return "\n".join([
        f"SSE fan-out: {p['clients']} clients following {p['dispatches']} dispatches "
        f"({p['clients_per_dispatch']} each), {p['lines_per_dispatch']} lines per dispatch every "
        f"{p['interval_ms']} ms, {p['sandbox_backend']} sandbox, {p['client_procs']} client process(es)",
        "",
        table(["delivery ms", "n", "p50", "p90", "p99", "max", "mean"], [
            [name, x["n"], x["p50"], x["p90"], x["p99"], x["max"], x["mean"]]
            for name, x in (
                ("print -> client (monotonic)", d),
                ("print -> stored (wall clock)", results["print_to_stored_ms"]),
                ("stored -> client (wall clock)", results["stored_to_client_ms"]),
            )
        ]),
        "",
        f"clients with every event once and in order: {results['clients_complete']} of {p['clients']}"
        + (f" (errors: {results['errors']})" if results["errors"] else ""),
        f"lines received: {d['n']} of {p['clients'] * p['lines_per_dispatch']}"
        + (f"; not succeeded: {results['not_succeeded']}" if results["not_succeeded"] else ""),
        f"events delivered: {results['events_delivered']} ({results['events_per_s']:.0f}/s over "
        f"{results['wall_s']:.1f} s); server CPU {results['server_cpu_s']:.1f} s",
        f"server RSS: {rss['idle']:.0f} MB idle, {rss['peak']:.0f} MB peak",
        f"target p99 <= {TARGET_P99_MS:.0f} ms and no loss: "
        + ("met" if results["target"]["met"] else "NOT met"),
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dispatches", type=int, default=50, help="running dispatches (default 50)")
    parser.add_argument("--clients-per-dispatch", type=int, default=10, help="clients on each (default 10)")
    parser.add_argument("--lines", type=int, default=100, help="lines each dispatch prints (default 100)")
    parser.add_argument("--interval-ms", type=float, default=100.0, help="between two lines (default 100)")
    parser.add_argument("--start-delay-s", type=float, default=4.0, help="before the first line (default 4)")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes (default 1)")
    parser.add_argument(
        "--backend", choices=["bwrap", "process"], default="bwrap", help="sandbox backend (default bwrap)"
    )
    parser.add_argument("--name", default="sse_fanout", help="results file name (no extension)")
    args = parser.parse_args(argv)
    results = measure(args)
    publish(args.name, results, report(results))
    return 0 if results["target"]["no_loss"] else 1


if __name__ == "__main__":
    sys.exit(main())
