"""A parked launcher: a process that waits, already inside a cgroup, to become a run's bwrap.

Run as `python -I -S parked_exec.py FD`, where FD is its end of a Unix socket pair. It imports only `os`
and `_socket` (not even the package), because its start-up is CPU that every run pays: about 12 ms, off
the run's path. Once started it writes one byte; the server then moves it into a cgroup and parks it.

To launch, the server sends a 4-byte big-endian length and that many bytes: NUL-separated fields, the
first the number of argv items, then the argv, then the environment as `NAME=value`. The descriptors
the command needs come attached to the first bytes and become descriptors 3, 4, ... in order. The
launcher then execs argv (looked up on the given PATH), so bwrap keeps the launcher's pid, parent, output
pipes and cgroup. If the server goes away first, the socket reads its end and the launcher exits.
"""

from __future__ import annotations

import _socket
import os
import sys

FIRST_TARGET_FD = 3
_SOCKET_FD = 63  # out of the targets' way
_HIGH_FD = 64  # where received descriptors wait while the targets are filled
_MAX_FDS = 16
_MAX_MESSAGE = 8 << 20
_HEADER = 4


def _receive(sock: _socket.socket) -> tuple[bytes, list[int]]:
    data, ancillary, _, _ = sock.recvmsg(65536, _socket.CMSG_SPACE(_MAX_FDS * 4))
    fds = [
        int.from_bytes(payload[index : index + 4], sys.byteorder, signed=True)
        for level, kind, payload in ancillary
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
        for index in range(0, len(payload) - len(payload) % 4, 4)
    ]
    if len(data) < _HEADER:
        raise SystemExit(0)  # the server went away before it launched anything
    size = int.from_bytes(data[:_HEADER], "big")
    if size > _MAX_MESSAGE:
        raise SystemExit(f"parked launcher: a message of {size} bytes is refused")
    body = bytearray(data[_HEADER:])
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            raise SystemExit("parked launcher: the message ended early")
        body += chunk
    return bytes(body), fds


def _command(body: bytes) -> tuple[list[bytes], dict[bytes, bytes]]:
    fields = body.split(b"\0")
    count = int(fields[0])
    argv, environment = fields[1 : 1 + count], fields[1 + count :]
    if not argv:
        raise SystemExit("parked launcher: no command to run")
    return argv, dict(item.split(b"=", 1) for item in environment)


def _place(fds: list[int]) -> None:
    """Make the received descriptors 3, 4, ... (inheritable); no other one survives the exec."""
    for index, fd in enumerate(fds):
        os.dup2(fd, _HIGH_FD + index, inheritable=False)
        os.close(fd)
    for index in range(len(fds)):
        os.dup2(_HIGH_FD + index, FIRST_TARGET_FD + index)
        os.close(_HIGH_FD + index)


def main() -> None:
    given = int(sys.argv[1])
    os.dup2(given, _SOCKET_FD, inheritable=False)
    os.close(given)
    sock = _socket.socket(fileno=_SOCKET_FD)
    sock.sendall(b"r")
    body, fds = _receive(sock)
    argv, environment = _command(body)
    _place(fds)
    sock.close()
    os.setpriority(os.PRIO_PROCESS, 0, 0)  # started at the lowest priority; the run gets the normal one
    os.execvpe(argv[0], argv, environment)  # noqa: S606 - the server's bwrap command line, no shell


if __name__ == "__main__":
    main()
