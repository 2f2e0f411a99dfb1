"""Starting bwrap so that its namespaces exist and its command waits for `release()`.

bwrap starts either as a new child of the server or from a parked launcher (`launchers.py`), which is
already in the job's cgroup and execs bwrap in place. Either way the server learns the sandbox's pid 1
from bwrap's info descriptor and holds the command back on its block descriptor until the sandbox is
confined and its network listeners are open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from outpost.sandbox.base import SandboxSpec
from outpost.sandbox.bwrap_args import SANDBOX_PATH, as_user, bwrap_argv
from outpost.sandbox.bwrap_fs import JobPaths
from outpost.sandbox.child import Child
from outpost.sandbox.launchers import ParkedLauncher
from outpost.sandbox.parked_exec import FIRST_TARGET_FD
from outpost.sandbox.pipes import attach_pipe
from outpost.sandbox.seccomp import filter_memfd

_BWRAP_ENV = {"PATH": SANDBOX_PATH}


@dataclass
class Parked:
    """A bwrap whose namespaces exist and whose command waits for `release()`."""

    child: Child
    sandbox_pid: int
    release_fd: int

    def release(self) -> None:
        os.write(self.release_fd, b"\n")
        os.close(self.release_fd)

    async def abandon(self) -> None:
        # Killed before its release descriptor closes: bwrap reads that end-of-file as a go.
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.sandbox_pid, signal.SIGKILL)
        os.close(self.release_fd)
        await self.child.wait()


async def launch(spec: SandboxSpec, paths: JobPaths, uid: int, launcher: ParkedLauncher | None) -> Parked:
    """Start bwrap as `uid`, through `launcher` when given, and wait until its namespaces exist; the
    command has not started yet. Raises OSError or ValueError when bwrap cannot start."""
    info_read, info_write = os.pipe()
    block_read, block_write = os.pipe()
    seccomp_fd = filter_memfd()  # bwrap reads it to the end: a fresh one for every launch
    passed = [info_write, block_read, seccomp_fd]
    try:
        child = await _spawn(spec, paths, uid, passed, launcher)
    except BaseException:
        os.close(block_write)
        os.close(info_read)
        raise
    finally:
        for fd in passed:
            os.close(fd)
    info_reader, _ = attach_pipe(os.fdopen(info_read, "rb"))
    reading = asyncio.ensure_future(info_reader.read())
    try:
        info = await asyncio.shield(reading)
    except asyncio.CancelledError:
        await _kill_half_made(child, await reading, block_write)
        raise
    if not info:
        os.close(block_write)
        code = await child.wait()
        detail = (await child.stderr.read()).decode(errors="replace").strip()
        raise OSError(f"bwrap exited with status {code} before the command started: {detail}")
    return Parked(child, int(json.loads(info)["child-pid"]), block_write)


async def _kill_half_made(child: Child, info: bytes, block_write: int) -> None:
    """Kill a bwrap whose start was cancelled, once it has said where its sandbox is (`info`, empty if
    it died first): killed half-way, its sandbox could outlive it (it dies with bwrap only once bwrap
    has set that up), then read the closed block descriptor as a go."""
    pids = [child.pid, *([int(json.loads(info)["child-pid"])] if info else [])]
    for pid in reversed(pids):  # the sandbox's pid 1 first: all of the sandbox goes with it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await child.wait()
    os.close(block_write)


async def _spawn(
    spec: SandboxSpec, paths: JobPaths, uid: int, passed: list[int], launcher: ParkedLauncher | None
) -> Child:
    """bwrap's process, given the info, block and seccomp descriptors in `passed`: a parked launcher
    sees them as 3, 4 and 5, a new child under their own numbers."""
    if launcher is None:
        argv = bwrap_argv(spec, paths, *passed)
        return await Child.spawn(
            as_user(uid, argv), cwd=Path("/"), env=_BWRAP_ENV, new_session=True, pass_fds=passed
        )  # fmt: skip
    numbers = range(FIRST_TARGET_FD, FIRST_TARGET_FD + len(passed))
    return await launcher.exec(as_user(uid, bwrap_argv(spec, paths, *numbers)), _BWRAP_ENV, passed)
