"""What a tenant's budget adds to each model call: the budget hold's enter and exit, side by side for a
tenant without a budget (the spend view only) and one with a budget (a reservation taken and released in
the store, decision 0014), on SQLite and, with `--postgres`, PostgreSQL.

The hold is timed on its own, around an empty call (no provider): the figure is what the gateway waits
for before forwarding plus what the call's end writes.

    .venv/bin/python bench/budget_hold.py --calls 500
    .venv/bin/python bench/budget_hold.py --calls 500 --postgres postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import publish, summarize, table

from outpost.agents.catalog import default_catalog, resolve_model
from outpost.app import build_container
from outpost.db.repositories import tenants as tenant_repo
from outpost.domain.dispatch import Tier
from outpost.gateway.call_bounds import PlannedCall
from outpost.schemas.dispatches import DispatchCreate
from outpost.settings import Settings
from outpost.worker.run_budget import RunBudget
from outpost.worker.run_meter import RunMeter

CALL = PlannedCall("claude-sonnet-5-5", 20_000, 4_096)


async def _hold_times(settings: Settings, calls: int, budget_usd: float | None) -> list[float]:
    container = build_container(settings)
    await container.start()
    try:
        tenant, issued = await container.keys.create_tenant(f"bench-{uuid.uuid4().hex[:8]}", admin=False)
        if budget_usd is not None:
            async with container.store.write() as conn:
                budgeted = replace(tenant, monthly_budget_micro_usd=int(budget_usd * 1e6))
                await tenant_repo.update_tenant_policy(conn, budgeted)
        caller = await container.keys.authenticate(issued.token)
        await container.dispatches.submit(caller, DispatchCreate(agent="claude", task="bench"), None)
        [claimed] = await container.runs.claim(1)
        choice = resolve_model(default_catalog(), "claude", Tier.BALANCED, None)
        assert choice is not None
        budget = RunBudget(container.budgets, claimed, RunMeter(default_catalog(), choice, lambda *_: None))
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            async with budget.hold("anthropic", CALL) as refusal:
                assert refusal is None
            times.append((time.perf_counter() - started) * 1000)
        budget.close()
        return times
    finally:
        await container.stop()


def _settings(data_dir: Path, url: str) -> Settings:
    return Settings(
        data_dir=data_dir, database_url=url, worker={"enabled": False},
        sandbox={"backend": "process"}, limits={"requests_per_s": 0},
        secrets={"master_key_file": data_dir.parent / "master.key"},  # one key: the runs share a database
    )  # fmt: skip


async def measure(calls: int, postgres: str | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        databases = [("sqlite", f"sqlite+aiosqlite:///{tmp}/outpost.db")]
        scratch = None
        if postgres is not None:
            scratch = f"bench_hold_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(postgres, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{scratch}"')
            databases.append(("postgresql", postgres.rsplit("/", 1)[0] + f"/{scratch}"))
        try:
            for name, url in databases:
                for label, budget in (("no budget", None), ("budget", 1_000_000.0)):
                    settings = _settings(Path(tmp) / f"{name}-{label.replace(' ', '-')}", url)
                    results[f"{name}, {label}"] = summarize(await _hold_times(settings, calls, budget))
        finally:
            if scratch is not None:
                with psycopg.connect(postgres, autocommit=True) as conn:
                    conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--postgres", help="an admin URL: a scratch database is made and dropped")
    args = parser.parse_args()
    results = asyncio.run(measure(args.calls, args.postgres))
    rows = [(name, r["p50"], r["p90"], r["p99"]) for name, r in results.items()]
    publish("budget_hold", results, table(["hold per call (ms)", "p50", "p90", "p99"], rows))


if __name__ == "__main__":
    main()
