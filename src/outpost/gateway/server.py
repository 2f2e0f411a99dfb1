"""The model gateway's HTTP/1.1 server: one listener per sandboxed run, served from the host.

The sandbox layer opens each listener inside the run's network namespace (as it does the egress proxy's)
and hands it to `ModelGateway.serve`; a run reaches the gateway at 127.0.0.1 and nothing else. Each
connection may carry many requests (CLIs keep connections alive). Requests are parsed with h11, so a
malformed or oversized head is refused before anything reaches a provider; `forward.py` does the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterable

import h11
import httpx

from outpost.gateway.forward import Exchange, Forwarder, Reply
from outpost.gateway.replies import reason_phrase
from outpost.gateway.tokens import GatewayTokens
from outpost.sandbox.served import ServedServer
from outpost.settings import GatewaySettings

log = logging.getLogger(__name__)

MAX_HEAD_BYTES = 64 * 1024
READ_CHUNK = 65536
LISTEN_BACKLOG = 128
IDLE_TIMEOUT_S = 600.0


class ClientGone(Exception):
    """The run closed its connection or sent something h11 cannot parse."""


class ModelGateway:
    """The gateway as an inbound service of the sandbox seam (see `sandbox.base.InboundService`)."""

    name = "gateway"

    def __init__(self, tokens: GatewayTokens, settings: GatewaySettings) -> None:
        self.port = settings.port
        self.tokens = tokens
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    async def serve(self, listener: socket.socket, run_id: str | None) -> ServedServer:
        forwarder = Forwarder(self.tokens, self._http_client(), self._settings, run_id)
        connections: set[asyncio.Task[None]] = set()

        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            connections.add(task)
            _no_delay(writer)
            try:
                await _serve_connection(reader, writer, forwarder, self._settings.max_request_bytes)
            except asyncio.CancelledError:
                pass  # close() ended this connection; Python 3.11's start_server logs a cancelled handler
            finally:
                connections.discard(task)

        server = await asyncio.start_server(on_connection, sock=listener, backlog=LISTEN_BACKLOG)
        return ServedServer(server, connections)

    async def close(self) -> None:
        """Close the pooled upstream connections (at server shutdown)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http_client(self) -> httpx.AsyncClient:
        """One pool for every run: connections to a provider are reused across runs and calls."""
        if self._client is None:
            settings = self._settings
            timeout = httpx.Timeout(
                connect=settings.connect_timeout_s, read=settings.read_timeout_s,
                write=settings.read_timeout_s, pool=settings.connect_timeout_s,
            )  # fmt: skip
            limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
            # trust_env=False: the host's proxy settings are not the gateway's; redirects are passed back.
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False)
        return self._client


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, forwarder: Forwarder, max_body: int
) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    try:
        while True:
            exchange = await _read_request(conn, reader, writer, max_body)
            if exchange is None:
                return
            await forwarder.handle(exchange, _Responder(conn, writer))
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (ClientGone, ConnectionError, h11.LocalProtocolError):
        return
    except Exception:
        log.exception("the model gateway failed on a connection")
    finally:
        writer.transport.abort() if _must_abort(conn) else writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    """Send each piece at once: with Nagle's algorithm a response head written apart from its body waits
    for the client's delayed ACK (40 ms on Linux)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _must_abort(conn: h11.Connection) -> bool:
    """A response cut off mid-way must reach the client as a broken connection, not as a clean end."""
    return conn.our_state is h11.SEND_BODY


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_body: int
) -> Exchange | None:
    """The next request with its body, or None when the client closed between requests. Oversized and
    malformed requests are answered here (413, 400) and end the connection."""
    try:
        event = await _next_event(conn, reader)
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise ClientGone
        declared = _content_length(event.headers)
        if declared is not None and declared > max_body:
            await _refuse(conn, writer, 413, f"request body over the gateway's {max_body} bytes")
            return None
        body = bytearray()
        while not isinstance(next_event := await _next_event(conn, reader), h11.EndOfMessage):
            if not isinstance(next_event, h11.Data):
                raise ClientGone
            body += next_event.data
            if len(body) > max_body:
                await _refuse(conn, writer, 413, f"request body over the gateway's {max_body} bytes")
                return None
    except h11.RemoteProtocolError as exc:
        if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            await _refuse(conn, writer, exc.error_status_hint, "malformed request")
        return None
    return Exchange(event.method.decode(), event.target.decode("latin-1"), list(event.headers), bytes(body))


async def _next_event(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            async with asyncio.timeout(IDLE_TIMEOUT_S):
                data = await reader.read(READ_CHUNK)
        except TimeoutError:
            raise ClientGone from None
        conn.receive_data(data)


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            return int(value)  # h11 has checked it is a number
    return None


async def _refuse(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
    responder = _Responder(conn, writer)
    await responder.send(Reply.error(None, status, message))


class _Responder:
    """Writes one response through h11, with back-pressure (drain) after each piece."""

    def __init__(self, conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        self._conn = conn
        self._writer = writer

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        response = h11.Response(status_code=status, headers=headers, reason=reason_phrase(status))
        self._writer.write(self._conn.send(response) or b"")
        await self._writer.drain()

    async def body(self, chunk: bytes) -> None:
        if chunk:
            self._writer.write(self._conn.send(h11.Data(data=chunk)) or b"")
            await self._writer.drain()

    async def end(self) -> None:
        self._writer.write(self._conn.send(h11.EndOfMessage()) or b"")
        await self._writer.drain()

    async def send(self, reply: Reply) -> None:
        await self.start(reply.status, reply.headers)
        await self.body(reply.body)
        await self.end()
