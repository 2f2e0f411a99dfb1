"""The fake provider's failure modes over real HTTP: error replies, hangs, slow starts, broken streams."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.provider import FakeProvider
from tests.fakes.provider_client import (
    ANTHROPIC,
    CHAT,
    GEMINI_SSE,
    RESPONSES,
    STREAMED,
    anthropic_body,
    chat_body,
    gemini_body,
    post,
    responses_body,
    sse_events,
    sse_json,
)


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(shared: FakeProvider) -> FakeProvider:
    shared.reset()
    return shared


@pytest.fixture
def client(fake: FakeProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, timeout=5) as http:
        yield http


def opens(api: str, text: str) -> bool:
    """Whether an SSE body starts with the API's opening event."""
    first_name, _ = sse_events(text)[0]
    first = sse_json(text)[0]
    if api == "anthropic":
        return bool(first_name == first["type"] == "message_start")
    if api == "responses":
        return bool(first_name == first["type"] == "response.created")
    if api == "chat":
        return first["object"] == "chat.completion.chunk" and first["choices"][0]["finish_reason"] is None
    return "finishReason" not in first["candidates"][0] and bool(first["candidates"][0]["content"]["parts"])


def is_complete(api: str, text: str) -> bool:
    """Whether an SSE body ends the way the API ends a whole reply."""
    if api == "anthropic":
        return sse_events(text)[-1][0] == "message_stop"
    if api == "responses":
        return bool(sse_json(text)[-1]["type"] == "response.completed")
    if api == "chat":
        return text.endswith("data: [DONE]\n\n")
    return bool(sse_json(text)[-1]["candidates"][0].get("finishReason") == "STOP")


def read_until_error(response: httpx.Response) -> tuple[str, httpx.TransportError | None]:
    """The body received before the connection failed, and how it failed (None: it ended cleanly)."""
    received = bytearray()
    try:
        for chunk in response.iter_bytes():
            received += chunk
    except httpx.TransportError as error:
        return received.decode(), error
    return received.decode(), None


# --- error replies ------------------------------------------------------------------------------

REQUESTS = {
    "anthropic": (ANTHROPIC, anthropic_body(stream=True)),
    "openai": (RESPONSES, responses_body(stream=True)),
    "gemini": (GEMINI_SSE, gemini_body()),
}


def error_kind(family: str, body: dict[str, Any]) -> Any:
    if family == "anthropic":
        assert body["type"] == "error"
        return body["error"]["type"]
    if family == "openai":
        return body["error"]["code"] or body["error"]["type"]
    return body["error"]["status"]


@pytest.mark.parametrize(
    ("family", "status", "kind"),
    [
        ("anthropic", 401, "authentication_error"),
        ("anthropic", 500, "api_error"),
        ("openai", 401, "invalid_api_key"),
        ("openai", 500, "server_error"),
        ("gemini", 401, "UNAUTHENTICATED"),
        ("gemini", 500, "INTERNAL"),
    ],
)
def test_error_shapes(fake: FakeProvider, client: httpx.Client, family: str, status: int, kind: str) -> None:
    path, body = REQUESTS[family]
    fake.fail_next(status)
    failed = client.post(path, json=body)
    assert failed.status_code == status
    assert error_kind(family, failed.json()) == kind
    assert "retry-after" not in failed.headers
    assert client.post(path, json=body).status_code == 200  # one failure, then normal service


