"""Parked launchers: bwrap starts inside its job's cgroup, so no process is moved on a run's path.

On cgroup v1, moving a process into a cgroup (a write to `cgroup.procs`) waits for an RCU grace period
unless another move happened just before: about 11 ms of every sandbox start on an idle host, the
largest single cost of a start. A parked launcher pays it ahead of time. It is started
(`parked_exec.py`), moved into a cgroup of its own named `_parked-...`, and waits. A run takes one,
renames that cgroup to the job's name (`JobCgroup.renamed`: no wait), writes the job's limits and hands
the launcher bwrap's command line, which it execs. bwrap and the sandbox are then born in the job's
cgroup, and the sandbox's cgroup namespace starts there too.

The pool refills in the background after each take. When it is empty (a burst of starts), a run starts
bwrap directly and moves it, as without the pool. Each launcher costs about 12 ms of CPU to start (a
bare Python interpreter) and 10 MB while parked; `OUTPOST_SANDBOX__PARKED_LAUNCHERS=0` turns it off.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

from outpost.errors import SandboxError
from outpost.sandbox.cgroups import JobCgroup, Limits
from outpost.sandbox.child import Child
from outpost.sandbox.threads import in_thread

log = logging.getLogger(__name__)

_SCRIPT = Path(__file__).with_name("parked_exec.py")
_READY_TIMEOUT_S = 10.0
_FIRST_CHUNK = 4096  # sent with the descriptors; it always fits an empty socket buffer at once
PARKED_PREFIX = "_parked-"
_REFILL_DELAY_S = 0.05
_WARN_EVERY_S = 60.0
"""While parking keeps failing (every take retries it), how often it is logged."""


class LauncherGone(OSError):
    """The parked launcher exited before it got its command; nothing of the run has started."""


class ParkedLauncher:
    """A launcher waiting in `cgroup`; `claim()` it for a job, then `exec()` bwrap through it."""

    def __init__(self, child: Child, sock: socket.socket, cgroup: JobCgroup) -> None:
        self.child = child
        self._sock = sock
        self.cgroup = cgroup

    def claim(self, job: str, limits: Limits) -> JobCgroup:
        """Rename the launcher's cgroup to `job`'s and give it `limits`. Blocks for well under a
        millisecond. Raises SandboxError; discard() the launcher then."""
        self.cgroup = self.cgroup.renamed(job)
        self.cgroup.set_limits(limits)
        return self.cgroup

    async def exec(self, argv: Sequence[str], env: Mapping[str, str], fds: Sequence[int]) -> Child:
        """Make the launcher exec `argv` with `env`; `fds` become its descriptors 3, 4, ... The returned
        child is the launcher's, now running `argv`. Raises LauncherGone when the launcher is gone, or
        ValueError for a NUL in argv or env (as exec would)."""
        message = _message(argv, env)
        try:
            sent = socket.send_fds(self._sock, [message[:_FIRST_CHUNK]], list(fds))
            if sent < len(message):  # once it has it all, the launcher may have exec'd and gone
                await asyncio.get_running_loop().sock_sendall(self._sock, message[sent:])
        except OSError as exc:  # it execs only once it has the whole message: nothing has started
            raise LauncherGone(f"the parked launcher is gone: {exc}") from exc
        self._sock.close()
        return self.child

    async def discard(self) -> None:
        """Kill the launcher (or what it became) and everything in its cgroup, then remove the cgroup.
        Never raises: what is left is the next start's janitor's."""
        self._sock.close()
        try:
            await asyncio.to_thread(self.cgroup.kill)
        except SandboxError:
            log.exception("cannot kill the parked launcher's cgroup %s", self.cgroup.dirs["memory"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child.pid, signal.SIGKILL)
        await self.child.wait()
        self.child.close_pipes()
        try:
            await asyncio.to_thread(self.cgroup.remove)
        except SandboxError:
            log.exception("the parked launcher's cgroup is left for the janitor")


class LauncherPool:
    """Up to `size` parked launchers in cgroups under `cgroup_root`, refilled after each take."""

    def __init__(self, cgroup_root: str, limits: Limits, size: int) -> None:
        self._cgroup_root = cgroup_root
        self._limits = limits
        self._size = size
        self._parked: collections.deque[ParkedLauncher] = collections.deque()
        self._filling: asyncio.Task[None] | None = None
        self._discarding: set[asyncio.Task[None]] = set()
        # Not the pid: a server restarted in a container often has the same one, and must still find
        # the launchers its predecessor left parked to be the janitor's.
        token = secrets.token_hex(4)
        self._names = (f"{PARKED_PREFIX}{token}-{number}" for number in itertools.count())
        self._parking: str | None = None
        """The cgroup of the launcher being parked right now."""
        self._closed = False
        self._failures = 0
        """Failed parks since the last warning."""
        self._warned_at = -_WARN_EVERY_S

    def cgroup_names(self) -> frozenset[str]:
        """The cgroups of this pool's launchers, parked or being parked: no job is in them."""
        parked = {launcher.cgroup.dirs["memory"].name for launcher in self._parked}
        return frozenset(parked | ({self._parking} if self._parking else set()))

    def take(self) -> ParkedLauncher | None:
        """A parked launcher, or None when none is ready; either way the pool starts refilling."""
        launcher = None
        while self._parked and launcher is None:
            candidate = self._parked.popleft()
            if candidate.child.running:
                launcher = candidate
            else:  # killed while parked (an operator, the OOM killer): clear it away
                task = asyncio.get_running_loop().create_task(candidate.discard())
                self._discarding.add(task)
                task.add_done_callback(self._discarding.discard)
        if self._size and not self._closed and (self._filling is None or self._filling.done()):
            self._filling = asyncio.get_running_loop().create_task(self._fill())
        return launcher

    async def close(self) -> None:
        """Stop refilling and discard every parked launcher. Idempotent."""
        self._closed = True
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        while self._parked:
            await self._parked.popleft().discard()
        await asyncio.gather(*self._discarding)

    async def _fill(self) -> None:
        await asyncio.sleep(_REFILL_DELAY_S)
        while len(self._parked) < self._size and not self._closed:
            self._parking = next(self._names)
            try:
                launcher = await park(self._cgroup_root, self._parking, self._limits)
            except (OSError, SandboxError) as exc:
                self._park_failed(exc)
                return  # the next take tries again
            finally:
                self._parking = None
            if self._failures:
                log.warning("sandbox launchers park again, after %d more failures", self._failures)
                self._failures = 0
            self._parked.append(launcher)

    def _park_failed(self, failure: Exception) -> None:
        """Warn of the first failure, then at most every _WARN_EVERY_S with how many came between."""
        self._failures += 1
        now = time.monotonic()
        if now - self._warned_at < _WARN_EVERY_S:
            return
        since = f" ({self._failures - 1} more since the last warning)" if self._failures > 1 else ""
        log.warning("cannot park a sandbox launcher, runs start bwrap directly: %s%s", failure, since)
        self._warned_at, self._failures = now, 0


