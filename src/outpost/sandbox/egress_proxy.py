"""The host-side HTTP proxy that is a sandbox's only way out.

A sandbox has no route; the host hands this proxy a listening socket created inside the sandbox's network
namespace (see `netns.listener_in_netns`), so the proxy knows the job from the listener. One connection
carries one request:

* `CONNECT host:port` opens a tunnel; `METHOD http://host[:port]/path` (absolute form) is forwarded once,
  with `Connection: close`. Anything else is answered 405; a malformed head 400; a head over the size cap
  431; a head not complete within the header timeout 408; a connection over the job's cap 503.
* The host is checked by name (`EgressPolicy.check_host`), resolved here, never by the sandbox, and every
  address is checked (`EgressPolicy.check_addresses`); a refusal is answered 403 with the reason. The
  proxy then dials the checked address itself, so a second lookup cannot rebind the name; 502 or 504 when
  resolving or connecting fails.
* For a tunnel to an SNI port (443), the proxy answers 200, reads the TLS ClientHello and closes the tunnel
  unless its server name equals the CONNECT host; only then does any byte reach the upstream.
* Bytes are then spliced both ways until both sides close or nothing moves for the idle timeout.

Every request ends in exactly one `EgressDecisionEvent` (allowed or refused, with the reason) passed to the
listener's `on_decision`; a connection that closes before sending a complete head records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import cast

from outpost.sandbox.egress_http import ProxyRequest, Refused, parse_request_head, upstream_head
from outpost.sandbox.egress_policy import EgressPolicy, check_server_name
from outpost.sandbox.served import ServedServer

log = logging.getLogger(__name__)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port)` → the addresses to check and dial. Raises OSError (e.g. socket.gaierror) when it cannot."""
Dialer = Callable[[str, int], Awaitable[Streams]]
"""`(ip, port)` → a connection to exactly that address. Raises OSError when it cannot connect."""

CHUNK_BYTES = 65536
CLOSE_TIMEOUT_S = 2.0
LINGER_S = 1.0
LISTEN_BACKLOG = 128  # start_server listens again on the socket it is given, by default with 100
TLS_HANDSHAKE_RECORD = 22
MAX_TLS_RECORD_BYTES = 2**14  # RFC 8446 5.1: a plaintext record carries at most 2^14 bytes
MAX_CLIENT_HELLO_BYTES = 2**16


@dataclass(frozen=True, slots=True)
class EgressLimits:
    """Per-listener limits; the connection cap counts every open connection of one job."""

    max_header_bytes: int = 8192
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    max_connections_per_job: int = 32
    resolve_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    sni_ports: frozenset[int] = frozenset({443})


@dataclass(frozen=True, slots=True)
class EgressDecisionEvent:
    """One request's outcome. `method`, `host` and `port` are empty/0 when no request line was read."""

    job: str
    method: str
    host: str
    port: int
    allowed: bool
    reason: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class _Job:
    name: str
    policy: EgressPolicy
    on_decision: Callable[[EgressDecisionEvent], None]

    def record(self, request: ProxyRequest | None, allowed: bool, reason: str) -> None:
        method, host, port = (request.method, request.host, request.port) if request else ("", "", 0)
        try:
            self.on_decision(EgressDecisionEvent(self.name, method, host, port, allowed, reason))
        except Exception:  # a broken sink must not take the proxy down with it
            log.exception("recording an egress decision for job %s failed", self.name)


EgressListener = ServedServer