def test_rate_limit_anthropic(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(429, retry_after_s=7)
    failed = client.post(ANTHROPIC, json=anthropic_body(stream=True))
    assert failed.status_code == 429
    assert failed.json()["error"]["type"] == "rate_limit_error"
    assert failed.headers["retry-after"] == "7"
    assert failed.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert failed.headers["anthropic-ratelimit-requests-reset"].endswith("Z")


def test_rate_limit_openai(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(429, retry_after_s=2, count=2)
    for _ in range(2):
        failed = client.post(CHAT, json=chat_body(stream=False))
        assert failed.status_code == 429
        assert failed.json()["error"]["code"] == "rate_limit_exceeded"
        assert failed.headers["x-ratelimit-reset-requests"] == "2s"
        assert failed.headers["retry-after"] == "2"
    assert client.post(CHAT, json=chat_body(stream=False)).status_code == 200


def test_rate_limit_gemini(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(429, retry_after_s=3)
    failed = client.post(GEMINI_SSE, json=gemini_body())
    assert failed.status_code == 429
    error = failed.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["retryDelay"] == "3s"
    assert failed.headers["retry-after"] == "3"


# --- broken streams -----------------------------------------------------------------------------


@pytest.mark.parametrize("api", list(STREAMED))
def test_truncated_stream_drops_the_connection_after_the_opening(
    fake: FakeProvider, client: httpx.Client, api: str
) -> None:
    path, body = STREAMED[api]
    fake.set_mode("truncated", count=1)
    with client.stream("POST", path, json=body, headers={"x-api-key": f"key-{api}"}) as response:
        assert response.status_code == 200
        text, error = read_until_error(response)
    assert isinstance(error, httpx.RemoteProtocolError)  # the body was cut, not ended
    assert len(sse_events(text)) == 1
    assert opens(api, text)
    assert not is_complete(api, text)
    assert fake.requests[-1].api_key == f"key-{api}"  # a broken reply still logs who asked
    assert is_complete(api, post(client, path, body).text)  # count=1: then normal service


def test_malformed_sse(fake: FakeProvider, client: httpx.Client) -> None:
    fake.mode = "malformed_sse"
    response = post(client, ANTHROPIC, anthropic_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "message_stop" not in response.text
    _, data = sse_events(response.text)[0]
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    fake.mode = "normal"
    assert post(client, CHAT, chat_body(stream=False)).json()["choices"]  # JSON replies are unaffected


@pytest.mark.parametrize(
    ("api", "event"),
    [("anthropic", "message_start"), ("responses", "response.created"), ("chat", None), ("gemini", None)],
)
def test_malformed_sse_is_cut_json_in_each_api_framing(
    fake: FakeProvider, client: httpx.Client, api: str, event: str | None
) -> None:
    path, body = STREAMED[api]
    fake.set_mode("malformed_sse")
    text = post(client, path, body).text  # ends cleanly: the failure is the parse, not the connection
    [(name, data)] = sse_events(text)
    assert name == event
    assert data.startswith("{")
    with pytest.raises(json.JSONDecodeError):
        json.loads(data)
    assert is_complete(api, post(client, path, body).text)


@pytest.mark.parametrize("api", list(STREAMED))
def test_stall_sends_the_opening_then_nothing_until_stop(api: str) -> None:
    path, body = STREAMED[api]
    fake = FakeProvider().start()
    try:
        fake.set_mode("stall")
        timeout = httpx.Timeout(5, read=0.3)
        with httpx.Client(base_url=fake.base_url, timeout=timeout) as http:
            with http.stream("POST", path, json=body) as response:
                chunks = response.iter_bytes()
                opening = next(chunks).decode()
                with pytest.raises(httpx.ReadTimeout):
                    next(chunks)
            assert opens(api, opening)
            assert is_complete(api, post(http, path, body).text)  # count=1: then normal service
    finally:
        started = time.monotonic()
        fake.stop()
    assert time.monotonic() - started < 2  # stop releases the stalled stream


# --- slow starts and hangs ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_slow_first_byte_delays_the_reply(fake: FakeProvider, client: httpx.Client, stream: bool) -> None:
    fake.first_byte_delay_s = 0.6
    fake.set_mode("slow_first_byte", count=2)
    with (
        httpx.Client(base_url=fake.base_url, timeout=0.2) as impatient,
        pytest.raises(httpx.ReadTimeout),
    ):
        impatient.post(CHAT, json=chat_body(stream=stream))
    started = time.monotonic()
    with client.stream("POST", CHAT, json=chat_body(stream=stream)) as response:
        waited = time.monotonic() - started  # until the status line and headers: the first bytes
        assert response.read()
    assert waited >= 0.6
    started = time.monotonic()
    post(client, CHAT, chat_body(stream=stream))
    assert time.monotonic() - started < 0.5  # count=2 spent: back to normal


def test_hang_until_client_timeout_and_stop_releases_it() -> None:
    fake = FakeProvider().start()
    try:
        fake.mode = "hang"
        with httpx.Client(base_url=fake.base_url, timeout=0.3) as http, pytest.raises(httpx.ReadTimeout):
            http.post(RESPONSES, json=responses_body(stream=True))
        assert len(fake.requests) == 1  # the request was accepted and read before hanging
    finally:
        started = time.monotonic()
        fake.stop()
    assert time.monotonic() - started < 2


def test_hang_for_one_request() -> None:
    fake = FakeProvider().start()
    try:
        fake.set_mode("hang")
        with httpx.Client(base_url=fake.base_url, timeout=0.3) as http:
            with pytest.raises(httpx.ReadTimeout):
                http.post(CHAT, json=chat_body(stream=False))
            assert post(http, CHAT, chat_body(stream=False)).json()["choices"]
    finally:
        fake.stop()


# --- how modes are queued -----------------------------------------------------------------------


def test_stream_modes_wait_for_a_streamed_request(fake: FakeProvider, client: httpx.Client) -> None:
    fake.set_mode("truncated")
    assert post(client, CHAT, chat_body(stream=False)).json()["choices"]  # JSON: not a stream to cut
    assert post(client, "/v1/messages/count_tokens", anthropic_body(stream=True)).json()["input_tokens"]
    with client.stream("POST", CHAT, json=chat_body(stream=True)) as response:
        _, error = read_until_error(response)
    assert isinstance(error, httpx.RemoteProtocolError)
    assert is_complete("chat", post(client, CHAT, chat_body(stream=True)).text)


def test_failures_are_served_before_queued_modes(fake: FakeProvider, client: httpx.Client) -> None:
    fake.fail_next(500)
    fake.set_mode("malformed_sse")
    assert client.post(CHAT, json=chat_body(stream=True)).status_code == 500
    assert not is_complete("chat", post(client, CHAT, chat_body(stream=True)).text)
    assert is_complete("chat", post(client, CHAT, chat_body(stream=True)).text)


def test_standing_mode_and_reset(fake: FakeProvider, client: httpx.Client) -> None:
    fake.set_mode("malformed_sse", count=None)
    assert fake.mode == "malformed_sse"
    for _ in range(2):
        assert not is_complete("chat", post(client, CHAT, chat_body(stream=True)).text)
    fake.set_mode("truncated", count=3)
    fake.reset()  # clears the standing mode and the queue alike
    assert is_complete("chat", post(client, CHAT, chat_body(stream=True)).text)
