"""The egress proxy on real loopback sockets: a fake resolver pins test names to addresses, and a fake
dialer maps the one public-looking address to a local upstream, so nothing leaves 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from outpost.sandbox.egress_policy import EgressPolicy
from outpost.sandbox.egress_proxy import EgressDecisionEvent, EgressLimits, EgressListener, EgressProxy
from tests.fakes.tls import client_hello_records

PUBLIC_IP = "93.184.216.34"
NAMES = {
    "allowed.test": [PUBLIC_IP],
    "echo.test": [PUBLIC_IP],
    "plain.test": [PUBLIC_IP],
    "private.test": ["10.0.0.5"],
    "metadata.test": ["169.254.169.254"],
    "loopback.test": ["127.0.0.1"],
    "mixed.test": [PUBLIC_IP, "10.0.0.5"],
    "down.test": ["93.184.216.35"],
}
ALLOWED = [
    "allowed.test", "echo.test:7000", "plain.test:80", "private.test:7000", "metadata.test:80",
    "loopback.test", "mixed.test", "down.test:7000", "unresolvable.test",
]  # fmt: skip
WAIT_S = 5


@dataclass
class Upstream:
    """A local TCP echo server standing in for every public host; records what each connection sent."""

    port: int = 0
    received: list[bytearray] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = bytearray()
        self.received.append(got)
        try:
            while data := await reader.read(65536):
                got += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass  # the proxy closed a refused tunnel
        writer.close()


@dataclass
class ProxyUnderTest:
    proxy: EgressProxy
    port: int
    listener: EgressListener
    events: list[EgressDecisionEvent]
    resolved: list[str]
    dialed: list[tuple[str, int]]
    clients: list[asyncio.StreamWriter]

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.clients.append(writer)
        return reader, writer

    async def request(self, head: bytes) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
        """Send a request head; the status and response head (plus body, for a refusal)."""
        reader, writer = await self.connect()
        writer.write(head)
        status, response = await read_response(reader)
        if status != 200:
            writer.close()  # as a client does after a `Connection: close` answer
        return status, response, reader, writer

    async def tunnel(self, target: str) -> tuple[int, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
        return await self.request(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        head += await asyncio.wait_for(reader.read(), WAIT_S)  # a refusal closes the connection
    return status, head


async def eof_within(reader: asyncio.StreamReader, limit_s: float = WAIT_S) -> bytes:
    """Everything until the proxy closes the connection; fails the test if it does not."""
    return await asyncio.wait_for(reader.read(), limit_s)


StartProxy = Callable[..., Awaitable[ProxyUnderTest]]


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    echo = Upstream()
    server = await asyncio.start_server(echo.handle, "127.0.0.1", 0)
    echo.port = server.sockets[0].getsockname()[1]
    yield echo
    server.close()
    await server.wait_closed()


@pytest.fixture
async def start_proxy(upstream: Upstream) -> AsyncIterator[StartProxy]:
    """Factory: serve a fresh 127.0.0.1 listener for `job` on `proxy` (a new one unless given)."""
    started: list[ProxyUnderTest] = []
    resolved: list[str] = []
    dialed: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        if host not in NAMES:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return NAMES[host]

    async def dial(ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        dialed.append((ip, port))
        if ip != PUBLIC_IP:
            raise ConnectionRefusedError(111, "Connection refused")
        return await asyncio.open_connection("127.0.0.1", upstream.port)

    async def factory(
        job: str = "job-1", proxy: EgressProxy | None = None, allowed: list[str] = ALLOWED, **limits: Any
    ) -> ProxyUnderTest:
        proxy = proxy or EgressProxy(EgressLimits(**limits), resolver=resolve, dialer=dial)
        listener = socket.create_server(("127.0.0.1", 0))
        events: list[EgressDecisionEvent] = []
        port = listener.getsockname()[1]
        handle = await proxy.serve(listener, job, EgressPolicy(allowed), events.append)
        started.append(ProxyUnderTest(proxy, port, handle, events, resolved, dialed, []))
        return started[-1]

    yield factory
    for under_test in started:
        for writer in under_test.clients:
            writer.close()
        await under_test.listener.close()


@pytest.fixture
async def proxy(start_proxy: StartProxy) -> ProxyUnderTest:
    return await start_proxy()


async def test_an_allowed_connect_tunnels_bytes_both_ways_to_the_checked_address(
    proxy: ProxyUnderTest, upstream: Upstream
) -> None:
    status, _, reader, writer = await proxy.tunnel("echo.test:7000")
    assert status == 200
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), WAIT_S) == b"ping"
    writer.write(b"pong" * 50_000)  # more than any one buffer, both ways
    assert await asyncio.wait_for(reader.readexactly(200_000), WAIT_S) == b"pong" * 50_000
    writer.write_eof()  # the half-close reaches the upstream, which closes in turn
    assert await eof_within(reader) == b""
    assert proxy.resolved == ["echo.test"]
    assert proxy.dialed == [(PUBLIC_IP, 7000)]
    assert len(upstream.received[0]) == 200_004
    [event] = proxy.events
    assert (event.job, event.method, event.host, event.port, event.allowed) == (
        "job-1", "CONNECT", "echo.test", 7000, True,
    )  # fmt: skip
    assert event.reason == f"allowed by echo.test:7000; connected to {PUBLIC_IP}"


async def test_a_tls_tunnel_passes_when_the_server_name_is_the_connect_host(
    proxy: ProxyUnderTest, upstream: Upstream
) -> None:
    hello = client_hello_records("allowed.test")
    status, _, reader, writer = await proxy.tunnel("ALLOWED.test.:443")
    assert status == 200
    writer.write(hello[:3])  # the hello may arrive in pieces
    await asyncio.sleep(0.05)
    writer.write(hello[3:])
    assert await asyncio.wait_for(reader.readexactly(len(hello)), WAIT_S) == hello
    assert bytes(upstream.received[0]) == hello
    assert [(e.host, e.allowed) for e in proxy.events] == [("allowed.test", True)]


@pytest.mark.parametrize(
    ("first_bytes", "reason"),
    [
        (client_hello_records("evil.test"), "TLS server name 'evil.test' does not match allowed.test"),
        (client_hello_records(None), "TLS ClientHello without a server name (SNI)"),
        (b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", "not a TLS handshake record"),
        (b"\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", "malformed TLS ClientHello: not a ClientHello"),
    ],
)
async def test_a_tls_tunnel_not_naming_the_connect_host_is_closed_before_any_byte_reaches_upstream(
    proxy: ProxyUnderTest, upstream: Upstream, first_bytes: bytes, reason: str
) -> None:
    status, _, reader, writer = await proxy.tunnel("allowed.test:443")
    assert status == 200
    writer.write(first_bytes)
    assert await eof_within(reader) == b""
    assert all(not received for received in upstream.received)
    [event] = proxy.events
    assert not event.allowed
    assert reason in event.reason


async def test_an_unlisted_host_is_refused_without_resolving_or_dialling(proxy: ProxyUnderTest) -> None:
    for target in ("evil.test:443", "allowed.test.evil.test:443", "evilallowed.test:443"):
        status, response, _, _ = await proxy.tunnel(target)
        assert status == 403
        assert b"is not in the egress allowlist" in response
    assert proxy.resolved == []
    assert proxy.dialed == []
    assert [e.allowed for e in proxy.events] == [False, False, False]


@pytest.mark.parametrize(
    ("target", "address"),
    [
        ("private.test:7000", "10.0.0.5"),
        ("metadata.test:80", "169.254.169.254"),
        ("loopback.test:443", "127.0.0.1"),
        ("mixed.test:443", "10.0.0.5"),
    ],
)
async def test_names_resolving_to_non_public_addresses_are_refused(
    proxy: ProxyUnderTest, target: str, address: str
) -> None:
    status, response, _, _ = await proxy.tunnel(target)
    assert status == 403
    assert f"resolves to non-public address {address}".encode() in response
    assert proxy.dialed == []
    assert not proxy.events[0].allowed


@pytest.mark.parametrize(
    "target",
    ["127.0.0.1:443", "169.254.169.254:80", "[::1]:443", "[::ffff:127.0.0.1]:443", "2130706433:443",
     "0x7f.1:443", "127.1:443", "0177.0.0.1:443", "::1"],
)  # fmt: skip
async def test_ip_literals_are_refused_before_resolution(proxy: ProxyUnderTest, target: str) -> None:
    status, response, _, _ = await proxy.tunnel(target)
    assert status == 403
    assert b"IP literal" in response
    assert proxy.resolved == []
    assert proxy.dialed == []


async def test_a_listed_host_on_another_port_is_refused(proxy: ProxyUnderTest) -> None:
    status, response, _, _ = await proxy.tunnel("echo.test:7001")
    assert status == 403
    assert b"port 7001 is not allowed for echo.test" in response


@pytest.mark.parametrize(
    ("target", "status", "reason"),
    [
        ("unresolvable.test:443", 502, "cannot resolve unresolvable.test"),
        ("down.test:7000", 502, "cannot connect to down.test:7000"),
    ],
)
async def test_upstream_failures_are_reported_as_bad_gateway(
    proxy: ProxyUnderTest, target: str, status: int, reason: str
) -> None:
    got, response, _, _ = await proxy.tunnel(target)
    assert got == status
    assert reason.encode() in response
    assert reason in proxy.events[0].reason


async def test_a_plain_http_request_is_forwarded_in_origin_form_with_its_proxy_headers_dropped(
    proxy: ProxyUnderTest, upstream: Upstream
) -> None:
    reader, writer = await proxy.connect()
    writer.write(
        b"GET http://PLAIN.test/path?q=/x#frag HTTP/1.1\r\nHost: evil.test\r\n"
        b"Proxy-Authorization: Basic x\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n"
    )
    echoed = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT_S)  # the upstream echoes what it got
    assert (
        echoed == b"GET /path?q=/x HTTP/1.1\r\nHost: plain.test\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
    assert [(e.method, e.host, e.port, e.allowed) for e in proxy.events] == [("GET", "plain.test", 80, True)]
    assert len(upstream.received) == 1


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", 405),
        (b"GET https://allowed.test/ HTTP/1.1\r\n\r\n", 405),
        (b"CONNECT allowed.test HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT allowed.test:443 HTTP/2\r\n\r\n", 400),
        (b"CONNECT  allowed.test:443 HTTP/1.1\r\n\r\n", 400),
        (b"connect allowed.test:443 HTTP/1.1\r\n\r\n", 400),
        (b"\xff\xfe\r\n\r\n", 400),
        (b"GET http://plain.test/ HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"GET http://user@plain.test/ HTTP/1.1\r\n\r\n", 400),
        (b"CONNECT allowed.test:\xc2\xb2 HTTP/1.1\r\n\r\n", 400),
        (b"GET http://plain.test/a\nHost:evil.test HTTP/1.1\r\n\r\n", 400),
        (b"GET http://plain.test/ HTTP/1.1\r\nX: a\nHost: evil.test\r\n\r\n", 400),
    ],
)
async def test_requests_that_are_not_proxy_requests_are_refused(
    proxy: ProxyUnderTest, head: bytes, status: int
) -> None:
    got, _, _, _ = await proxy.request(head)
    assert got == status
    assert proxy.dialed == []
    assert [e.allowed for e in proxy.events] == [False]


async def test_an_oversized_head_is_refused(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(max_header_bytes=1024)
    head = b"CONNECT allowed.test:443 HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 2000 + b"\r\n\r\n"
    status, _, _, _ = await proxy.request(head)
    assert status == 431
    assert proxy.resolved == []
    assert "request head over 1024 bytes" in proxy.events[0].reason


async def test_a_head_that_never_ends_is_refused_at_the_cap_without_waiting_for_the_timeout(
    start_proxy: StartProxy,
) -> None:
    proxy = await start_proxy(max_header_bytes=1024)
    reader, writer = await proxy.connect()
    writer.write(b"CONNECT allowed.test:443 HTTP/1.1\r\nX-Pad: " + b"a" * 4096)
    status, _ = await read_response(reader)
    assert status == 431


async def test_a_slow_head_is_timed_out(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(header_timeout_s=0.3)
    reader, writer = await proxy.connect()
    started = time.monotonic()
    writer.write(b"CONNECT allowed.test:443 HTTP/1.1\r\n")  # and then nothing more: slowloris
    status, response = await read_response(reader)
    assert status == 408
    assert 0.25 < time.monotonic() - started < 2
    assert b"request head not complete within 0.3 s" in response
    assert not proxy.events[0].allowed


async def test_the_connection_cap_holds_per_job_and_frees_up_when_a_tunnel_ends(
    start_proxy: StartProxy,
) -> None:
    first = await start_proxy(max_connections_per_job=2)
    second = await start_proxy(proxy=first.proxy)  # another listener of the same job shares its cap
    tunnels = [await first.tunnel("echo.test:7000"), await second.tunnel("echo.test:7000")]
    assert [t[0] for t in tunnels] == [200, 200]
    for listener in (first, second):
        status, response, _, _ = await listener.tunnel("echo.test:7000")
        assert status == 503
        assert response.endswith(b"too many open connections for this job (limit 2)\n")
    assert [e.allowed for e in first.events + second.events] == [True, False, True, False]
    tunnels[0][3].close()
    await asyncio.wait_for(eof_within(tunnels[0][2]), WAIT_S)
    for _ in range(50):  # the proxy notices the close a moment later
        status, _, _, _ = await first.tunnel("echo.test:7000")
        if status == 200:
            break
        await asyncio.sleep(0.02)
    assert status == 200


async def test_a_burst_of_parallel_connects_gets_exactly_the_cap(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(max_connections_per_job=32)
    results = await asyncio.gather(*(proxy.tunnel("echo.test:7000") for _ in range(120)))
    statuses = [result[0] for result in results]
    assert (statuses.count(200), statuses.count(503)) == (32, 88)
    assert len(proxy.events) == 120


async def test_another_jobs_connections_are_not_counted_against_a_full_job(start_proxy: StartProxy) -> None:
    full = await start_proxy(job="job-full", max_connections_per_job=1)
    assert (await full.tunnel("echo.test:7000"))[0] == 200
    assert (await full.tunnel("echo.test:7000"))[0] == 503
    other = await start_proxy(job="job-other", proxy=full.proxy)
    assert (await other.tunnel("echo.test:7000"))[0] == 200


async def test_an_idle_tunnel_is_closed(start_proxy: StartProxy) -> None:
    proxy = await start_proxy(idle_timeout_s=0.25)
    status, _, reader, writer = await proxy.tunnel("echo.test:7000")
    assert status == 200
    for _ in range(3):  # traffic keeps it open past the timeout
        await asyncio.sleep(0.15)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), WAIT_S) == b"x"
    last_traffic = time.monotonic()
    assert await eof_within(reader) == b""
    assert 0.2 < time.monotonic() - last_traffic < 2


async def test_closing_a_listener_ends_its_tunnels_and_stops_accepting(proxy: ProxyUnderTest) -> None:
    status, _, reader, _ = await proxy.tunnel("echo.test:7000")
    assert status == 200
    await asyncio.wait_for(proxy.listener.close(), WAIT_S)
    assert await eof_within(reader) == b""
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)


async def test_every_request_is_recorded_once_with_its_outcome(proxy: ProxyUnderTest) -> None:
    for target in ("echo.test:7000", "evil.test:443", "127.1:443", "private.test:7000"):
        await proxy.tunnel(target)
    hello = client_hello_records("evil.test")
    _, _, reader, writer = await proxy.tunnel("allowed.test:443")
    writer.write(hello)
    await eof_within(reader)
    assert [(e.host, e.port, e.allowed) for e in proxy.events] == [
        ("echo.test", 7000, True),
        ("evil.test", 443, False),
        ("127.1", 443, False),
        ("private.test", 7000, False),
        ("allowed.test", 443, False),
    ]
    assert all(e.job == "job-1" and e.at.tzinfo is not None for e in proxy.events)
