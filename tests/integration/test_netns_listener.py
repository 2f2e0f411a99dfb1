"""A proxy listener opened inside a sandbox's network namespace is the sandbox's only way out."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import socket
import sys
from collections.abc import AsyncIterator

import pytest

from outpost.sandbox.egress_policy import EgressPolicy
from outpost.sandbox.egress_proxy import EgressDecisionEvent, EgressProxy
from outpost.sandbox.netns import IP_FREEBIND, PROXY_PORT, listener_in_netns
from tests.requirements import require


@pytest.fixture(autouse=True)
def _namespace_tools() -> None:
    tools_ok = os.geteuid() == 0 and all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip"))
    require(None if tools_ok else "needs root and util-linux unshare/nsenter and iproute2 ip")


PUBLIC_IP = "93.184.216.34"
# Runs inside the namespace: a CONNECT through the proxy, then direct connections that must fail.
CLIENT = r"""
import json, socket, sys
proxy_port, host_port = int(sys.argv[1]), int(sys.argv[2])
result = {}
with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as tunnel:
    tunnel.sendall(b"CONNECT echo.test:7000 HTTP/1.1\r\nHost: echo.test:7000\r\n\r\n")
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += tunnel.recv(1)
    result["status"] = int(head.split()[1])
    tunnel.sendall(b"hello from the sandbox")
    echoed = b""
    while len(echoed) < 22:
        echoed += tunnel.recv(64)
    result["echoed"] = echoed.decode()
for name, address in (("host_loopback", ("127.0.0.1", host_port)), ("public", ("93.184.216.34", 443))):
    try:
        socket.create_connection(address, timeout=2).close()
        result[name] = "connected"
    except OSError as exc:
        result[name] = exc.errno
print(json.dumps(result))
"""


@pytest.fixture
async def sandbox_pid() -> AsyncIterator[int]:
    """A process alone in a new network namespace, whose `lo` is still down."""
    process = await asyncio.create_subprocess_exec("unshare", "--net", "sleep", "30")
    own_namespace = os.readlink("/proc/self/ns/net")
    for _ in range(500):
        with contextlib.suppress(FileNotFoundError):
            if os.readlink(f"/proc/{process.pid}/ns/net") != own_namespace:
                break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("unshare did not enter a new network namespace")
    yield process.pid
    process.kill()
    await process.wait()


@pytest.fixture
async def host_echo_port() -> AsyncIterator[int]:
    """An echo server on the host's own 127.0.0.1, standing in for a public host."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def _run(*argv: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_a_sandbox_reaches_the_host_proxy_through_its_listener_and_nothing_else(
    sandbox_pid: int, host_echo_port: int
) -> None:
    listener = listener_in_netns(sandbox_pid)  # before `lo` is up: IP_FREEBIND lets it bind anyway
    assert listener.getsockname() == ("127.0.0.1", PROXY_PORT)
    # Some kernels (this test machine's among them) bind 127.0.0.1 on a down `lo` anyway; others need it.
    assert listener.getsockopt(socket.SOL_IP, IP_FREEBIND) == 1

    async def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC_IP]

    async def dial(ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        assert ip == PUBLIC_IP
        return await asyncio.open_connection("127.0.0.1", host_echo_port)

    events: list[EgressDecisionEvent] = []
    proxy = EgressProxy(resolver=resolve, dialer=dial)
    handle = await proxy.serve(listener, "job-ns", EgressPolicy(["echo.test:7000"]), events.append)
    try:
        namespace = f"--net=/proc/{sandbox_pid}/ns/net"
        await _run("nsenter", namespace, "ip", "link", "set", "lo", "up")
        output = await _run(
            "nsenter", namespace, sys.executable, "-c", CLIENT, str(PROXY_PORT), str(host_echo_port)
        )
    finally:
        await handle.close()
    result = json.loads(output)
    assert result == {
        "status": 200,
        "echoed": "hello from the sandbox",
        "host_loopback": errno.ECONNREFUSED,  # the sandbox's 127.0.0.1 is its own
        "public": errno.ENETUNREACH,  # no route at all
    }
    assert [(e.job, e.host, e.allowed) for e in events] == [("job-ns", "echo.test", True)]
    assert listener.fileno() == -1  # closing the handle closed the socket, releasing the namespace


async def test_the_calling_thread_keeps_its_own_namespace(sandbox_pid: int) -> None:
    before = os.readlink("/proc/thread-self/ns/net")
    listener = listener_in_netns(sandbox_pid, port=0)
    listener.close()
    assert os.readlink("/proc/thread-self/ns/net") == before


async def test_a_taken_port_and_a_gone_process_raise_os_errors(sandbox_pid: int) -> None:
    first = listener_in_netns(sandbox_pid, port=4000)
    try:
        with pytest.raises(OSError, match="Address already in use"):
            listener_in_netns(sandbox_pid, port=4000)
    finally:
        first.close()
    with pytest.raises(FileNotFoundError):
        listener_in_netns(2**22 + 1)  # above the kernel's pid_max ceiling: never a live process
