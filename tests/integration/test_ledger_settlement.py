"""Settlement: every terminal state writes the dispatch's ledger rows once, in the transaction that ends it,
from the usage and compute events it recorded (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Any

from sqlalchemy import select

from outpost.agents.catalog import default_catalog
from outpost.db.tables import ledger_entries
from outpost.domain.dispatch import DispatchStatus
from outpost.services.runs import NewEvent, Outcome
from tests.conftest import MakeServer, Server
from tests.integration.helpers import TERMINAL, all_events, compute_to_charge, submit, wait_for_status

BURN_CPU = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"
CALLS = [
    {"provider": "anthropic", "model": "claude-sonnet-5-5-20261001", "priced_as": "claude-sonnet-5-5",
     "input_tokens": 1200, "output_tokens": 340, "cache_read_tokens": 5000, "cache_write_tokens": 70},
    {"provider": "anthropic", "model": "claude-haiku-5-5", "priced_as": "claude-haiku-5-5",
     "input_tokens": 333, "output_tokens": 17, "cache_read_tokens": 0, "cache_write_tokens": 0},
    {"provider": "anthropic", "model": "claude-sonnet-5-5-20261001", "priced_as": "claude-sonnet-5-5",
     "input_tokens": 1, "output_tokens": 3, "cache_read_tokens": 0, "cache_write_tokens": 5},
]  # fmt: skip
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def expected_token_cost(calls: list[dict[str, Any]], model: str) -> int:
    """Recomputed here from the catalog's list prices: summed per model, one half-up rounding."""
    entry = next(m for m in default_catalog().vendors["anthropic"].models if m.id == model)
    prices = [entry.input, entry.output, entry.cache_read, entry.cache_write]
    exact = sum(
        call[field] * Fraction(str(price))
        for call in calls if call["priced_as"] == model
        for field, price in zip(TOKEN_FIELDS, prices, strict=True)
    )  # fmt: skip
    return int(Fraction(exact) + Fraction(1, 2))


async def ledger_of(server: Server, dispatch_id: str) -> list[dict[str, Any]]:
    query = (
        select(ledger_entries)
        .where(ledger_entries.c.dispatch_id == dispatch_id)
        .order_by(ledger_entries.c.id)
    )
    async with server.container.store.read() as conn:
        return [dict(row) for row in (await conn.execute(query)).mappings()]


async def record_calls(server: Server, dispatch_id: str, calls: list[dict[str, Any]]) -> None:
    """The gateway's meter records one `usage` event per call, as these."""
    for call in calls:
        assert await server.container.runs.record(dispatch_id, [NewEvent("usage", call)])


def assert_settled(
    dispatch: dict[str, Any], rows: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    """One compute row matching the compute events (each attempt's last), and the dispatch's cost the
    sum of its rows."""
    compute = [row for row in rows if row["kind"] == "compute"]
    assert len(compute) == 1, rows
    assert (compute[0]["cpu_usec"], compute[0]["memory_byte_s"]) == compute_to_charge(events)
    assert round(dispatch["cost_usd"] * 1_000_000) == sum(row["cost_micro_usd"] for row in rows)
    assert {row["prices"] for row in rows} == {rows[0]["prices"]}


async def test_a_dispatch_cancelled_mid_run_is_settled_once_from_the_calls_it_made(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "sleep 30")
    await wait_for_status(server.client, headers, created["id"], {"running"})
    await record_calls(server, created["id"], CALLS)
    response = await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert response.json()["status"] == "cancelled"
    rows = await ledger_of(server, created["id"])
    tokens = {row["model"]: row for row in rows if row["kind"] == "tokens"}
    assert set(tokens) == {"claude-sonnet-5-5", "claude-haiku-5-5"}
    for model, row in tokens.items():
        assert row["cost_micro_usd"] == expected_token_cost(CALLS, model)
        assert row["provider"] == "anthropic"
        for field in TOKEN_FIELDS:
            assert row[field] == sum(call[field] for call in CALLS if call["priced_as"] == model)
    dispatch = response.json()
    assert dispatch["usage"] == {field: sum(call[field] for call in CALLS) for field in TOKEN_FIELDS}
    assert_settled(dispatch, rows, await all_events(server.client, headers, created["id"]))
    # Usage after the end is refused, and a late finish by the worker settles nothing again.
    assert not await server.container.runs.record(created["id"], [NewEvent("usage", CALLS[0])])
    await server.container.runs.finish(created["id"], Outcome(DispatchStatus.SUCCEEDED))
    assert await ledger_of(server, created["id"]) == rows


async def test_each_way_a_run_ends_is_settled_with_its_measured_compute(server: Server) -> None:
    headers = await server.new_tenant()
    ways = {
        "succeeded": submit(server.client, headers, BURN_CPU),
        "failed": submit(server.client, headers, f"{BURN_CPU}; exit 3"),
        "timed_out": submit(server.client, headers, f"{BURN_CPU}; sleep 30", timeout_s=2),
    }
    created = dict(zip(ways, await asyncio.gather(*ways.values()), strict=True))
    for status, dispatch in created.items():
        done = await wait_for_status(server.client, headers, dispatch["id"], TERMINAL, timeout_s=60)
        assert done["status"] == status, done
        rows = await ledger_of(server, dispatch["id"])
        events = await all_events(server.client, headers, dispatch["id"])
        assert_settled(done, rows, events)
        (compute,) = rows
        # The shell loop burns a measurable share of a CPU: the cgroup (or rusage) saw it.
        assert compute["cpu_usec"] > 20_000, compute
        assert compute["memory_byte_s"] > 0, compute
        assert compute["cost_micro_usd"] >= 0
        assert compute["agent"] == "shell"
        assert [event["kind"] for event in events][-3:] == ["compute", "artifacts", "status"]
        assert {key: events[-3]["data"][key] for key in ("attempt", "final")} == {"attempt": 1, "final": True}


async def test_a_dispatch_cancelled_while_queued_is_settled_at_zero(make_server: MakeServer) -> None:
    server = await make_server(worker={"enabled": False}, limits={"requests_per_s": 0})
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "true")
    cancelled = (await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)).json()
    rows = await ledger_of(server, created["id"])
    assert [(row["kind"], row["cpu_usec"], row["cost_micro_usd"]) for row in rows] == [("compute", 0, 0)]
    assert cancelled["cost_usd"] == 0


