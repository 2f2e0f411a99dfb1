"""Listening sockets created inside another process's network namespace (Linux).

A sandbox's network namespace has nothing but `lo`, so the egress proxy must be reachable at
127.0.0.1:3128 *inside* it. A socket belongs for life to the namespace it was created in, whichever
namespace later serves it; so the host creates the socket from a thread that has joined the sandbox's
namespace and serves it from the host's event loop. There is no relay process in the sandbox to kill or
hijack, and no socket path to find. The socket keeps the namespace alive: close it when the job ends.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000  # <sched.h>
# <linux/in.h>; the socket module only names it from Python 3.12 on.
IP_FREEBIND = 15
PROXY_PORT = 3128


def listener_in_netns(
    pid: int, port: int = PROXY_PORT, host: str = "127.0.0.1", backlog: int = 128
) -> socket.socket:
    """A TCP socket listening on `host:port` in the network namespace of process `pid` (the sandbox's pid 1).

    Joining a namespace changes the calling thread for good, so the work runs in a dedicated thread that
    exits right after: never a pool thread, which would carry the sandbox's namespace into unrelated work.
    Blocks the caller for the moment that takes (well under a millisecond). Needs CAP_SYS_ADMIN.

    Raises OSError: FileNotFoundError when the process is gone, PermissionError when joining its namespace
    is refused, OSError(EADDRINUSE) when the port is taken there.
    """
    outcome: list[socket.socket | BaseException] = []
    thread = threading.Thread(
        target=_listen_in_netns, args=(pid, host, port, backlog, outcome), name=f"netns-listener-{pid}"
    )
    thread.start()
    thread.join()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _listen_in_netns(
    pid: int, host: str, port: int, backlog: int, outcome: list[socket.socket | BaseException]
) -> None:
    """Thread body: join `pid`'s network namespace, then open the listener there. The thread must end
    afterwards; its result (or error) goes to `outcome`."""
    try:
        namespace = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(namespace, CLONE_NEWNET)
        finally:
            os.close(namespace)
        outcome.append(_listening_socket(host, port, backlog))
    except BaseException as exc:  # handed to the caller's thread, which raises it
        outcome.append(exc)


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # The sandbox may not have brought `lo` up yet; without IP_FREEBIND, bind() to 127.0.0.1 would
        # fail with EADDRNOTAVAIL until it does.
        listener.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        listener.bind((host, port))
        listener.listen(backlog)
    except BaseException:
        listener.close()
        raise
    return listener


def _setns(fd: int, namespace_type: int) -> None:
    """setns(2) for the calling thread. Raises OSError."""
    if sys.version_info >= (3, 12):
        os.setns(fd, namespace_type)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)
    if libc.setns(fd, namespace_type) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")