async def resolve_with_getaddrinfo(host: str, port: int) -> list[str]:
    """The host's own resolver; distinct addresses in its order. Raises OSError (socket.gaierror)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def dial_address(ip: str, port: int) -> Streams:
    """A TCP connection to `ip`; AI_NUMERICHOST makes sure nothing is looked up. Raises OSError."""
    return await asyncio.open_connection(ip, port, flags=socket.AI_NUMERICHOST)


class EgressProxy:
    """Serves listeners for many jobs on the running event loop."""

    def __init__(
        self,
        limits: EgressLimits | None = None,
        resolver: Resolver | None = None,
        dialer: Dialer | None = None,
    ) -> None:
        self._limits = limits or EgressLimits()
        self._resolve = resolver or resolve_with_getaddrinfo
        self._dial = dialer or dial_address
        self._open: dict[str, int] = {}  # job → open connections, over all of its listeners

    async def serve(
        self,
        listener: socket.socket,
        job: str,
        policy: EgressPolicy,
        on_decision: Callable[[EgressDecisionEvent], None],
    ) -> EgressListener:
        """Start serving `listener` (a bound TCP socket; it is made non-blocking, and closed by the handle)
        for `job`. `on_decision` runs on the event loop, so it must not block (queue the event instead).
        Raises OSError when the socket cannot listen."""
        connections: set[asyncio.Task[None]] = set()
        context = _Job(job, policy, on_decision)

        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = cast("asyncio.Task[None]", asyncio.current_task())  # start_server runs each in a task
            connections.add(task)
            try:
                await self._handle(reader, writer, context)
            except asyncio.CancelledError:
                pass  # close() ended this connection; Python 3.11's start_server logs a cancelled handler
            finally:
                connections.discard(task)

        listener.setblocking(False)
        # The stream limit is the header cap: readuntil() refuses a head that outgrows it.
        server = await asyncio.start_server(
            on_connect, sock=listener, limit=self._limits.max_header_bytes, backlog=LISTEN_BACKLOG
        )
        return EgressListener(server, connections)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, job: _Job) -> None:
        try:
            await self._counted(reader, writer, job)
        except Refused as refusal:
            job.record(refusal.request, False, refusal.reason)
            await _refuse(reader, writer, refusal.status, refusal.reason)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing was decided that is not recorded already
        finally:
            await _close(writer)

    async def _counted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, job: _Job) -> None:
        cap = self._limits.max_connections_per_job
        if self._open.get(job.name, 0) >= cap:
            raise Refused(503, f"too many open connections for this job (limit {cap})")
        self._open[job.name] = self._open.get(job.name, 0) + 1
        try:
            await self._serve_request(reader, writer, job)
        finally:
            self._open[job.name] -= 1
            if not self._open[job.name]:
                del self._open[job.name]

    async def _serve_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, job: _Job
    ) -> None:
        request = parse_request_head(await self._read_head(reader))
        decision = job.policy.check_host(request.host, request.port)
        request = replace(request, host=decision.host)
        if not decision.allowed:
            raise Refused(403, decision.reason, request)
        addresses = await self._resolve_checked(request, job.policy)
        upstream_reader, upstream_writer, address = await self._dial_first(addresses, request)
        try:
            if request.method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                if request.port in self._limits.sni_ports:
                    upstream_writer.write(await self._checked_client_hello(reader, request))
            else:
                upstream_writer.write(upstream_head(request))
            job.record(request, True, f"{decision.reason}; connected to {address}")
            await splice(reader, writer, upstream_reader, upstream_writer, self._limits.idle_timeout_s)
        finally:
            await _close(upstream_writer)

    async def _read_head(self, reader: asyncio.StreamReader) -> bytes:
        limits = self._limits
        try:
            async with asyncio.timeout(limits.header_timeout_s):
                return await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            raise Refused(408, f"request head not complete within {limits.header_timeout_s} s") from None
        except asyncio.LimitOverrunError:
            raise Refused(431, f"request head over {limits.max_header_bytes} bytes") from None

    async def _resolve_checked(self, request: ProxyRequest, policy: EgressPolicy) -> list[str]:
        try:
            async with asyncio.timeout(self._limits.resolve_timeout_s):
                addresses = await self._resolve(request.host, request.port)
        except TimeoutError:
            raise Refused(504, f"resolving {request.host} timed out", request) from None
        except OSError as exc:
            raise Refused(502, f"cannot resolve {request.host}: {exc}", request) from None
        decision = policy.check_addresses(addresses, request.host)
        if not decision.allowed:
            raise Refused(403, decision.reason, request)
        return addresses

    async def _dial_first(
        self, addresses: list[str], request: ProxyRequest
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        """A connection to the first checked address that answers; 502 when none does."""
        failures = []
        for address in addresses:
            try:
                async with asyncio.timeout(self._limits.connect_timeout_s):
                    upstream_reader, upstream_writer = await self._dial(address, request.port)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{address}: {str(exc) or 'timed out'}")
                continue
            return upstream_reader, upstream_writer, address
        raise Refused(
            502, f"cannot connect to {request.host}:{request.port} ({'; '.join(failures)})", request
        )

    async def _checked_client_hello(self, reader: asyncio.StreamReader, request: ProxyRequest) -> bytes:
        """The client's raw ClientHello records, once their server name is the CONNECT host."""
        try:
            async with asyncio.timeout(self._limits.header_timeout_s):
                raw, handshake = await read_client_hello(reader)
        except TimeoutError:
            raise Refused(None, "no TLS ClientHello within the header timeout", request) from None
        except (asyncio.IncompleteReadError, OSError):
            raise Refused(None, "tunnel closed before a complete TLS ClientHello", request) from None
        except ValueError as exc:
            raise Refused(None, f"malformed TLS ClientHello: {exc}", request) from None
        decision = check_server_name(handshake, request.host)
        if not decision.allowed:
            raise Refused(None, decision.reason, request)
        return raw


