"""The seccomp filter under real bwrap, as an unprivileged uid: what a sandboxed program is refused, and
that ordinary programs (fork, exec, threads, pipes, IP sockets) still work.

Each probe makes one raw syscall in a forked child inside the sandbox and reports the errno (0 on success,
minus the signal number when the child was killed). The same probes run once without the filter, to show
that every refusal comes from the filter and not from the kernel or bwrap.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import NamedTuple

import pytest

from outpost.sandbox.seccomp import CLONE_NEWUSER, SYSCALL_NUMBERS, TIOCLINUX, TIOCSTI, filter_memfd
from tests.requirements import require

UID = 300_123  # unused on the host; bwrap runs as it, as the bwrap backend runs each dispatch
PYTHON = "/usr/bin/python3"  # the sandbox sees the host's /usr, not the project's venv
SIGCHLD = 17
AF_INET, AF_PACKET, AF_VSOCK = 2, 17, 40
SOCK_STREAM, SOCK_RAW = 1, 3
KILLED_BY_SIGSYS = -signal.SIGSYS
NR = SYSCALL_NUMBERS


class Probe(NamedTuple):
    name: str
    nr: int
    args: tuple[int, ...]
    expected: int  # with the filter


# Arguments are chosen so that, without the filter, the kernel gives a different answer (often EFAULT
# from a NULL pointer it reads before any permission check).
PROBES = [
    Probe("io_uring_setup", NR["io_uring_setup"], (1, 0), errno.EPERM),
    Probe("bpf", NR["bpf"], (0xFFFF, 0, 0), errno.EPERM),
    Probe("perf_event_open", NR["perf_event_open"], (0, 0, -1, -1, 0), errno.EPERM),
    Probe("userfaultfd", NR["userfaultfd"], (1,), errno.EPERM),  # UFFD_USER_MODE_ONLY
    Probe("keyctl", NR["keyctl"], (9999, 0, 0), errno.EPERM),
    Probe("mount", NR["mount"], (0, 0, 1, 0, 0), errno.EPERM),
    Probe("ptrace", NR["ptrace"], (2, 999_999, 0, 0), errno.EPERM),  # PTRACE_PEEKDATA
    Probe("open_by_handle_at", NR["open_by_handle_at"], (-1, 0, 0), errno.EPERM),
    Probe("unshare_newuser", NR["unshare"], (CLONE_NEWUSER,), errno.EPERM),
    Probe("clone_newuser", NR["clone"], (CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0), errno.EPERM),
    Probe("clone3", NR["clone3"], (0, 0), errno.ENOSYS),
    Probe("socket_vsock", NR["socket"], (AF_VSOCK, SOCK_STREAM, 0), errno.EAFNOSUPPORT),
    Probe("socket_packet", NR["socket"], (AF_PACKET, SOCK_RAW, 0), errno.EAFNOSUPPORT),
    Probe("socketpair_vsock", NR["socketpair"], (AF_VSOCK, SOCK_STREAM, 0, 0), errno.EAFNOSUPPORT),
    Probe("ioctl_tiocsti", NR["ioctl"], (0, TIOCSTI, 0), errno.EPERM),
    Probe("ioctl_tiocsti_high_bits", NR["ioctl"], (0, TIOCSTI | 1 << 32, 0), errno.EPERM),
    Probe("ioctl_tioclinux", NR["ioctl"], (0, TIOCLINUX, 0), errno.EPERM),
    Probe("x32_getpid", 0x4000_0000 | 39, (), KILLED_BY_SIGSYS),
]

PROBE_SCRIPT = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def outcome(nr, args):
    pid = os.fork()
    if pid == 0:
        result = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & (2**64 - 1)) for a in args))
        os._exit(ctypes.get_errno() if result == -1 else 0)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

print(json.dumps({name: outcome(nr, args) for name, nr, args in json.loads(sys.argv[1])}))
"""

