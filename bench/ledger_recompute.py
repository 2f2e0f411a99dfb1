"""The ledger against an independent recomputation, to the micro-dollar, over a mix of dispatches.

A real `outpost serve` (bwrap sandbox, SQLite) runs `--dispatches` dispatches: real agent CLIs (Claude
Code and Codex, each at every tier, so six models) calling the fake provider through the model gateway,
and `shell` runs; they end succeeded, failed (exit 3, or a provider error), timed out (a 1 s limit) or
cancelled mid-run. The fake provider's token counts change as the run goes, so models and calls differ.

Then, without any of Outpost's pricing or settlement code, the script recomputes each dispatch's ledger
rows from the raw events its API serves (`usage`: one per metered model call; `compute`: what its
sandbox used so far, cumulative for the attempt it names, so each attempt's last one counts) and the
price table itself (`catalog.toml`, read as TOML, and the default compute prices):
tokens summed per provider and model, each row priced exactly and rounded once, half up. It compares
them, row by row and quantity by quantity, with the `ledger_entries` rows read from the database file,
with each dispatch's `cost_usd`, and the sum with `GET /v1/usage`.

    .venv/bin/python bench/ledger_recompute.py --dispatches 1000 --agent-share 0.3
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import threading
import time
import tomllib
from collections import Counter, defaultdict
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import BenchServer, publish, table
from tests.fakes.provider import FakeProvider
from tests.fakes.provider_wire import Usage

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "src" / "outpost" / "agents" / "catalog.toml"
INSTALL_DIR = ROOT / ".tools" / "agents"
PROVIDERS = ("anthropic", "openai", "gemini", "xai", "deepseek")
AGENT_TASK = "Create the file FILE=/workspace/hello.txt"
VCPU_HOUR_USD = Fraction("0.04")  # the server's defaults (OUTPOST_LEDGER__*)
GB_HOUR_USD = Fraction("0.004")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
SHELL_KINDS = {
    "succeeded": ("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; echo done", 60),
    "failed": ("echo failing; exit 3", 60),
    "timed_out": ("sleep 5", 1),
    "cancelled": ("sleep 30", 60),
}
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled"}


@dataclass
class Planned:
    agent: str
    task: str
    timeout_s: int
    tier: str | None = None
    cancel: bool = False
    id: str = ""


def plan(count: int, agent_share: float, rng: random.Random) -> list[Planned]:
    planned = []
    for index in range(count):
        if rng.random() < agent_share:
            agent, tier = rng.choice(("claude", "codex")), rng.choice(("flagship", "balanced", "fast"))
            roll = rng.random()  # most succeed; some are cut by a 1 s limit or cancelled mid-run
            timeout_s = 1 if roll < 0.1 else 60
            planned.append(Planned(agent, AGENT_TASK, timeout_s, tier, cancel=0.1 <= roll < 0.2))
        else:
            kind = ("succeeded", "failed", "timed_out", "cancelled")[index % 4]
            task, timeout_s = SHELL_KINDS[kind]
            planned.append(Planned("shell", task, timeout_s, cancel=kind == "cancelled"))
    return planned


def run_dispatches(
    server: BenchServer, client: httpx.Client, fake: FakeProvider, planned: list[Planned]
) -> None:
    """Submit them all, vary the provider's token counts and failures as they run, cancel the chosen ones
    once they run, and return when every one has ended."""
    stop = threading.Event()
    canceller = threading.Thread(target=_cancel_when_running, args=(server, client, planned, stop))
    canceller.start()
    try:
        for index, item in enumerate(planned):
            body: dict[str, Any] = {"agent": item.agent, "task": item.task, "timeout_s": item.timeout_s}
            if item.tier:
                body["tier"] = item.tier
            response = client.post("/v1/dispatches", json=body)
            response.raise_for_status()
            item.id = response.json()["id"]
            if index % 25 == 0:
                fake.usage = Usage(input=200 + index, output=10 + index % 97, cache_read=(index * 7) % 500,
                                   cache_write=index % 60, reasoning=index % 11)  # fmt: skip
            if index % 100 == 50:
                fake.fail_next(500, count=3)  # a provider outage: some runs fail on it
        _wait_all(client, len(planned))
    finally:
        stop.set()
        canceller.join()


def _cancel_when_running(
    server: BenchServer, client: httpx.Client, planned: list[Planned], stop: threading.Event
) -> None:
    with httpx.Client(base_url=server.url, headers=client.headers, timeout=60) as own:
        while not stop.is_set():
            wanted = {item.id for item in planned if item.cancel and item.id}
            running = own.get("/v1/dispatches", params={"status": "running", "limit": 200}).json()["items"]
            for dispatch in running:
                if dispatch["id"] in wanted:
                    own.post(f"/v1/dispatches/{dispatch['id']}/cancel")
            stop.wait(0.2)


def _wait_all(client: httpx.Client, count: int, limit_s: float = 3600) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        active = sum(
            len(client.get("/v1/dispatches", params={"status": status, "limit": 1}).json()["items"])
            for status in ("queued", "provisioning", "running")
        )
        if active == 0:
            return
        time.sleep(2)
    raise RuntimeError(f"the {count} dispatches did not all end within {limit_s} s")


# --- the independent recomputation -----------------------------------------------------------------


def token_prices() -> dict[tuple[str, str], list[Fraction]]:
    """(provider, model) → USD per million input, output, cache-read and cache-write tokens."""
    catalog = tomllib.loads(CATALOG.read_text())
    return {
        (vendor["provider"], model["id"]): [
            Fraction(str(model[k])) for k in ("input", "output", "cache_read", "cache_write")
        ]
        for vendor in catalog["vendors"].values()
        for model in vendor["models"]
    }


def half_up(micro_usd: Fraction) -> int:
    return int(micro_usd + Fraction(1, 2))  # non-negative: int() floors


def recompute(
    events: list[dict[str, Any]], prices: dict[tuple[str, str], list[Fraction]]
) -> dict[tuple, dict[str, int]]:
    """The rows a dispatch's events call for: (kind, provider, model) → quantities and cost."""
    tokens: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    last_compute: dict[int, dict[str, Any]] = {}  # by attempt: samples, then the final measurement
    for event in events:
        data = event["data"]
        if event["kind"] == "usage":
            counts = tokens[(data["provider"], data["priced_as"])]
            for position, field in enumerate(TOKEN_FIELDS):
                counts[position] += data[field]
        elif event["kind"] == "compute":
            last_compute[data["attempt"]] = data
    cpu_usec = sum(data["cpu_usec"] for data in last_compute.values())
    memory_byte_s = sum(data["memory_byte_s"] for data in last_compute.values())
    rows: dict[tuple, dict[str, int]] = {}
    for (provider, model), counts in tokens.items():
        exact = sum(count * price for count, price in zip(counts, prices[(provider, model)], strict=True))
        rows[("tokens", provider, model)] = {
            **dict(zip(TOKEN_FIELDS, counts, strict=True)),
            "cost": half_up(Fraction(exact)),
        }
    compute = (
        Fraction(cpu_usec, 3_600 * 10**6) * VCPU_HOUR_USD
        + Fraction(memory_byte_s, 2**30 * 3600) * GB_HOUR_USD
    )
    rows[("compute", None, None)] = {
        "cpu_usec": cpu_usec,
        "memory_byte_s": memory_byte_s,
        "cost": half_up(compute * 10**6),
    }
    return rows


