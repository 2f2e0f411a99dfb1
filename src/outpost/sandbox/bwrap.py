"""The `bwrap` backend: each run in bubblewrap namespaces, as its own unprivileged uid.

The command sees a read-only `/usr`, a curated read-only `/etc`, fresh `/proc` and `/dev`, `/tmp`, home
and `/dev/shm` on a capped scratch tmpfs, its workspace (a capped tmpfs) at `/workspace` as the only
persistent writable path, no network but `lo`, and no environment but what the dispatch sets. Killing
the sandbox's pid 1 makes the kernel kill every process in its pid namespace, so no process of a run
outlives it. The flags follow the project's measured sandbox design, with the seccomp deny-list of
`seccomp.py`, the cgroup limits of `cgroups.py`, the file system staged by `bwrap_fs.py`, and one way out:
an HTTP proxy listener that the server opens inside the sandbox's network namespace and serves from the
host (`egress_proxy.py`), which lets through only allowlisted names that resolve to public addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
import stat
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

from outpost.errors import InvalidInput, SandboxError
from outpost.sandbox import bwrap_fs, cgroups, mounts
from outpost.sandbox.base import (
    ComputeUsage,
    Gate,
    InboundService,
    LimitName,
    OutputBatch,
    RequestedLimits,
    RunView,
    SandboxSpec,
    ServedListener,
    pass_gate,
)
from outpost.sandbox.bwrap_args import WORKSPACE, host_path_of_program
from outpost.sandbox.bwrap_fs import DEFAULT_DISK, DEFAULT_RUN_DIR, HOME, DiskLimits, JobPaths
from outpost.sandbox.bwrap_launch import Parked, launch
from outpost.sandbox.cgroups import JobCgroup, Limits
from outpost.sandbox.compute import MemorySampler
from outpost.sandbox.egress_policy import compose_policy
from outpost.sandbox.egress_proxy import EgressDecisionEvent, EgressListener, EgressProxy
from outpost.sandbox.launchers import LauncherGone, LauncherPool
from outpost.sandbox.naming import instance_marker, workspaces_dir
from outpost.sandbox.netns import listener_in_netns
from outpost.sandbox.streams import merged_lines
from outpost.sandbox.threads import in_thread
from outpost.sandbox.uids import UidPool, pids_owned_by

_SIGNAL_EXIT_BASE = 128
log = logging.getLogger(__name__)


class BwrapRun:
    def __init__(
        self,
        parked: Parked,
        paths: JobPaths,
        cgroup: JobCgroup,
        listeners: list[ServedListener],
        on_gone: list[Callable[[], None]],
        max_line_bytes: int,
    ) -> None:
        self._child = parked.child
        self._sandbox_pid = parked.sandbox_pid
        self._paths = paths
        self._cgroup = cgroup
        self._listeners = listeners
        self._cleanups = on_gone
        self._max_line_bytes = max_line_bytes
        self._memory = MemorySampler(cgroup.memory_bytes)
        self._memory.start(self._child.wait())
        self._compute: ComputeUsage | None = None

    def output(self) -> AsyncIterator[OutputBatch]:
        return merged_lines(self._child.stdout, self._child.stderr, self._max_line_bytes)

    async def wait(self) -> int:
        # bwrap reports a command killed by signal N as 128 + N, as shells do; the contract says -N.
        code = await self._child.wait()
        return _SIGNAL_EXIT_BASE - code if code > _SIGNAL_EXIT_BASE else code

    async def limit_exceeded(self) -> LimitName | None:
        try:
            usage = await asyncio.to_thread(self._cgroup.usage)
        except SandboxError:
            return None  # already killed and removed
        if usage.oom_kills:
            return "oom"
        if usage.pids_limit_hits:
            return "pids"
        return "disk_full" if await asyncio.to_thread(self._paths.is_full) else None

    async def kill(self) -> None:
        first = bool(self._cleanups)
        if first:
            await self._memory.stop()
            # Freeze-kill-thaw everything but the outer bwrap (a fork bomb cannot outrun it); the outer
            # bwrap then exits and is reaped here, so no zombie is left for the host's init.
            await asyncio.to_thread(self._cgroup.kill, (self._child.pid,))
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._sandbox_pid, signal.SIGKILL)
        await self._child.wait()
        self._child.close_pipes()
        for listener in self._listeners:  # the egress proxy's and the services': they keep the
            await listener.close()  # sandbox's network namespace alive until closed
        if first:  # every process is gone, and the cgroup (with its final counters) not yet
            self._compute = await self._usage()
        # Once every process is gone: cgroup, staged files and uid are free (in a thread: a cgroup that
        # is still busy for a moment is retried with short sleeps).
        cleanups, self._cleanups = self._cleanups, []
        await asyncio.to_thread(_run_all, cleanups)

    async def compute_usage(self) -> ComputeUsage:
        """CPU time from the cgroup's accounting (cpuacct), memory-time from its sampled usage; while the
        run is alive, both so far (one cgroup file read)."""
        return self._compute if self._compute is not None else await self._usage()

    async def _usage(self) -> ComputeUsage:
        memory = self._memory.integral
        cpu_usec = await asyncio.to_thread(self._cgroup.cpu_usec)
        return ComputeUsage(cpu_usec or 0, memory.byte_s, memory.peak_bytes)


class BwrapSandbox:
    name = "bwrap"
    isolated = True

    def __init__(
        self,
        data_dir: Path,
        max_line_bytes: int,
        uid_first: int,
        uid_count: int,
        limits: Limits,
        egress_allow: tuple[str, ...] = (),
        *,
        disk: DiskLimits = DEFAULT_DISK,
        run_dir: Path = DEFAULT_RUN_DIR,
        parked_launchers: int = 2,
    ) -> None:
        """`egress_allow`: hosts every run may reach through the egress proxy. `disk`: the default size
        of a workspace. `run_dir`: where runs are staged for bwrap (see bwrap_fs). `parked_launchers`:
        how many bwrap launchers wait in their cgroups for the next runs (see launchers.py). Raises
        InvalidInput for a malformed egress entry."""
        self._egress_allow = egress_allow
        compose_policy(egress_allow)  # refuse a bad global list at once, not at the first run
        self._proxy = EgressProxy()
        marker = instance_marker(data_dir)
        self._workspaces_dir = workspaces_dir(data_dir)
        self._staging_dir = run_dir / marker
        self._cgroup_root = f"outpost-{marker}"
        self._max_line_bytes = max_line_bytes
        self._uids = UidPool(uid_first, uid_count)
        self._limits = limits
        self._disk = disk
        self._staging_lock = threading.Lock()
        self._launchers = LauncherPool(self._cgroup_root, limits, parked_launchers)

    async def create_workspace(self, name: str, limits: RequestedLimits) -> Path:
        workdir = self._workspaces_dir / name
        size = limits.disk_bytes or self._disk.size_bytes
        try:
            await asyncio.to_thread(bwrap_fs.create_workspace, workdir, size, self._disk.inodes)
        except OSError as exc:
            raise SandboxError(f"cannot create the workspace: {exc}") from exc
        return workdir

    async def remove_workspace(self, workdir: Path) -> None:
        try:
            await asyncio.to_thread(bwrap_fs.remove_workspace, workdir)
        except SandboxError:
            log.exception("workspace %s left behind; the next start's janitor removes it", workdir)

    async def view(self, run_id: str, workdir: Path, services: tuple[InboundService, ...]) -> RunView:
        """Every run sees the same places; each service listens at 127.0.0.1 in the run's own namespace."""
        urls = {service.name: f"http://127.0.0.1:{service.port}" for service in services}
        return RunView(workdir=WORKSPACE, home=HOME, urls=urls)

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> BwrapRun:
        if host_path_of_program(spec.argv[0], spec.workdir, spec.read_only) is None:
            raise SandboxError(f"cannot start {spec.argv[0]!r}: no such program in the sandbox")
        uid = self._uids.acquire()
        paths = JobPaths(self._staging_dir / spec.run_id)
        cleanups: list[Callable[[], None]] = [
            lambda: self._uids.release(uid),
            lambda: self._unstage(paths),
        ]
        try:
            await in_thread(lambda: self._stage(paths, spec, uid))
            parked, cgroup = await self._launch_confined(spec, paths, uid)
        except (OSError, ValueError, SandboxError) as exc:
            _run_all(cleanups)
            raise SandboxError(f"cannot start the sandbox: {exc}") from exc
        except BaseException:  # cancelled (the worker stops): nothing of the run may be left
            _run_all(cleanups)
            raise
        cleanups.append(cgroup.remove)
        listeners: list[ServedListener] = []
        try:
            listeners.append(await self._open_egress(spec, parked))
            for service in spec.services:
                opening = functools.partial(listener_in_netns, parked.sandbox_pid, service.port)
                sock = await in_thread(opening, _close)
                listeners.append(await service.serve(sock, spec.run_id))
        except (OSError, InvalidInput) as exc:
            await _abandon(parked, listeners, cleanups)
            raise SandboxError(f"cannot open the sandbox's network listeners: {exc}") from exc
        except BaseException:
            await _abandon(parked, listeners, cleanups)
            raise
        if gate is not None:
            await pass_gate(gate, lambda: _abandon(parked, listeners, cleanups))
        parked.release()
        return BwrapRun(parked, paths, cgroup, listeners, cleanups, self._max_line_bytes)

    def _stage(self, paths: JobPaths, spec: SandboxSpec, uid: int) -> None:
        with self._staging_lock:  # the last run's _unstage() may be removing the staging dir
            bwrap_fs.searchable_dir(self._staging_dir)
            bwrap_fs.stage(paths, spec.workdir, uid, spec.read_only, spec.home_files)
        if spec.on_staged is not None:
            spec.on_staged()

    def _unstage(self, paths: JobPaths) -> None:
        bwrap_fs.remove(paths)
        with self._staging_lock, contextlib.suppress(OSError):
            self._staging_dir.rmdir()  # when no other run is staged: leave nothing in the run dir

    async def _open_egress(self, spec: SandboxSpec, parked: Parked) -> EgressListener:
        """The proxy listener inside the sandbox's network namespace: the run's only way out."""
        policy = compose_policy(self._egress_allow, spec.egress_allow)
        listener = await in_thread(lambda: listener_in_netns(parked.sandbox_pid), _close)

        def record(decision: EgressDecisionEvent) -> None:
            data = {"host": decision.host, "port": decision.port, "method": decision.method}
            spec.events("egress", {**data, "allowed": decision.allowed, "reason": decision.reason})

        return await self._proxy.serve(listener, spec.run_id, policy, record)

    def _limits_for(self, requested: RequestedLimits) -> Limits:
        """The server's limits, with those the dispatch asked for (already checked against them)."""
        default = self._limits
        return Limits(
            memory_bytes=requested.memory_bytes or default.memory_bytes,
            pids_max=requested.pids_max or default.pids_max,
            cpu_cores=requested.cpu_cores or default.cpu_cores,
        )

    async def _launch_confined(
        self, spec: SandboxSpec, paths: JobPaths, uid: int
    ) -> tuple[Parked, JobCgroup]:
        """bwrap, its command held back, in the job's cgroup: born there from a parked launcher when one
        is ready, else started and moved in."""
        limits = self._limits_for(spec.limits)
        launcher = self._launchers.take()
        if launcher is not None:
            try:
                cgroup = await in_thread(lambda: launcher.claim(spec.run_id, limits))
                return await launch(spec, paths, uid, launcher), cgroup
            except LauncherGone:
                await launcher.discard()  # died while parked: start bwrap directly after all
            except BaseException:
                await launcher.discard()  # the launcher, or the bwrap it became, and its cgroup
                raise
        parked = await launch(spec, paths, uid, None)
        try:
            confining = partial(self._confine, spec.run_id, parked, limits)
            confined = await in_thread(confining, JobCgroup.kill_and_remove)
            return parked, confined
        except BaseException:
            await parked.abandon()
            raise

    def _confine(self, job: str, parked: Parked, limits: Limits) -> JobCgroup:
        """The job's cgroup, holding bwrap and the sandbox's pid 1 before the command starts."""
        pids = (parked.child.pid, parked.sandbox_pid)
        return JobCgroup.create_holding(self._cgroup_root, job, limits, pids)

    async def close(self) -> None:
        await self._launchers.close()

    async def reap_leftovers(self) -> int:
        """Kill what an earlier server of this data dir left: its uids' processes, job cgroups, staged
        runs and workspace mounts. This backend's own parked launchers are spared; its runs are not."""
        pids = pids_owned_by(self._uids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await asyncio.to_thread(cgroups.reap_stale, self._cgroup_root, self._launchers.cgroup_names())
        for leftovers in (self._staging_dir, self._workspaces_dir):
            await asyncio.to_thread(mounts.unmount_all_under, leftovers)
            await asyncio.to_thread(shutil.rmtree, leftovers, True)
        return len(pids)

    def problems(self) -> list[str]:
        found = cgroups.problems()
        if shutil.which("bwrap") is None:
            found.append("bubblewrap is not installed: run scripts/bootstrap (apt-get install bubblewrap)")
        if shutil.which("setpriv") is None:
            found.append("setpriv is not installed: run scripts/bootstrap (apt-get install util-linux)")
        if os.geteuid() != 0:
            found.append("the bwrap backend runs each dispatch as its own uid, which needs root")
        if _max_user_namespaces() == 0:
            found.append("user namespaces are disabled: set the sysctl user.max_user_namespaces above 0")
        blocked = unsearchable_ancestor(self._staging_dir)
        if blocked is not None:
            found.append(
                f"sandbox uids cannot reach the run dir: {blocked} is not searchable by others "
                "(chmod o+x it, or set OUTPOST_SANDBOX__RUN_DIR elsewhere)"
            )
        return found


async def _abandon(
    parked: Parked, listeners: list[ServedListener], cleanups: list[Callable[[], None]]
) -> None:
    """Undo a start whose command never ran: its listeners, its sandbox, its files, cgroup and uid."""
    for listener in listeners:
        await listener.close()
    await parked.abandon()
    _run_all(cleanups)


def _close(listener: socket.socket) -> None:
    listener.close()


def _run_all(cleanups: list[Callable[[], None]]) -> None:
    """Run cleanups, last added first; one that fails is logged and the others still run (what it
    leaves is the next start's janitor's)."""
    for cleanup in reversed(cleanups):
        try:
            cleanup()
        except (SandboxError, OSError):
            log.exception("sandbox cleanup failed; the janitor removes what is left at the next start")


def unsearchable_ancestor(path: Path) -> Path | None:
    """The first existing ancestor of `path` that other users cannot search (bwrap runs as the job's uid
    and must reach its bind sources), or None."""
    for ancestor in reversed(path.resolve().parents):
        try:
            if not ancestor.stat().st_mode & stat.S_IXOTH:
                return ancestor
        except FileNotFoundError:
            return None
    return None


def _max_user_namespaces() -> int:
    try:
        return int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        return 0
