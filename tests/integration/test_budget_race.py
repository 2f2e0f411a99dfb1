"""Runs racing for the last dollar of their tenant's budget, through the real gateway and store, against
the fake provider: each run makes one model call after another until the gateway refuses one. The tenant
never overspends by more than one call, tenant-wide, even with its runs spread over two servers sharing
the database (decision 0014); every run is refused once and stops, and the running costs the worker wrote
match what was metered."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from outpost.agents.catalog import cost_micro_usd, default_catalog, resolve_model
from outpost.agents.events import Usage
from outpost.db.repositories import dispatches as dispatch_repo
from outpost.db.tables import call_reservations
from outpost.domain.dispatch import Tier
from outpost.gateway.tokens import Grant
from outpost.gateway.upstreams import KEY_STYLES, Upstream
from outpost.worker.run_budget import RunBudget
from outpost.worker.run_meter import RunMeter
from tests.agent_installs import INSTALL_DIR
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.integration.api_checks import assert_problem

REAL_KEY = "sk-race-provider-key"
RUNS = 12
CALLS_IN_BUDGET = 20
BODY = {"model": "claude-sonnet-5-5", "max_tokens": 100, "stream": True,
        "messages": [{"role": "user", "content": "go on"}]}  # fmt: skip
SONNET = resolve_model(default_catalog(), "claude", Tier.BALANCED, "claude-sonnet-5-5")
assert SONNET is not None
CALL_MICRO_USD = cost_micro_usd(Usage(1111, 22, 333, 44), SONNET.model)
"""What one answer of the fake provider costs (its usage at the model's prices)."""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@dataclass
class Racer:
    """A run as the worker sets it up: its meter, its budget hold, its gateway token."""

    dispatch_id: str
    meter: RunMeter
    budget: RunBudget
    token: str
    gateway_url: str
    """The gateway of the server running it."""
    statuses: list[int]


@dataclass
class Side:
    """One server running some of the tenant's dispatches, with its gateway listening."""

    server: Server
    gateway_url: str


@dataclass
class Race:
    sides: list[Side]
    tenant: dict[str, str]

    @property
    def server(self) -> Server:
        return self.sides[0].server

    async def racers(self, count: int, side: int = 0, **fields: object) -> list[Racer]:
        """`count` dispatches claimed by one side's server and running, each with its budget hold, as the
        worker starts them."""
        for _ in range(count):
            body = {"agent": "claude", "task": "spend", **fields}
            response = await self.server.client.post("/v1/dispatches", json=body, headers=self.tenant)
            assert response.status_code == 202, response.text
        on = self.sides[side]
        container = on.server.container
        claimed = await container.runs.claim(count)
        assert len(claimed) == count
        racers = []
        for row in claimed:
            running = await container.runs.mark_running(row)
            assert running is not None
            assert SONNET is not None
            meter = RunMeter(default_catalog(), SONNET, lambda kind, data: None)
            budget = RunBudget(container.budgets, running, meter)
            key = SecretStr(REAL_KEY)
            upstream = Upstream("anthropic", fake_url(on.server), key, KEY_STYLES["anthropic"])
            grant = Grant(
                run_id=f"{row.id}.{row.attempt}", tenant_id=row.tenant_id, upstreams={"anthropic": upstream},
                on_usage=budget.on_usage, on_failure=meter.on_failure, hold=budget.hold,
            )  # fmt: skip
            token = container.gateway.tokens.issue(grant)
            racers.append(Racer(row.id, meter, budget, token, on.gateway_url, []))
        return racers


def fake_url(server: Server) -> str:
    url = server.container.settings.providers["anthropic"].base_url
    assert url is not None
    return url


@pytest.fixture
async def race(make_server: MakeServer, fake: FakeProvider) -> AsyncIterator[Race]:
    """Two servers on one database, neither running a worker of its own: the test plays the worker."""
    fake.reset()
    fake.mode = "slow_first_byte"  # calls overlap, as a fleet's do
    fake.first_byte_delay_s = 0.05
    sides, listeners = [], []
    for _ in range(2):
        server = await make_server(
            worker={"enabled": False}, agents={"install_dir": INSTALL_DIR},
            providers={"anthropic": {"base_url": fake.base_url, "api_key": REAL_KEY}},
            # Longer than any test: this process's own spend must count without reading it back.
            limits={"requests_per_s": 0, "spend_refresh_ms": 600_000},
        )  # fmt: skip
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        listeners.append(await server.container.gateway.serve(sock, None))
        sides.append(Side(server, f"http://127.0.0.1:{sock.getsockname()[1]}"))
    tenant = await sides[0].server.new_tenant()
    try:
        yield Race(sides, tenant)
    finally:
        for served in listeners:
            await served.close()


async def set_budget(race: Race, micro_usd: int) -> None:
    admin = await race.server.new_tenant(admin=True)
    keys = (await race.server.client.get("/v1/keys", headers=race.tenant)).json()
    response = await race.server.client.patch(
        f"/v1/tenants/{keys[0]['tenant_id']}", json={"monthly_budget_usd": micro_usd / 1e6}, headers=admin
    )
    assert response.status_code == 200, response.text


async def run_until_refused(racer: Racer, max_calls: int = 100) -> None:
    """Call the model again and again, as an agent CLI does, until the gateway refuses a call."""
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(max_calls):
            response = await client.post(
                f"{racer.gateway_url}/anthropic/v1/messages", content=json.dumps(BODY),
                headers={"x-api-key": racer.token, "content-type": "application/json"},
            )  # fmt: skip
            racer.statuses.append(response.status_code)
            if response.status_code != 200:
                assert response.json()["error"]["type"] == "billing_error", response.text
                return
    raise AssertionError(f"run {racer.dispatch_id} was never stopped")


async def stored_costs(race: Race, racers: list[Racer]) -> dict[str, int]:
    async with race.server.container.store.read() as conn:
        rows = [await dispatch_repo.get_dispatch(conn, racer.dispatch_id) for racer in racers]
    return {row.id: row.cost_micro_usd for row in rows if row is not None}


@pytest.mark.parametrize("servers", [1, 2])
async def test_racing_runs_overspend_the_tenant_budget_by_at_most_one_call(race: Race, servers: int) -> None:
    budget = CALLS_IN_BUDGET * CALL_MICRO_USD
    await set_budget(race, budget)
    racers = [racer for side in range(servers) for racer in await race.racers(RUNS // servers, side)]
    await asyncio.gather(*(run_until_refused(racer) for racer in racers))
    spent = sum(racer.meter.cost_micro_usd for racer in racers)
    calls = sum(racer.statuses.count(200) for racer in racers)
    assert spent == calls * CALL_MICRO_USD
    # Reached, and exceeded by no more than one call: past the last fitting bound, calls go one at a time.
    assert budget <= spent < budget + CALL_MICRO_USD, (calls, [r.statuses for r in racers])
    assert calls == CALLS_IN_BUDGET
    assert all(racer.statuses[-1] == 402 and racer.statuses.count(402) == 1 for racer in racers)
    assert all(racer.budget.exceeded.is_set() for racer in racers)
    assert all(racer.budget.detail and "monthly budget of" in racer.budget.detail for racer in racers)
    for racer in racers:
        racer.budget.close()
    for side in race.sides:
        await side.server.container.budgets.close()
    assert await stored_costs(race, racers) == {r.dispatch_id: r.meter.cost_micro_usd for r in racers}
    assert await reservations_left(race) == 0
    refused = await race.server.client.post(
        "/v1/dispatches", json={"agent": "claude", "task": "more"}, headers=race.tenant
    )
    assert assert_problem(refused, 402)["remaining_usd"] == 0


async def reservations_left(race: Race) -> int:
    async with race.server.container.store.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(call_reservations))).scalar_one())


