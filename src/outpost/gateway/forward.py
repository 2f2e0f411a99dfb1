"""One model call through the gateway: check the token, swap in the provider's key, forward, stream the
answer back byte for byte, and meter it.

A run addresses a provider by the first path segment (`/anthropic/v1/messages` goes to the Anthropic
upstream's `/v1/messages`). Its token arrives wherever its CLI puts a provider key (`x-api-key`,
`Authorization: Bearer`, `x-goog-api-key`, or Gemini's `?key=`); every such header is dropped before
forwarding and the real key, which never enters a sandbox, is added. The response is relayed unchanged
while a `UsageMeter` reads a copy; an error status is classified into a `ProviderFailure` for the run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode

import httpx
import orjson

from outpost.gateway.call_bounds import plan_call
from outpost.gateway.key_echo import ErrorBody
from outpost.gateway.metering import UsageMeter, WireApi, wire_api_for
from outpost.gateway.replies import error_body
from outpost.gateway.tokens import CallRefusal, GatewayTokens, Grant
from outpost.gateway.upstream_errors import ProviderFailure, classify_failure
from outpost.gateway.upstreams import CREDENTIAL_HEADERS, Upstream
from outpost.settings import GatewaySettings

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
# Per-hop headers (RFC 9110 7.6.1) and those the HTTP client or h11 sets again for the next hop.
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"proxy-authenticate",
     b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length"}
)  # fmt: skip
_DROPPED_FROM_RUN = _HOP_BY_HOP | {name.encode() for name in CREDENTIAL_HEADERS} | {b"accept-encoding"}
_ERROR_SAMPLE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request as the run sent it."""

    method: str
    target: str
    headers: Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Headers
    body: bytes = b""

    @classmethod
    def error(cls, provider: str | None, status: int, message: str) -> Reply:
        body = error_body(provider, status, message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        return cls(status, headers, body)

    @classmethod
    def refusal(cls, provider: str | None, refusal: CallRefusal) -> Reply:
        reply = cls.error(provider, refusal.status, refusal.message)
        if refusal.retry_after_s is not None:
            reply.headers.append((b"retry-after", str(max(0, refusal.retry_after_s)).encode()))
        return reply


async def _first_refusal(grant: Grant, provider: str) -> CallRefusal | None:
    for gate in grant.gates:
        refusal = await gate(provider)
        if refusal is not None:
            return refusal
    return None


class Responder(Protocol):
    async def start(self, status: int, headers: Headers) -> None: ...

    async def body(self, chunk: bytes) -> None: ...

    async def end(self) -> None: ...

    async def send(self, reply: Reply) -> None: ...


@dataclass(slots=True)
class _Call:
    """A checked request on its way to `upstream`."""

    grant: Grant
    upstream: Upstream
    path: str
    query: str
    api: WireApi | None
    body: bytes
    model: str | None = None
    streaming_request: bool = False
    headers: Headers = field(default_factory=list)


class Forwarder:
    """Handles the requests of one listener (one run's, or every run's when `run_id` is None)."""

    def __init__(
        self, tokens: GatewayTokens, client: httpx.AsyncClient, settings: GatewaySettings, run_id: str | None
    ) -> None:
        self._tokens = tokens
        self._client = client
        self._settings = settings
        self._run_id = run_id

    async def handle(self, exchange: Exchange, responder: Responder) -> None:
        if not _is_plain_path(exchange.target):
            await responder.send(Reply.error(None, 400, "the request target must be a plain absolute path"))
            return
        provider, path, query = _split_target(exchange.target)
        query, query_key = _take_query_key(query)
        grant = self._tokens.check(_token(exchange.headers) or query_key, self._run_id)
        if grant is None:
            await responder.send(Reply.error(provider, 401, "invalid or expired gateway token"))
            return
        upstream = grant.upstreams.get(provider or "")
        if upstream is None:
            allowed = ", ".join(sorted(grant.upstreams)) or "none"
            message = f"this run may call only its model's provider ({allowed}), not {provider!r}"
            await responder.send(Reply.error(provider, 403 if provider else 404, message))
            return
        refusal = await _first_refusal(grant, provider or "")
        if refusal is not None:
            await responder.send(Reply.refusal(provider, refusal))
            return
        call = _Call(grant, upstream, path, query, wire_api_for(path), exchange.body)
        parsed = _prepare(call, exchange.headers)
        if grant.hold is None:
            await self._forward(exchange.method, call, responder)
            return
        async with grant.hold(upstream.name, plan_call(call.model, call.body, parsed)) as refusal:
            if refusal is not None:
                await responder.send(Reply.refusal(provider, refusal))
                return
            await self._forward(exchange.method, call, responder)

    async def _forward(self, method: str, call: _Call, responder: Responder) -> None:
        request = self._client.build_request(
            method, call.upstream.url(call.path, call.query), headers=call.headers, content=call.body
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.TimeoutException:
            await self._fail(call, responder, 504, "the provider did not answer in time")
            return
        except httpx.HTTPError as exc:
            await self._fail(call, responder, 502, f"cannot reach the provider: {type(exc).__name__}")
            return
        try:
            await self._relay(call, response, responder)
        finally:
            await response.aclose()

    async def _relay(self, call: _Call, response: httpx.Response, responder: Responder) -> None:
        await responder.start(response.status_code, _response_headers(response))
        streaming = response.headers.get("content-type", "").startswith("text/event-stream")
        meter = None
        if call.api is not None and response.status_code < 400:
            meter = UsageMeter(call.api, streaming=streaming, request_model=call.model)
        # An error body is relayed with the provider key masked, should the provider quote it.
        error = ErrorBody(call.upstream.api_key, _ERROR_SAMPLE_BYTES) if response.status_code >= 400 else None
        try:
            async for chunk in response.aiter_raw():
                if meter is not None:
                    meter.feed(chunk)
                await _send_body(responder, error.feed(chunk) if error is not None else chunk)
            if error is not None:
                await _send_body(responder, error.finish())
        except httpx.HTTPError as exc:
            self._report_failure(call, 502, f"the provider's response broke off: {type(exc).__name__}")
            raise ConnectionAbortedError from exc  # the run must see a broken response, not an ending
        finally:
            self._report_usage(call, meter)  # tokens spent count even when the answer was cut off
        if error is not None:
            failure = classify_failure(
                response.status_code, dict(response.headers), bytes(error.sample), datetime.now(UTC)
            )
            if failure is not None:
                call.grant.on_failure(call.upstream.name, failure)
        await responder.end()

    async def _fail(self, call: _Call, responder: Responder, status: int, message: str) -> None:
        self._report_failure(call, status, message)
        await responder.send(Reply.error(call.upstream.name, status, message))

    def _report_failure(self, call: _Call, status: int, message: str) -> None:
        failure = ProviderFailure(kind="provider_error", status=status, message=message, retry_at=None)
        call.grant.on_failure(call.upstream.name, failure)

    def _report_usage(self, call: _Call, meter: UsageMeter | None) -> None:
        metered = meter.finish() if meter is not None else None
        if metered is not None:
            call.grant.on_usage(call.upstream.name, metered)
        elif meter is not None:
            # A well-formed answer always states its usage: one without is malformed or cut short.
            upstream, run = call.upstream.name, call.grant.run_id
            log.warning("no usage in %s's answer to %s (run %s)", upstream, call.path, run)
            self._report_failure(call, 502, "the provider's answer was malformed or incomplete (no usage)")


async def _send_body(responder: Responder, chunk: bytes) -> None:
    if chunk:  # the masking may hold a whole chunk back; an empty one is not sent
        await responder.body(chunk)


_ENCODED_SEPARATORS = ("%2e", "%2f", "%5c")


def _is_plain_path(target: str) -> bool:
    """Origin form (`/provider/…`) without dot segments, empty segments, backslashes or encoded dots and
    slashes: the path is appended to a provider's base URL, so it must not be able to climb out of it."""
    path = target.partition("?")[0]
    if not path.startswith("/") or "\\" in path or "//" in path:
        return False
    lowered = path.lower()
    if any(encoded in lowered for encoded in _ENCODED_SEPARATORS):
        return False
    return not any(segment in (".", "..") for segment in path.split("/"))


def _split_target(target: str) -> tuple[str | None, str, str]:
    """`/anthropic/v1/messages?beta=true` → ("anthropic", "/v1/messages", "beta=true")."""
    path, _, query = target.partition("?")
    _, _, rest = path.partition("/")
    provider, slash, remainder = rest.partition("/")
    return (provider or None), slash + remainder, query


def _take_query_key(query: str) -> tuple[str, str | None]:
    """Gemini clients may send their key as `?key=`: take it out of what is forwarded."""
    if "key=" not in query:
        return query, None
    pairs = parse_qsl(query, keep_blank_values=True)
    key = next((value for name, value in pairs if name == "key"), None)
    return urlencode([(name, value) for name, value in pairs if name != "key"]), key


def _token(headers: Headers) -> str | None:
    for name, value in headers:
        if name in (b"x-api-key", b"x-goog-api-key", b"api-key"):
            return value.decode("latin-1")
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].decode("latin-1").strip()
    return None


def _prepare(call: _Call, headers: Headers) -> dict[str, Any] | None:
    """The upstream request's headers and body: the run's, minus its credentials and per-hop headers,
    plus the real key; plain (identity) encoding so the meter can read the answer. Gives the body parsed
    as a JSON object, if it is one."""
    body = _json(call.body)
    if body is not None:
        call.model = body.get("model") if isinstance(body.get("model"), str) else None
        call.streaming_request = body.get("stream") is True
        if call.api == "chat_completions" and call.streaming_request and _add_usage_option(body):
            call.body = json.dumps(body).encode()
    if call.model is None and call.api == "gemini":
        call.model = call.path.rpartition("/models/")[2].partition(":")[0] or None
    kept = [(name, value) for name, value in headers if name.lower() not in _DROPPED_FROM_RUN]
    call.headers = [*kept, (b"accept-encoding", b"identity"), *call.upstream.credential_headers()]
    return body


def _add_usage_option(body: dict[str, Any]) -> bool:
    """A streamed Chat Completions answer carries usage only when asked (`stream_options.include_usage`);
    ask for it, so that every call is metered. True when the body changed."""
    options = body.get("stream_options")
    if options is None:
        body["stream_options"] = {"include_usage": True}
        return True
    if isinstance(options, dict) and "include_usage" not in options:
        options["include_usage"] = True
        return True
    return False


def _json(body: bytes) -> dict[str, Any] | None:
    if not body or body[:1] != b"{":
        return None
    try:
        value = orjson.loads(body)  # refuses nesting past 1,024 levels (ValueError)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _response_headers(response: httpx.Response) -> Headers:
    headers = [(name.lower(), value) for name, value in response.headers.raw]
    kept = [(name, value) for name, value in headers if name not in _HOP_BY_HOP]
    length = response.headers.get("content-length")
    # The body is relayed as received (aiter_raw), so a declared length still holds.
    return [*kept, (b"content-length", length.encode())] if length is not None else kept