async def test_a_dispatch_whose_worker_was_lost_is_settled_from_the_calls_it_recorded(
    make_server: MakeServer,
) -> None:
    server = await make_server(worker={"enabled": False, "max_attempts": 1}, limits={"requests_per_s": 0})
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "sleep 30")
    (claimed,) = await server.container.runs.claim(1)
    assert claimed.id == created["id"]
    await record_calls(server, created["id"], CALLS[:1])
    assert await server.container.runs.reconcile_lost() == (0, 1)
    done = (await server.client.get(f"/v1/dispatches/{created['id']}", headers=headers)).json()
    assert (done["status"], done["failure"]["reason"]) == ("failed", "worker_lost")
    rows = await ledger_of(server, created["id"])
    assert [row["kind"] for row in rows] == ["tokens", "compute"]
    assert rows[0]["cost_micro_usd"] == expected_token_cost(CALLS[:1], "claude-sonnet-5-5")
    assert rows[1]["cpu_usec"] == 0  # the lost worker never measured its run
    assert_settled(done, rows, await all_events(server.client, headers, created["id"]))


async def test_a_run_whose_worker_was_lost_after_a_compute_sample_is_charged_that_sample(
    make_server: MakeServer,
) -> None:
    server = await make_server(
        worker={"max_attempts": 1}, limits={"requests_per_s": 0}, ledger={"compute_sample_s": 0.1}
    )
    headers = await server.new_tenant()
    created = await submit(server.client, headers, f"{BURN_CPU}; sleep 30", timeout_s=60)
    samples = await _compute_samples(server, headers, created["id"], at_least=2)
    assert {(data["attempt"], data["final"]) for data in samples} == {(1, False)}
    assert samples[-1]["cpu_usec"] >= samples[0]["cpu_usec"]
    # What a restart does once its worker is gone: the run is not over, its final event never comes.
    assert await server.container.runs.reconcile_lost() == (0, 1)
    done = (await server.client.get(f"/v1/dispatches/{created['id']}", headers=headers)).json()
    assert (done["status"], done["failure"]["reason"]) == ("failed", "worker_lost")
    events = await all_events(server.client, headers, created["id"])
    measured = [event["data"] for event in events if event["kind"] == "compute"]
    assert not any(data["final"] for data in measured)
    (compute,) = await ledger_of(server, created["id"])
    assert (compute["cpu_usec"], compute["memory_byte_s"]) == (
        measured[-1]["cpu_usec"], measured[-1]["memory_byte_s"],
    )  # fmt: skip
    assert compute["cpu_usec"] > 0, compute
    assert compute["memory_byte_s"] > 0, compute
    assert_settled(done, [compute], events)
    # The run, stopped now, measures its end too late: the event is refused, the ledger stays as settled.
    assert await server.container.worker.request_abort(created["id"])
    assert await server.container.worker.wait_stopped(created["id"], timeout_s=20)
    assert await ledger_of(server, created["id"]) == [compute]
    assert len(await all_events(server.client, headers, created["id"])) == len(events)


async def _compute_samples(
    server: Server, headers: dict[str, str], dispatch_id: str, at_least: int, timeout_s: float = 20
) -> list[dict[str, Any]]:
    """The dispatch's compute events once it has recorded `at_least` of them."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        events = await all_events(server.client, headers, dispatch_id)
        measured = [event["data"] for event in events if event["kind"] == "compute"]
        if len(measured) >= at_least:
            return measured
        assert asyncio.get_running_loop().time() < deadline, events
        await asyncio.sleep(0.05)


async def test_settled_tokens_and_cost_are_counted_in_the_prometheus_counters(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "sleep 30")
    await wait_for_status(server.client, headers, created["id"], {"running"})
    await record_calls(server, created["id"], CALLS)
    tenant_id = (await server.client.get("/v1/keys", headers=headers)).json()[0]["tenant_id"]
    before = (await server.client.get("/metrics")).text
    assert f'tenant="{tenant_id}"' not in before
    await server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    response = await server.client.get("/metrics")  # no key: scraped like the health checks
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    labels = f'agent="shell",kind="input",model="claude-sonnet-5-5",tenant="{tenant_id}"'
    assert f"outpost_tokens_total{{{labels}}} 1201.0" in response.text
    cost = sum(
        row["cost_micro_usd"] for row in await ledger_of(server, created["id"]) if row["kind"] == "tokens"
    )
    haiku = expected_token_cost(CALLS, "claude-haiku-5-5")
    sonnet_labels = f'agent="shell",kind="tokens",model="claude-sonnet-5-5",tenant="{tenant_id}"'
    line = next(
        line
        for line in response.text.splitlines()
        if line.startswith(f"outpost_cost_usd_total{{{sonnet_labels}}}")
    )
    assert float(line.split()[-1]) == (cost - haiku) / 1_000_000