def ledger_of(database: Path) -> dict[str, dict[tuple, dict[str, int]]]:
    """The ledger rows in the database, by dispatch, keyed as `recompute` keys them."""
    found: dict[str, dict[tuple, dict[str, int]]] = defaultdict(dict)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as conn:
        query = ("SELECT dispatch_id, kind, provider, model, input_tokens, output_tokens, cache_read_tokens, "
                 "cache_write_tokens, cpu_usec, memory_byte_s, cost_micro_usd FROM ledger_entries "
                 "WHERE dispatch_id IS NOT NULL")  # fmt: skip
        for dispatch_id, kind, provider, model, *quantities, cost in conn.execute(query):
            key = (kind, provider, model)
            if key in found[dispatch_id]:
                raise AssertionError(f"dispatch {dispatch_id} has two {key} rows")
            values = dict(zip((*TOKEN_FIELDS, "cpu_usec", "memory_byte_s"), quantities, strict=True))
            if kind == "tokens":
                values = {field: values[field] for field in TOKEN_FIELDS}
            else:
                values = {"cpu_usec": values["cpu_usec"], "memory_byte_s": values["memory_byte_s"]}
            found[dispatch_id][key] = {**values, "cost": cost}
    return found


def events_of(client: httpx.Client, dispatch_id: str) -> list[dict[str, Any]]:
    events, after = [], 0
    while True:
        page = client.get(f"/v1/dispatches/{dispatch_id}/logs", params={"after": after, "limit": 1000}).json()
        events += [event for event in page["items"] if event["kind"] in ("usage", "compute")]
        if page["next_after"] is None:
            return events
        after = page["next_after"]


