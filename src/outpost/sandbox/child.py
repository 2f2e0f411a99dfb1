"""A child process with asyncio pipes, spawned without forking the event loop's process image.

asyncio's (and uvloop's) subprocess support forks the whole server, which costs several milliseconds
once the server is large. `subprocess.Popen` uses vfork/exec on Linux (well under a millisecond); its
pipes are then attached to the loop, and its exit is watched through a pidfd, so no SIGCHLD handling or
watcher thread is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import resource
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from outpost.sandbox.pipes import Pipe, attach_pipe


class Child:
    """Use `Child.spawn`. `stdout` and `stderr` are stream readers; `wait()` returns the exit status."""

    def __init__(self, popen: subprocess.Popen[bytes], stdout: Pipe, stderr: Pipe) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdout, self._stdout_transport = stdout
        self.stderr, self._stderr_transport = stderr
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.rusage: resource.struct_rusage | None = None
        """Once it has exited: its resource use, and that of the descendants it waited for."""
        self._watch_exit()

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        new_session: bool,
        pass_fds: Sequence[int] = (),
    ) -> Child:
        """Start `argv` with stdin from /dev/null. Raises OSError when it cannot start.

        There is no uid switch here on purpose: given `user=`, Popen forks instead of vforking, which
        copies the server's page tables (measured: ~8 ms for a 300 MiB server instead of ~1 ms). Callers
        that need another uid exec through `setpriv` instead (see bwrap_args.as_user).
        """
        # Blocking on purpose: vfork+exec returns in well under a millisecond (see the module docstring).
        popen = subprocess.Popen(  # noqa: S603, ASYNC220 - argv from an agent adapter, no shell
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=new_session, pass_fds=tuple(pass_fds),
        )  # fmt: skip
        try:
            for pipe in (popen.stdout, popen.stderr):
                _enlarge(_piped(pipe))
            stdout, stderr = attach_pipe(_piped(popen.stdout)), attach_pipe(_piped(popen.stderr))
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        return cls(popen, stdout, stderr)

    async def wait(self) -> int:
        """The exit status, or minus the signal that ended the process."""
        return await asyncio.shield(self._exited)

    @property
    def running(self) -> bool:
        """False once its exit has been seen."""
        return not self._exited.done()

    def close_pipes(self) -> None:
        """Stop reading its output (readers see the end). For after the process and its children are gone."""
        self._stdout_transport.close()
        self._stderr_transport.close()

    def _watch_exit(self) -> None:
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(self.pid)

        def on_exit() -> None:
            code = self._reap()  # never blocks the loop, whatever woke us
            if code is None:
                return  # not its exit after all: keep watching
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not self._exited.done():
                self._exited.set_result(code)

        loop.add_reader(pidfd, on_exit)

    def _reap(self) -> int | None:
        """Reap the process if it has exited (its exit status, or minus its signal), keeping its rusage;
        None while it runs. wait4, not Popen.poll: only wait4 reports what the process used."""
        try:
            pid, status, rusage = os.wait4(self.pid, os.WNOHANG)
        except ChildProcessError:
            return self._popen.poll()  # reaped already (Popen's own cleanup)
        if pid == 0:
            return None
        self.rusage = rusage
        self._popen.returncode = os.waitstatus_to_exitcode(status)
        return self._popen.returncode


def _piped(stream: IO[bytes] | None) -> IO[bytes]:
    if stream is None:
        raise OSError("the child's output pipe is missing")
    return stream


PIPE_BYTES = 1 << 20
"""Capacity asked for each output pipe. Node CLIs that call process.exit() right after printing lose
whatever a full pipe did not take (Node writes to pipes asynchronously): with 64 KiB, the default, Gemini
CLI cut its last long JSON line. 1 MiB is the kernel's default ceiling for unprivileged pipes."""


def _enlarge(pipe: IO[bytes]) -> None:
    # Best effort: a smaller pipe-max-size, or the user's pipe memory quota, leaves the default size.
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
