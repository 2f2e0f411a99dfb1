"""Keyset pagination of GET /v1/dispatches over a large table: every page, with and without filters.

The database is filled directly, before the server starts: `outpost db upgrade` creates the schema, then
the dispatch rows are bulk-inserted with SQLAlchemy Core through outpost's own table definitions (so they
are stored exactly as the server stores them). Tenant A gets 100,000 dispatches and tenant B 50,000,
interleaved in time, so the tenant filter matters. Ids are ULIDs in creation order over the last 30 days;
statuses, agents, tasks, results and usage are spread like a real fleet's.

The server then runs with its worker disabled (OUTPOST_WORKER__ENABLED=false): the seeded `queued` rows
would otherwise be run and the seeded `running` rows re-queued by the restart reconciler. Listing does
not involve the worker. For each filter (none, status=succeeded, agent=shell) the script follows
next_cursor through ALL pages of tenant A, timing each page, and checks the row counts.

    .venv/bin/python bench/list_pagination.py --rows 100000 --other-rows 50000 --limit 50
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, event, insert
from ulid import ULID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BenchServer, publish, summarize, table

from outpost.db.tables import dispatches

TARGET_P99_MS = 20.0
BATCH_ROWS = 5000
SPAN = timedelta(days=30)
STATUSES = {"queued": 0.04, "running": 0.04, "succeeded": 0.77, "failed": 0.15}
AGENTS = {"claude": 0.30, "shell": 0.25, "codex": 0.20, "gemini": 0.10, "aider": 0.10, "grok": 0.05}
MODELS = {"claude": "claude-sonnet-4", "codex": "gpt-5-codex", "gemini": "gemini-2.5-pro"}
TASKS = (
    "Fix the failing test in {path} and explain the root cause in the PR description.",
    "Upgrade {pkg} to the latest minor version, run the test suite and fix whatever breaks.",
    "Add type hints to {path}; keep behaviour identical and make mypy --strict pass.",
    "Investigate the flaky CI job 'integration-{n}' and propose a fix with a regression test.",
    "Refactor {path} so that the retry logic lives in one place; update the call sites.",
    "make -C services/{pkg} test && ./scripts/check-migrations --since {n}",
    "Write a migration that backfills the {pkg}_id column for rows created before build {n}.",
)
PATHS = ("src/api/handlers.py", "lib/cache/lru.go", "app/models/user.rb", "pkg/queue/worker.ts")
PACKAGES = ("billing", "search", "auth", "notifications", "reports", "ingest")
FILTERS = {"all": {}, "status=succeeded": {"status": "succeeded"}, "agent=shell": {"agent": "shell"}}


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def make_row(rng: random.Random, tenant_id: str, created: datetime) -> dict[str, Any]:
    """One realistic dispatch row, created at `created` (its ULID carries the same time)."""
    status, agent = _pick(rng, STATUSES), _pick(rng, AGENTS)
    task = rng.choice(TASKS).format(
        path=rng.choice(PATHS), pkg=rng.choice(PACKAGES), n=rng.randint(100, 99999)
    )
    started = created + timedelta(seconds=rng.uniform(0.05, 5)) if status != "queued" else None
    ended = status in {"succeeded", "failed"}
    finished = started + timedelta(seconds=rng.uniform(2, 1800)) if ended and started else None
    llm = agent != "shell"
    input_tokens = rng.randint(2_000, 400_000) if llm and started else 0
    output_tokens = input_tokens // rng.randint(5, 40) if input_tokens else 0
    return {
        "id": str(ULID.from_datetime(created)),
        "tenant_id": tenant_id,
        "status": status,
        "version": {"queued": 1, "running": 3}.get(status, 4),
        "attempt": 0 if status == "queued" else 1,
        "event_seq": {"queued": 1, "running": 3}.get(status, 4) + (rng.randint(1, 200) if started else 0),
        "agent": agent,
        "task": task,
        "tier": rng.choice(("balanced", "balanced", "flagship", "fast")),
        "model": MODELS.get(agent) if llm else None,
        "timeout_s": rng.choice((600, 1800, 3600)),
        "env": {"CI": "1"} if rng.random() < 0.3 else {},
        "labels": {"team": rng.choice(PACKAGES), "ticket": f"OPS-{rng.randint(1, 9999)}"}
        if rng.random() < 0.5
        else {},
        "max_cost_micro_usd": rng.choice((None, 5_000_000, 20_000_000)),
        "idempotency_key": None,
        "request_sha256": hashlib.sha256(task.encode()).hexdigest(),
        "created_at": created,
        "started_at": started,
        "finished_at": finished,
        "exit_code": {"succeeded": 0, "failed": 1}.get(status),
        "result": f"Done: changed {rng.randint(1, 12)} files, tests pass." if status == "succeeded" else None,
        "failure_reason": "agent_error" if status == "failed" else None,
        "failure_detail": "exited with status 1" if status == "failed" else None,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_read_tokens": input_tokens // 2,
        "cache_write_tokens": input_tokens // 10,
        "cost_micro_usd": (input_tokens * 3 + output_tokens * 15) // 1000 * 1000 if llm else 0,
    }  # fmt: skip


def seed(database: Path, tenants: dict[str, int], seed_value: int) -> dict[str, Counter[str]]:
    """Insert the rows, interleaving tenants in time; returns per-tenant counts by status and agent."""
    rng = random.Random(seed_value)
    owners = [tenant for tenant, count in tenants.items() for _ in range(count)]
    rng.shuffle(owners)
    counts: dict[str, Counter[str]] = {tenant: Counter() for tenant in tenants}
    start = datetime.now(UTC) - SPAN
    step = SPAN / max(1, len(owners))
    engine = create_engine(f"sqlite:///{database}")

    @event.listens_for(engine, "connect")
    def fast_load(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=OFF")

    try:
        with engine.begin() as conn:
            batch: list[dict[str, Any]] = []
            for index, tenant in enumerate(owners):
                row = make_row(rng, tenant, start + step * index)
                counts[tenant].update((f"status={row['status']}", f"agent={row['agent']}", "all"))
                batch.append(row)
                if len(batch) >= BATCH_ROWS:
                    conn.execute(insert(dispatches), batch)
                    batch = []
            if batch:
                conn.execute(insert(dispatches), batch)
    finally:
        engine.dispose()
    return counts


def query_plans(database: Path, tenant_id: str) -> dict[str, str]:
    """SQLite's plan for each page query shape (what the list endpoint runs, in outline)."""
    base = "SELECT * FROM dispatches WHERE tenant_id = ?{} AND id < ? ORDER BY id DESC LIMIT 51"
    shapes = {"all": ("", ()), "status=succeeded": (" AND status = ?", ("succeeded",))}
    shapes["agent=shell"] = (" AND agent = ?", ("shell",))
    plans = {}
    with sqlite3.connect(database) as conn:
        for name, (extra, params) in shapes.items():
            rows = conn.execute(
                f"EXPLAIN QUERY PLAN {base.format(extra)}", (tenant_id, *params, "8")
            ).fetchall()
            plans[name] = "; ".join(str(row[-1]) for row in rows)
    return plans