def compare(client: httpx.Client, database: Path, planned: list[Planned]) -> dict[str, Any]:
    prices, ledger = token_prices(), ledger_of(database)
    mismatches, statuses, models = [], Counter(), Counter()
    recomputed_total = ledger_total = api_total = 0
    for item in planned:
        dispatch = client.get(f"/v1/dispatches/{item.id}").json()
        statuses[f"{item.agent}:{dispatch['status']}"] += 1
        expected = recompute(events_of(client, item.id), prices)
        models.update(key[2] for key in expected if key[0] == "tokens")
        recomputed_total += sum(row["cost"] for row in expected.values())
        ledger_total += sum(row["cost"] for row in ledger[item.id].values())
        api_total += round(dispatch["cost_usd"] * 10**6)
        if ledger[item.id] != expected or round(dispatch["cost_usd"] * 10**6) != sum(
            r["cost"] for r in expected.values()
        ):
            mismatches.append({"id": item.id, "ledger": str(ledger[item.id]), "recomputed": str(expected)})
    usage_total = round(client.get("/v1/usage").json()["total"]["cost_usd"] * 10**6)
    return {
        "dispatches": len(planned), "statuses": dict(sorted(statuses.items())),
        "token_rows_by_model": dict(models),
        "mismatched_dispatches": len(mismatches), "first_mismatches": mismatches[:5],
        "recomputed_total_micro_usd": recomputed_total, "ledger_total_micro_usd": ledger_total,
        "dispatch_cost_total_micro_usd": api_total, "usage_api_total_micro_usd": usage_total,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dispatches", type=int, default=1000)
    parser.add_argument(
        "--agent-share", type=float, default=0.3, help="Share of dispatches run by agent CLIs."
    )
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    planned = plan(args.dispatches, args.agent_share, random.Random(args.seed))
    started = time.monotonic()
    with FakeProvider() as fake:
        env = {f"OUTPOST_PROVIDERS__{name.upper()}__BASE_URL": fake.base_url for name in PROVIDERS}
        env |= {f"OUTPOST_PROVIDERS__{name.upper()}__API_KEY": "sk-bench" for name in PROVIDERS}
        env["OUTPOST_AGENTS__INSTALL_DIR"] = str(INSTALL_DIR)
        # Compute samples during the longer runs (timed out, cancelled): each attempt's last one counts.
        env["OUTPOST_LEDGER__COMPUTE_SAMPLE_S"] = "0.5"
        with BenchServer(env) as server:
            server.prepare()
            tenant = server.create_tenant("bench")
            server.start()
            with server.client(tenant, timeout_s=60) as client:
                run_dispatches(server, client, fake, planned)
                ran_s = time.monotonic() - started
                results = compare(client, server.database_path, planned)
    results["run_s"] = round(ran_s, 1)
    names = ("recomputed", "ledger", "dispatch_cost", "usage_api")
    totals = [results[f"{name}_total_micro_usd"] for name in names]
    line = (
        f"{results['dispatches']} dispatches, {results['mismatched_dispatches']} differ from the "
        "recomputation; "
        f"total ledger ${totals[1] / 1e6:.6f} vs recomputed ${totals[0] / 1e6:.6f} "
        f"(dispatch costs ${totals[2] / 1e6:.6f}, /v1/usage ${totals[3] / 1e6:.6f})"
    )
    rows = [(name, count) for name, count in results["statuses"].items()]
    publish("ledger_recompute", results, f"{table(('agent:status', 'dispatches'), rows)}\n\n{line}")
    if results["mismatched_dispatches"] or len(set(totals)) != 1:
        sys.exit(1)


if __name__ == "__main__":
    main()