async def test_a_dispatch_at_its_max_cost_is_stopped_while_its_tenants_other_runs_go_on(race: Race) -> None:
    [capped] = await race.racers(1, max_cost_usd=2 * CALL_MICRO_USD / 1e6)
    [free] = await race.racers(1)
    await run_until_refused(capped)
    assert capped.statuses == [200, 200, 402]
    assert capped.budget.detail is not None
    assert "reaching its max_cost_usd of" in capped.budget.detail
    for _ in range(4):
        async with httpx.AsyncClient(timeout=30) as client:
            response = await client.post(
                f"{free.gateway_url}/anthropic/v1/messages", content=json.dumps(BODY),
                headers={"x-api-key": free.token, "content-type": "application/json"},
            )  # fmt: skip
        assert response.status_code == 200, response.text
    assert not free.budget.exceeded.is_set()


async def test_a_raised_budget_lets_new_runs_call_again_within_the_refresh_time(race: Race) -> None:
    await set_budget(race, CALL_MICRO_USD)
    [first] = await race.racers(1)
    await run_until_refused(first)
    assert first.statuses == [200, 402]
    first.budget.close()
    await set_budget(race, 3 * CALL_MICRO_USD)
    [second] = await race.racers(1)  # a new run reads the spend again before its first call
    await run_until_refused(second)
    assert second.statuses == [200, 200, 402]


async def test_a_dispatchs_calls_at_once_overspend_its_max_cost_by_at_most_one_call(race: Race) -> None:
    """An agent that makes calls in parallel (subagents, side calls) still stops within one call of its
    limit: near it, its calls go one at a time."""
    [capped] = await race.racers(1, max_cost_usd=3 * CALL_MICRO_USD / 1e6)
    async with httpx.AsyncClient(timeout=30) as client:

        async def call() -> int:
            response = await client.post(
                f"{capped.gateway_url}/anthropic/v1/messages", content=json.dumps(BODY),
                headers={"x-api-key": capped.token, "content-type": "application/json"},
            )  # fmt: skip
            return response.status_code

        statuses = await asyncio.gather(*(call() for _ in range(6)))
    assert sorted(statuses) == [200, 200, 200, 402, 402, 402]
    assert capped.meter.cost_micro_usd == 3 * CALL_MICRO_USD
    assert capped.budget.exceeded.is_set()


async def test_a_settling_dispatch_gives_back_what_its_calls_held(race: Race) -> None:
    """A worker that dies mid-call leaves its reservation behind: the dispatch's settlement drops it, so
    it does not hold the tenant's budget until it expires."""
    await set_budget(race, 10 * CALL_MICRO_USD)
    [racer] = await race.racers(1)
    async with race.server.container.store.read() as conn:
        row = await dispatch_repo.get_dispatch(conn, racer.dispatch_id)
    assert row is not None
    taken = await race.server.container.budgets.reserve(row.tenant_id, row.id, 5 * CALL_MICRO_USD)
    assert taken.reservation_id is not None
    assert await reservations_left(race) == 1
    cancelled = await race.server.client.post(f"/v1/dispatches/{row.id}/cancel", headers=race.tenant)
    assert cancelled.status_code == 200, cancelled.text
    assert await reservations_left(race) == 0
