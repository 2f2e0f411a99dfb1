"""GET /health/fleet (and GET /metrics) latency over a busy fleet's last hour.

The database is filled before the server starts: `outpost db upgrade` creates the schema, then rows are
bulk-inserted with SQLAlchemy Core through outpost's own table definitions: `--workers` workers beating
now (with the stale threshold raised so they stay live for the whole run), `--finished` dispatches that
finished within the last hour (spread over six agents, with succeeded, failed, timed-out and cancelled
ones and durations from seconds to half an hour), `--history` older finished dispatches (the last 30
days: the index on `finished_at` must keep them out of the scan), and some queued and running ones.

The server runs with its embedded worker disabled (the seeded workers are the fleet). Each phase sends
`--requests` sequential requests to each route (and to /health/live, which reads nothing: the cost of
HTTP alone on this machine) over one keep-alive connection and times them, after a short unrecorded
warm-up; the report is checked against the seeded figures. Phases: `cached` (the
default `OUTPOST_FLEET__CACHE_S`=1: one computation per second, the rest served from memory) and
`uncached` (`OUTPOST_FLEET__CACHE_S`=0: every request computes the report; the cost of one computation).

    .venv/bin/python bench/fleet_health.py --workers 20 --finished 5000 --history 50000 --requests 2000

With `--database-url postgresql://...` (an empty database the script may fill) it runs on PostgreSQL.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, create_engine, event, insert, text
from ulid import ULID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, publish, summarize, table

from outpost.db.tables import dispatches, workers

TARGET_P99_MS = 10.0
ROUTES = ("/health/live", "/health/fleet", "/metrics")  # live: the HTTP floor, for comparison
AGENTS = {"claude": 0.30, "shell": 0.25, "codex": 0.20, "gemini": 0.10, "aider": 0.10, "grok": 0.05}
ENDINGS = {"succeeded": 0.80, "failed": 0.12, "timed_out": 0.03, "cancelled": 0.05}
OUTCOMES = ("succeeded", "failed", "cancelled")
FAILURE_REASONS = ("agent_error", "provider_error", "oom", "max_turns")
BATCH_ROWS = 5000


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def dispatch_row(
    rng: random.Random, tenant_id: str, status: str, finished: datetime | None
) -> dict[str, Any]:
    """A dispatch as the lifecycle leaves it: `finished` None for a queued or running one (created a
    little before now)."""
    ran_s = rng.uniform(2, 1800)
    created = (finished or datetime.now(UTC)) - timedelta(seconds=ran_s + rng.uniform(0.1, 30))
    started = None if status == "queued" else created + timedelta(seconds=rng.uniform(0.05, 5))
    failure = {"failed": rng.choice(FAILURE_REASONS), "timed_out": "timed_out"}.get(status)
    return {
        "id": str(ULID.from_datetime(created)), "tenant_id": tenant_id, "status": status, "version": 4,
        "attempt": 0 if status == "queued" else 1, "event_seq": 4, "agent": _pick(rng, AGENTS), "task": "t",
        "tier": "balanced", "model": None, "timeout_s": 3600, "env": {}, "labels": {},
        "max_cost_micro_usd": None, "idempotency_key": None, "request_sha256": None, "created_at": created,
        "started_at": started, "finished_at": finished, "exit_code": None, "result": None,
        "failure_reason": failure, "failure_detail": None, "input_tokens": 0, "output_tokens": 0,
        "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_micro_usd": 0,
    }  # fmt: skip


def worker_row(index: int, now: datetime) -> dict[str, Any]:
    return {
        "id": f"bench-{index:02d}-{ULID()}", "host": f"worker-{index:02d}", "pid": 1000 + index,
        "version": "0.1.0", "slots": 8, "busy": index % 9, "agents": sorted(AGENTS), "draining": False,
        "started_at": now - timedelta(hours=3), "heartbeat_at": now, "stopped_at": None,
    }  # fmt: skip


def seed_rows(args: argparse.Namespace, tenant_id: str) -> tuple[list[dict[str, Any]], Counter[str]]:
    """Every dispatch row, and how many finished in the last hour by status."""
    rng = random.Random(args.seed)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    recent: Counter[str] = Counter()
    for _ in range(args.finished):  # within the last hour, clear of its edges for the run's duration
        status = _pick(rng, ENDINGS)
        recent[status] += 1
        rows.append(dispatch_row(rng, tenant_id, status, now - timedelta(seconds=rng.uniform(60, 2700))))
    for _ in range(args.history):
        ended = now - timedelta(seconds=rng.uniform(7200, 30 * 86400))
        rows.append(dispatch_row(rng, tenant_id, _pick(rng, ENDINGS), ended))
    rows += [dispatch_row(rng, tenant_id, "queued", None) for _ in range(args.queued)]
    rows += [dispatch_row(rng, tenant_id, "running", None) for _ in range(args.running)]
    return rows, recent


def seed_engine(url: str) -> Engine:
    """A plain (sync) engine on the database: `sqlite:///…`, or PostgreSQL through psycopg."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    engine = create_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def fast_load(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA synchronous=OFF")

    return engine