async def read_client_hello(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """`(raw records, handshake message)` of the first TLS handshake message, which may span records.

    Raises ValueError when the bytes are not TLS handshake records or the message exceeds
    MAX_CLIENT_HELLO_BYTES, and asyncio.IncompleteReadError when the stream ends first.
    """
    raw = bytearray()
    handshake = bytearray()
    while True:
        header = await reader.readexactly(5)
        length = int.from_bytes(header[3:5], "big")
        if header[0] != TLS_HANDSHAKE_RECORD or header[1] != 3 or not 0 < length <= MAX_TLS_RECORD_BYTES:
            raise ValueError("not a TLS handshake record")
        body = await reader.readexactly(length)
        raw += header + body
        handshake += body
        if len(handshake) >= 4:
            needed = 4 + int.from_bytes(handshake[1:4], "big")
            if needed > MAX_CLIENT_HELLO_BYTES:
                raise ValueError(f"handshake message over {MAX_CLIENT_HELLO_BYTES} bytes")
            if len(handshake) >= needed:
                return bytes(raw), bytes(handshake[:needed])


async def splice(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
    idle_timeout_s: float,
) -> None:
    """Copy bytes both ways until both directions end, one fails, or neither moves for `idle_timeout_s`.

    An end of stream in one direction is passed on as a half-close. Never raises (but for cancellation).
    """
    loop = asyncio.get_running_loop()
    last_activity = [loop.time()]
    pumps = {
        asyncio.create_task(_pump(client_reader, upstream_writer, last_activity)),
        asyncio.create_task(_pump(upstream_reader, client_writer, last_activity)),
    }
    pending = set(pumps)
    try:
        while pending:
            idle_s = loop.time() - last_activity[0]
            if idle_s >= idle_timeout_s:
                return
            done, pending = await asyncio.wait(pending, timeout=idle_timeout_s - idle_s)
            if any(task.exception() is not None for task in done):
                return
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, last_activity: list[float]
) -> None:
    while data := await reader.read(CHUNK_BYTES):
        last_activity[0] = asyncio.get_running_loop().time()
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _refuse(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int | None, reason: str
) -> None:
    """Answer `status` (unless None), then close our side and discard what the client still sends for up
    to LINGER_S: closing a socket with unread input sends a reset, which can destroy the answer unread."""
    if status is not None:
        body = f"{reason}\n".encode()
        writer.write(
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
    with contextlib.suppress(OSError, TimeoutError):
        writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(CHUNK_BYTES):
                pass


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close a connection; one whose peer stops reading is aborted after CLOSE_TIMEOUT_S."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except OSError:
        pass
