"""The model gateway against the fake provider: real sockets, real HTTP on both sides."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from outpost.agents.events import Usage
from outpost.gateway.metering import MeteredCall
from outpost.gateway.server import ModelGateway
from outpost.gateway.tokens import CallGate, CallRefusal, GatewayTokens, Grant
from outpost.gateway.upstream_errors import ProviderFailure
from outpost.gateway.upstreams import KEY_STYLES, Upstream
from outpost.sandbox.served import ServedServer
from outpost.settings import GatewaySettings
from tests.fakes.provider import FakeProvider

REAL_KEY = "sk-real-provider-key-0123456789"
RUN = "01JRUN.1"
ANTHROPIC_BODY = {"model": "claude-sonnet-5-5", "max_tokens": 100, "stream": True,
                  "messages": [{"role": "user", "content": "say hi"}]}  # fmt: skip


@dataclass
class Harness:
    gateway: ModelGateway
    url: str
    fake: FakeProvider
    usage: list[tuple[str, MeteredCall]] = field(default_factory=list)
    failures: list[tuple[str, ProviderFailure]] = field(default_factory=list)

    def grant(
        self, run_id: str = RUN, providers: tuple[str, ...] = ("anthropic", "openai", "gemini"),
        gates: tuple[CallGate, ...] = (),
    ) -> str:  # fmt: skip
        upstreams = {
            name: Upstream(name, self.fake.base_url, SecretStr(REAL_KEY), KEY_STYLES.get(name, "bearer"))
            for name in providers
        }
        grant = Grant(
            run_id=run_id, tenant_id="t", upstreams=upstreams,
            on_usage=lambda provider, call: self.usage.append((provider, call)),
            on_failure=lambda provider, failure: self.failures.append((provider, failure)),
            gates=gates,
        )  # fmt: skip
        return self.gateway.tokens.issue(grant)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


@pytest.fixture
async def harness(fake: FakeProvider) -> AsyncIterator[Harness]:
    fake.reset()
    settings = GatewaySettings(read_timeout_s=1.0, connect_timeout_s=1.0, max_request_bytes=64 * 1024)
    gateway = ModelGateway(GatewayTokens(), settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    served: ServedServer = await gateway.serve(sock, RUN)
    yield Harness(gateway, f"http://127.0.0.1:{sock.getsockname()[1]}", fake)
    await served.close()
    await gateway.close()


async def _post(url: str, body: object, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(url, content=json.dumps(body), headers=headers)


async def test_anthropic_stream_is_relayed_unchanged_with_the_real_key_and_metered(harness: Harness) -> None:
    token = harness.grant()
    direct = await _post(f"{harness.fake.base_url}/v1/messages", ANTHROPIC_BODY, {"x-api-key": "x"})
    through = await _post(
        f"{harness.url}/anthropic/v1/messages?beta=true", ANTHROPIC_BODY, {"x-api-key": token}
    )
    assert through.status_code == 200
    assert through.headers["content-type"].startswith("text/event-stream")
    assert through.content == direct.content
    forwarded = harness.fake.requests[-1]
    assert forwarded.api_key == REAL_KEY
    assert forwarded.query == "beta=true"
    assert token not in json.dumps(forwarded.headers)
    assert harness.usage == [
        ("anthropic", MeteredCall("claude-sonnet-5-5", Usage(1111, 22, 333, 44))),
    ]


async def test_responses_chat_and_gemini_are_metered(harness: Harness) -> None:
    token = harness.grant()
    bearer = {"authorization": f"Bearer {token}"}
    responses = {"model": "gpt-6.1-sol", "stream": True, "input": "hi"}
    chat = {"model": "gpt-6.1-sol", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    assert (await _post(f"{harness.url}/openai/v1/responses", responses, bearer)).status_code == 200
    assert (await _post(f"{harness.url}/openai/v1/chat/completions", chat, bearer)).status_code == 200
    streamed = f"{harness.url}/gemini/v1beta/models/gemini-3.1-pro:streamGenerateContent?alt=sse&key={token}"
    assert (await _post(streamed, gemini, {})).status_code == 200
    # The gateway asked for usage in the streamed chat answer; the run did not.
    assert harness.fake.requests[-2].body["stream_options"] == {"include_usage": True}
    assert harness.fake.requests[-1].query == "alt=sse"
    assert harness.fake.requests[-1].api_key == REAL_KEY
    assert [provider for provider, _ in harness.usage] == ["openai", "openai", "gemini"]
    assert all(call.usage.input_tokens > 0 and call.usage.output_tokens > 0 for _, call in harness.usage)
    assert harness.usage[2][1].model is not None


@pytest.mark.parametrize("how", ["unknown", "other run", "revoked", "missing"])
async def test_a_token_that_is_not_this_runs_live_token_is_refused(harness: Harness, how: str) -> None:
    tokens = {"unknown": "opgw_" + "A" * 43, "other run": harness.grant(run_id="01JOTHER.1"), "missing": ""}
    if how == "revoked":
        tokens["revoked"] = harness.grant()
        harness.gateway.tokens.revoke(tokens["revoked"])
    response = await _post(f"{harness.url}/anthropic/v1/messages", ANTHROPIC_BODY, {"x-api-key": tokens[how]})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert harness.fake.requests == []


async def test_a_gate_that_refuses_answers_in_the_providers_format_without_forwarding(
    harness: Harness,
) -> None:
    asked: list[str] = []

    async def admit(provider: str) -> None:
        asked.append(provider)

    async def refuse(provider: str) -> CallRefusal:
        return CallRefusal(429, f"{provider} quota exhausted", retry_after_s=30)

    token = harness.grant(gates=(admit, refuse, admit))
    response = await _post(f"{harness.url}/anthropic/v1/messages", ANTHROPIC_BODY, {"x-api-key": token})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "30"
    assert response.json()["error"] == {"type": "rate_limit_error", "message": "anthropic quota exhausted"}
    assert asked == ["anthropic"]  # the gates after the refusing one are not asked
    assert harness.fake.requests == []
    passing = harness.grant(run_id=RUN, gates=(admit,))
    passed = await _post(f"{harness.url}/anthropic/v1/messages", ANTHROPIC_BODY, {"x-api-key": passing})
    assert passed.is_success
    assert len(harness.fake.requests) == 1


async def test_a_provider_outside_the_grant_is_refused(harness: Harness) -> None:
    token = harness.grant(providers=("anthropic",))
    response = await _post(
        f"{harness.url}/openai/v1/responses", {"model": "m"}, {"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    assert harness.fake.requests == []


@pytest.mark.parametrize(("status", "kind"), [(401, "auth"), (429, "quota"), (500, "provider_error")])
async def test_provider_errors_are_relayed_and_classified(harness: Harness, status: int, kind: str) -> None:
    token = harness.grant()
    harness.fake.fail_next(status, retry_after_s=30 if status == 429 else None)
    response = await _post(f"{harness.url}/anthropic/v1/messages", ANTHROPIC_BODY, {"x-api-key": token})
    assert response.status_code == status
    assert response.json()["error"]["message"] == f"fake {status}"
    [(provider, failure)] = harness.failures
    assert (provider, failure.kind, failure.status) == ("anthropic", kind, status)
    if status == 429:
        assert failure.retry_at is not None
        assert 20 < (failure.retry_at - datetime.now(UTC)).total_seconds() <= 31


async def test_an_oversized_body_is_refused_before_the_provider(harness: Harness) -> None:
    token = harness.grant()
    body = {**ANTHROPIC_BODY, "messages": [{"role": "user", "content": "x" * 100_000}]}
    response = await _post(f"{harness.url}/anthropic/v1/messages", body, {"x-api-key": token})
    assert response.status_code == 413
    assert harness.fake.requests == []


async def test_an_upstream_that_hangs_times_out_as_a_provider_error(harness: Harness) -> None:
    token = harness.grant()
    harness.fake.set_mode("hang")
    response = await _post(f"{harness.url}/anthropic/v1/messages", ANTHROPIC_BODY, {"x-api-key": token})
    assert response.status_code == 504
    assert [(p, f.kind, f.status) for p, f in harness.failures] == [("anthropic", "provider_error", 504)]


@pytest.mark.parametrize("mode", ["truncated", "stall"])
async def test_a_broken_stream_reaches_the_run_as_a_broken_response(harness: Harness, mode: str) -> None:
    token = harness.grant()
    harness.fake.set_mode(mode)  # type: ignore[arg-type]
    async with httpx.AsyncClient(timeout=10) as client:
        request = client.build_request(
            "POST", f"{harness.url}/anthropic/v1/messages", json=ANTHROPIC_BODY, headers={"x-api-key": token}
        )
        response = await client.send(request, stream=True)
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()
    assert [(p, f.kind) for p, f in harness.failures][:1] == [("anthropic", "provider_error")]


async def test_a_malformed_stream_is_relayed_as_is_and_counts_as_a_provider_error(harness: Harness) -> None:
    token = harness.grant()
    harness.fake.set_mode("malformed_sse")
    direct = await _post(f"{harness.fake.base_url}/v1/messages", ANTHROPIC_BODY, {"x-api-key": "x"})
    harness.fake.set_mode("malformed_sse")
    through = await _post(f"{harness.url}/anthropic/v1/messages", ANTHROPIC_BODY, {"x-api-key": token})
    assert through.content == direct.content
    assert harness.usage == []
    assert [(p, f.kind) for p, f in harness.failures] == [("anthropic", "provider_error")]


async def test_one_connection_carries_many_calls(harness: Harness) -> None:
    token = harness.grant()
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(3):
            response = await client.post(
                f"{harness.url}/anthropic/v1/messages", json=ANTHROPIC_BODY, headers={"x-api-key": token}
            )
            assert response.status_code == 200
    assert len(harness.usage) == 3


async def test_a_malformed_request_gets_400(harness: Harness) -> None:
    host, port = harness.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GARBAGE\r\n\r\n")
    await writer.drain()
    reply = await reader.read(1024)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400")
    assert harness.fake.requests == []


@pytest.mark.parametrize(
    "target",
    [
        "/anthropic/../openai/v1/responses",
        "/anthropic/v1/./messages",
        "/anthropic/%2e%2e/v1/messages",
        "/anthropic/v1%2Fmessages",
        "/anthropic//v1/messages",
        "/anthropic/v1\\messages",
        "http://evil.example/v1/messages",
    ],
)
async def test_a_target_that_could_climb_out_of_the_provider_base_is_refused(
    harness: Harness, target: str
) -> None:
    token = harness.grant()
    host, port = harness.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"POST {target} HTTP/1.1\r\nHost: x\r\nx-api-key: {token}\r\nContent-Length: 2\r\n\r\n{{}}".encode()
    )
    await writer.drain()
    reply = await reader.read(4096)
    writer.close()
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert harness.fake.requests == []


@pytest.mark.parametrize("token", ["opgw_" + "A" * 5000, "Bearer", "opgw_\u00e9", "sk-real-looking"])
async def test_odd_credentials_are_refused_without_reaching_the_provider(
    harness: Harness, token: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{harness.url}/openai/v1/responses",
            content=b"{}",
            headers={"authorization": f"Bearer {token}".encode()},
        )
    assert response.status_code == 401
    assert harness.fake.requests == []


@pytest.mark.parametrize(
    "body", [b"{" * 50_000, b"not json at all", b'{"model": 7, "stream": "yes"}', b"\xff\xfe"]
)
async def test_a_hostile_body_is_forwarded_without_harm(harness: Harness, body: bytes) -> None:
    token = harness.grant()
    async with httpx.AsyncClient(timeout=10) as client:
        url = f"{harness.url}/anthropic/v1/messages"
        response = await client.post(url, content=body, headers={"x-api-key": token})
        assert response.status_code < 600  # whatever the provider answered, relayed
        assert harness.fake.requests[-1].api_key == REAL_KEY
        again = await client.post(url, json=ANTHROPIC_BODY, headers={"x-api-key": token})
        assert again.status_code == 200