def seed(url: str, args: argparse.Namespace, tenant_id: str) -> Counter[str]:
    rows, recent = seed_rows(args, tenant_id)
    engine = seed_engine(url)
    try:
        with engine.begin() as conn:
            now = datetime.now(UTC)
            conn.execute(insert(workers), [worker_row(index, now) for index in range(args.workers)])
            for start in range(0, len(rows), BATCH_ROWS):
                conn.execute(insert(dispatches), rows[start : start + BATCH_ROWS])
            conn.execute(text("ANALYZE"))  # as a database in service would have been by now
    finally:
        engine.dispose()
    return recent


def check_report(body: dict[str, Any], args: argparse.Namespace, recent: Counter[str]) -> None:
    """The report shows the seeded fleet: every worker live, every recent dispatch counted once."""
    states = Counter(worker["state"] for worker in body["workers"])
    if states != Counter({"live": args.workers}):
        raise RuntimeError(f"workers by state: {dict(states)}, wanted {args.workers} live")
    agents = body["agents"].values()
    counted = Counter({outcome: sum(agent[outcome] for agent in agents) for outcome in OUTCOMES})
    seeded = Counter({outcome: recent[outcome] for outcome in OUTCOMES})
    seeded["failed"] += recent["timed_out"]  # the report counts timed-out dispatches as failed
    if counted != seeded:
        raise RuntimeError(f"the report counts {dict(counted)}, seeded {dict(recent)}")
    if sum(agent["queued"] for agent in agents) != args.queued:
        raise RuntimeError("the report's queue depth differs from the seeded queue")


def time_route(client: httpx.Client, path: str, requests: int, warmup: int) -> list[float]:
    latencies: list[float] = []
    for index in range(warmup + requests):
        started = time.perf_counter()
        response = client.get(path)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        if index >= warmup:
            latencies.append(elapsed_ms)
    return latencies


def run_phase(
    server: BenchServer, cache_s: str, args: argparse.Namespace, recent: Counter[str]
) -> dict[str, Any]:
    server.env["OUTPOST_FLEET__CACHE_S"] = cache_s
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            check_report(client.get("/health/fleet").json(), args, recent)
            return {path: summarize(time_route(client, path, args.requests, args.warmup)) for path in ROUTES}
    finally:
        server.stop()


def measure(args: argparse.Namespace) -> dict[str, Any]:
    env = {"OUTPOST_WORKER__ENABLED": "false", "OUTPOST_WORKER__STALE_S": "3600"}
    if args.database_url:
        env["OUTPOST_DATABASE_URL"] = args.database_url
    with BenchServer(env) as server:
        server.prepare()
        tenant = server.create_tenant("fleet-bench")
        url = args.database_url or f"sqlite:///{server.database_path}"
        started = time.perf_counter()
        recent = seed(url, args, tenant.id)
        seed_s = time.perf_counter() - started
        print(f"seeded {args.finished + args.history + args.queued + args.running} dispatches and "
              f"{args.workers} workers in {seed_s:.1f} s", file=sys.stderr)  # fmt: skip
        phases = {
            name: run_phase(server, cache_s, args, recent)
            for name, cache_s in (("cached", "1"), ("uncached", "0"))
        }
    cached_p99 = phases["cached"]["/health/fleet"]["p99"]
    return {
        "parameters": {
            "database": "postgresql" if args.database_url else "sqlite",
            "workers": args.workers,
            "finished_last_hour": args.finished,
            "finished_earlier": args.history,
            "queued": args.queued,
            "running": args.running,
            "requests": args.requests,
            "warmup": args.warmup,
            "seed": args.seed,
        },
        "seed_seconds": seed_s,
        "phases": phases,
        "target": {"p99_ms_below": TARGET_P99_MS, "met": cached_p99 <= TARGET_P99_MS},
    }


def report(results: dict[str, Any]) -> str:
    params = results["parameters"]
    rows = [
        [phase, path, s["n"], s["p50"], s["p90"], s["p99"], s["max"], s["mean"]]
        for phase, routes in results["phases"].items()
        for path, s in routes.items()
    ]
    return "\n".join([
        f"GET /health/fleet and /metrics on {params['database']}: {params['workers']} workers, "
        f"{params['finished_last_hour']} dispatches finished in the last hour, {params['finished_earlier']} "
        f"earlier, {params['queued']} queued, {params['running']} running",
        "",
        table(["phase", "route", "n", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"], rows),
        "",
        f"target p99 <= {TARGET_P99_MS:.0f} ms for /health/fleet (cached, the default): "
        f"{'met' if results['target']['met'] else 'NOT met'}",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--workers", type=int, default=20, help="workers beating (default 20)")
    parser.add_argument("--finished", type=int, default=5000, help="dispatches finished in the last hour")
    parser.add_argument("--history", type=int, default=50_000, help="dispatches finished before it")
    parser.add_argument("--queued", type=int, default=200, help="dispatches queued now")
    parser.add_argument("--running", type=int, default=100, help="dispatches running now")
    parser.add_argument("--requests", type=int, default=2000, help="timed requests per route and phase")
    parser.add_argument("--warmup", type=int, default=50, help="untimed requests first")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated rows")
    parser.add_argument("--database-url", help="an empty PostgreSQL database to use instead of SQLite")
    parser.add_argument("--name", default="fleet_health", help="results file name (no extension)")
    args = parser.parse_args(argv)
    results = measure(args)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
