"""Provider quotas through the real gateway and the real store: a provider's "quota exhausted until T"
is recorded against the account whose key was used, runs on that account stop reaching the provider
until T, and the record ends at T or with the next success."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import httpx
import pytest
from pydantic import SecretStr

from outpost.db.migrate import upgrade_to_head
from outpost.db.repositories import quotas as quota_repo
from outpost.db.store import Store
from outpost.db.types import utc_now
from outpost.domain.quotas import SERVER_ACCOUNT
from outpost.gateway.metering import MeteredCall
from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import GatewayTokens, Grant
from outpost.gateway.upstream_errors import ProviderFailure
from outpost.gateway.upstreams import Upstream
from outpost.sandbox.served import ServedServer
from outpost.services.quotas import QuotaBook
from outpost.settings import GatewaySettings
from tests.fakes.provider import FakeProvider

BODY = {"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
QUOTA_S = 1.5  # the provider's back-off: short, so that the test sees it end


@dataclass
class Gateway:
    """A gateway listener serving every run, a fake provider behind it, and a quota book on a store."""

    url: str
    gateway: ModelGateway
    fake: FakeProvider
    book: QuotaBook
    store: Store
    failures: list[ProviderFailure] = field(default_factory=list)
    calls: list[MeteredCall] = field(default_factory=list)
    runs: int = 0

    def run_token(self, account: str) -> str:
        """A token for a new run whose calls go out with `account`'s key, wired as the worker wires it."""
        self.runs += 1
        upstream = Upstream("anthropic", self.fake.base_url, SecretStr("sk-real"), "x-api-key", account)
        hooks = self.book.hooks(
            account, lambda _, call: self.calls.append(call), lambda _, failed: self.failures.append(failed)
        )
        grant = Grant(
            run_id=f"01RUN{self.runs}.1", tenant_id="t", upstreams={"anthropic": upstream},
            on_usage=hooks.on_usage, on_failure=hooks.on_failure, gates=(hooks.gate,),
        )  # fmt: skip
        return self.gateway.tokens.issue(grant)

    async def call(self, token: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.post(
                f"{self.url}/anthropic/v1/messages", content=json.dumps(BODY), headers={"x-api-key": token}
            )

    async def stored(self, account: str) -> datetime | None:
        async with self.store.read() as conn:
            row = await quota_repo.get(conn, account, "anthropic")
        return row.exhausted_until if row is not None else None


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def gateway(fake: FakeProvider, database_url: str) -> AsyncIterator[Gateway]:
    fake.reset()
    store = Store(database_url)
    await upgrade_to_head(store)
    model_gateway = ModelGateway(GatewayTokens(), GatewaySettings(read_timeout_s=5, connect_timeout_s=5))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    served: ServedServer = await model_gateway.serve(sock, None)
    book = QuotaBook(store)
    yield Gateway(f"http://127.0.0.1:{sock.getsockname()[1]}", model_gateway, fake, book, store)
    await book.flush()
    await served.close()
    await model_gateway.close()
    await store.dispose()


async def test_after_a_quota_answer_the_accounts_runs_are_answered_by_the_gateway_until_it_ends(
    gateway: Gateway,
) -> None:
    run, other_run = gateway.run_token(SERVER_ACCOUNT), gateway.run_token(SERVER_ACCOUNT)
    gateway.fake.fail_next(429, retry_after_s=QUOTA_S)
    first = await gateway.call(run)
    assert first.status_code == 429
    [failure] = gateway.failures
    assert failure.retry_at is not None
    for token in (run, run, run, other_run):
        held = await gateway.call(token)
        assert held.status_code == 429
        assert 1 <= int(held.headers["retry-after"]) <= 2
        assert held.json()["error"]["type"] == "rate_limit_error"
        assert "anthropic quota exhausted until" in held.json()["error"]["message"]
    assert len(gateway.fake.requests) == 1  # only the first call reached the provider
    assert gateway.failures == [failure]  # the gateway's own answers are not the provider's failures
    await gateway.book.flush()
    assert await gateway.stored(SERVER_ACCOUNT) == failure.retry_at
    await asyncio.sleep(max(0.0, (failure.retry_at - utc_now()).total_seconds()))  # the quota's own end
    after = await gateway.call(run)
    assert after.status_code == 200
    assert len(gateway.fake.requests) == 2
    await gateway.book.flush()
    assert await gateway.stored(SERVER_ACCOUNT) is None  # the success cleared it


async def test_another_account_at_the_same_provider_is_not_held(gateway: Gateway) -> None:
    gateway.fake.fail_next(429, retry_after_s=60)
    assert (await gateway.call(gateway.run_token(SERVER_ACCOUNT))).status_code == 429
    own_key = gateway.run_token("01TENANTWITHITSOWNKEY00000")
    assert (await gateway.call(own_key)).status_code == 200
    assert len(gateway.fake.requests) == 2


async def test_a_quota_recorded_by_one_worker_holds_the_runs_of_another(gateway: Gateway) -> None:
    gateway.fake.fail_next(429, retry_after_s=60)
    assert (await gateway.call(gateway.run_token(SERVER_ACCOUNT))).status_code == 429
    await gateway.book.flush()
    elsewhere = QuotaBook(gateway.store)  # another worker's book, on the same store
    until = await elsewhere.exhausted_until(SERVER_ACCOUNT, "anthropic")
    assert until == gateway.failures[0].retry_at
    refusal = await elsewhere.refusal(SERVER_ACCOUNT, "anthropic")
    assert refusal is not None
    assert (refusal.status, refusal.retry_after_s is not None) == (429, True)


async def test_failures_other_than_a_timed_quota_are_not_recorded(gateway: Gateway) -> None:
    gateway.fake.fail_next(500)
    run = gateway.run_token(SERVER_ACCOUNT)
    assert (await gateway.call(run)).status_code == 500
    gateway.book.failed(SERVER_ACCOUNT, "anthropic", ProviderFailure("quota", 429, "no hint", None))
    await gateway.book.flush()
    assert await gateway.stored(SERVER_ACCOUNT) is None
    assert (await gateway.call(run)).status_code == 200