# `mov eax, 20 (getpid on i386); int 0x80; ret`: a syscall through the 32-bit ABI from a 64-bit process.
INT80_SCRIPT = """
import ctypes, mmap, os
code = bytes.fromhex("b814000000cd80c3")
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
call = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
pid = os.fork()
if pid == 0:
    os._exit(0 if call() == os.getpid() else 1)
print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.fixture(scope="module", autouse=True)
def _bwrap_as_another_uid() -> None:
    problem = None
    if shutil.which("bwrap") is None:
        problem = "bubblewrap is not installed"
    elif os.geteuid() != 0:
        problem = "running bwrap as another uid needs root"
    require(problem)


def run_sandboxed(command: Sequence[str], *, filtered: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `command` in a minimal bwrap sandbox as UID, with the seccomp filter unless `filtered` is off."""
    fd = filter_memfd() if filtered else -1
    argv = [
        "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net", "--die-with-parent",
        "--ro-bind", "/usr", "/usr", "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev",
        *(["--seccomp", str(fd)] if filtered else []), "--", *command,
    ]  # fmt: skip
    try:
        return subprocess.run(
            argv, pass_fds=[fd] if filtered else [], user=UID, group=UID, extra_groups=[], cwd="/",
            env={"PATH": "/usr/bin"}, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
    finally:
        if filtered:
            os.close(fd)


def run_probes(*, filtered: bool) -> dict[str, int]:
    listed = json.dumps([(p.name, p.nr, p.args) for p in PROBES])
    done = run_sandboxed([PYTHON, "-c", PROBE_SCRIPT, listed], filtered=filtered)
    assert done.returncode == 0, done.stderr
    outcomes: dict[str, int] = json.loads(done.stdout)
    return outcomes


@pytest.fixture(scope="module")
def filtered_outcomes() -> dict[str, int]:
    return run_probes(filtered=True)


@pytest.fixture(scope="module")
def unfiltered_outcomes() -> dict[str, int]:
    return run_probes(filtered=False)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_the_filter_refuses(probe: Probe, filtered_outcomes: dict[str, int]) -> None:
    assert filtered_outcomes[probe.name] == probe.expected


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_without_the_filter_the_kernel_answers_otherwise(
    probe: Probe, unfiltered_outcomes: dict[str, int]
) -> None:
    assert unfiltered_outcomes[probe.name] != probe.expected


@pytest.mark.parametrize(("filtered", "expected"), [(True, KILLED_BY_SIGSYS), (False, 0)])
def test_a_32_bit_syscall_kills_the_process(filtered: bool, expected: int) -> None:
    done = run_sandboxed([PYTHON, "-c", INT80_SCRIPT], filtered=filtered)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == expected


def test_a_shell_pipeline_runs() -> None:
    done = run_sandboxed(["sh", "-c", "ls /usr | head -n 3; echo done"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "done"
    assert "bin" in done.stdout.split()


def test_python_forks_execs_and_starts_threads() -> None:
    script = (
        "import subprocess, threading\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "print(subprocess.run(['true']).returncode)\n"
    )
    done = run_sandboxed([PYTHON, "-c", script])
    assert (done.returncode, done.stdout.split()) == (0, ["thread", "0"]), done.stderr


def test_ip_unix_and_netlink_sockets_still_open() -> None:
    script = (
        "import socket\n"
        "for family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):\n"
        "    socket.socket(family, socket.SOCK_STREAM).close()\n"
        "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE).close()\n"
        "a, b = socket.socketpair(); a.sendall(b'ok'); print(b.recv(2).decode())\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); print('listening')\n"
    )
    done = run_sandboxed([PYTHON, "-c", script])
    assert (done.returncode, done.stdout.split()) == (0, ["ok", "listening"]), done.stderr


def test_ordinary_ioctls_still_work() -> None:
    script = (
        "import fcntl, os, struct, termios\n"
        "r, w = os.pipe(); os.write(w, b'abc')\n"
        "print(struct.unpack('i', fcntl.ioctl(r, termios.FIONREAD, b'0000'))[0])\n"
    )
    done = run_sandboxed([PYTHON, "-c", script])
    assert (done.returncode, done.stdout.strip()) == (0, "3"), done.stderr