async def park(cgroup_root: str, name: str, limits: Limits) -> ParkedLauncher:
    """Start a launcher and move it into a new cgroup `name` under `cgroup_root` once it is ready (its
    interpreter's start-up is not charged to any job). Raises OSError or SandboxError; nothing is left
    behind then."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # At the lowest priority, so that its start-up does not slow the runs starting meanwhile; it
        # takes back the normal priority before it execs a run's bwrap.
        argv = ["nice", "-n", "19", sys.executable, "-I", "-S", str(_SCRIPT), str(theirs.fileno())]
        child = await Child.spawn(
            argv, cwd=Path("/"), env={}, new_session=True, pass_fds=[theirs.fileno()]
        )  # fmt: skip
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    ours.setblocking(False)
    try:
        ready = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(ours, 1), _READY_TIMEOUT_S)
        if ready != b"r":
            raise OSError(f"the launcher exited before it was ready: {await _stderr_of(child)}")
        # Cancelled meanwhile, the move runs to its end and its cgroup is cleared before the kill below.
        moving = partial(JobCgroup.create_holding, cgroup_root, name, limits, (child.pid,))
        cgroup = await in_thread(moving, JobCgroup.kill_and_remove)
    except BaseException:
        ours.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        await child.wait()
        child.close_pipes()
        raise
    return ParkedLauncher(child, ours, cgroup)


def _message(argv: Sequence[str], env: Mapping[str, str]) -> bytes:
    """The launch message parked_exec.py reads: a length, then NUL-separated count, argv and env."""
    fields = [str(len(argv)), *argv, *(f"{name}={value}" for name, value in env.items())]
    if any("\0" in field for field in fields):
        raise ValueError("embedded null byte in the command or its environment")
    body = b"\0".join(os.fsencode(field) for field in fields)  # as exec would encode them
    return len(body).to_bytes(4, "big") + body


async def _stderr_of(child: Child) -> str:
    with contextlib.suppress(OSError):
        await asyncio.wait_for(child.wait(), 1.0)
        return (await asyncio.wait_for(child.stderr.read(), 1.0)).decode(errors="replace").strip()
    return "no output"