def walk(client: httpx.Client, limit: int, params: dict[str, str]) -> tuple[list[float], int]:
    """Follow next_cursor through every page; returns per-page latencies (ms) and the item count."""
    latencies: list[float] = []
    items = 0
    cursor: str | None = None
    last_id: str | None = None
    while True:
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        started = time.perf_counter()
        response = client.get("/v1/dispatches", params=query)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        page = response.json()
        ids = [item["id"] for item in page["items"]]
        if ids != sorted(ids, reverse=True) or (last_id is not None and ids and ids[0] >= last_id):
            raise RuntimeError("pages are not in strictly descending id order")
        last_id = ids[-1] if ids else last_id
        items += len(ids)
        cursor = page["next_cursor"]
        if cursor is None:
            return latencies, items


def measure(args: argparse.Namespace) -> dict[str, Any]:
    with BenchServer({"OUTPOST_WORKER__ENABLED": "false"}) as server:
        server.prepare()
        tenant_a = server.create_tenant("pagination-a")
        tenant_b = server.create_tenant("pagination-b")
        started = time.perf_counter()
        counts = seed(server.database_path, {tenant_a.id: args.rows, tenant_b.id: args.other_rows}, args.seed)
        seed_s = time.perf_counter() - started
        print(f"seeded {args.rows + args.other_rows} dispatches in {seed_s:.1f} s", file=sys.stderr)
        plans = query_plans(server.database_path, tenant_a.id)
        server.start()
        walks: dict[str, Any] = {}
        with server.client(tenant_a) as client:
            for name, params in FILTERS.items():
                if args.warmup:
                    walk(client, args.limit, params)
                latencies, items = walk(client, args.limit, params)
                expected = counts[tenant_a.id][name]
                if items != expected:
                    raise RuntimeError(f"{name}: walked {items} items, tenant A has {expected}")
                walks[name] = {"pages": len(latencies), "items": items, "page_ms": summarize(latencies)}
                print(f"  {name}: {len(latencies)} pages", file=sys.stderr)
    worst_p99 = max(walk_["page_ms"]["p99"] for walk_ in walks.values())
    return {
        "parameters": {
            "rows_tenant_a": args.rows,
            "rows_tenant_b": args.other_rows,
            "limit": args.limit,
            "seed": args.seed,
            "warmup_walk": args.warmup,
            "worker": "disabled",
        },
        "seed_seconds": seed_s,
        "query_plans": plans,
        "walks": walks,
        "target": {"p99_ms_below": TARGET_P99_MS, "met": worst_p99 < TARGET_P99_MS},
    }


def report(results: dict[str, Any]) -> str:
    params = results["parameters"]
    rows = [
        [name, w["pages"], w["items"], w["page_ms"]["p50"], w["page_ms"]["p90"], w["page_ms"]["p99"],
         w["page_ms"]["max"], w["page_ms"]["mean"]]
        for name, w in results["walks"].items()
    ]  # fmt: skip
    lines = [
        f"GET /v1/dispatches?limit={params['limit']}: every page of tenant A "
        f"({params['rows_tenant_a']} rows; tenant B has {params['rows_tenant_b']})",
        "",
        table(["filter", "pages", "items", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms"], rows),
        "",
        "SQLite query plans:",
        *(f"  {name}: {plan}" for name, plan in results["query_plans"].items()),
        "",
        f"target p99 < {TARGET_P99_MS:.0f} ms per page: {'met' if results['target']['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="dispatches of tenant A (walked)")
    parser.add_argument("--other-rows", type=int, default=50_000, help="dispatches of tenant B")
    parser.add_argument("--limit", type=int, default=50, help="page size (default 50)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the generated rows")
    parser.add_argument(
        "--warmup", action=argparse.BooleanOptionalAction, default=False, help="walk each filter once first"
    )
    parser.add_argument("--name", default="list_pagination", help="results file name (no extension)")
    args = parser.parse_args(argv)
    results = measure(args)
    publish(args.name, results, report(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
