"""The `process` backend: the command runs as a plain subprocess. INSECURE: it is not isolated at all.

It exists for machines without bubblewrap. Each run gets its own session and process group and a
marker in its environment; kill() signals the group, then sweeps /proc for marked processes that left it.
Runs share the host's network, so an inbound service gets one host listener on an ephemeral loopback port
that every run of this backend reaches (the service tells runs apart by their credentials).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from outpost.errors import SandboxError
from outpost.sandbox import procfs
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
from outpost.sandbox.child import Child
from outpost.sandbox.compute import MemorySampler
from outpost.sandbox.home_files import place_home_files
from outpost.sandbox.naming import instance_marker, workspaces_dir
from outpost.sandbox.streams import merged_lines

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


class ProcessRun:
    def __init__(self, process: Child, marker: str, max_line_bytes: int, home: Path) -> None:
        self._process = process
        self._marker = marker
        self._max_line_bytes = max_line_bytes
        self._home = home
        # Its session: the run was started in a new one, whose id is its pid.
        self._memory = MemorySampler(functools.partial(procfs.session_rss_bytes, process.pid))
        self._memory.start(process.wait())

    def output(self) -> AsyncIterator[OutputBatch]:
        return merged_lines(self._process.stdout, self._process.stderr, self._max_line_bytes)

    async def wait(self) -> int:
        return await self._process.wait()

    async def limit_exceeded(self) -> LimitName | None:
        return None  # this backend sets no limits

    async def kill(self) -> None:
        await self._memory.stop()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        await asyncio.to_thread(procfs.kill_marked, self._marker)
        await self._process.wait()
        self._process.close_pipes()
        await asyncio.to_thread(shutil.rmtree, self._home, True)

    async def compute_usage(self) -> ComputeUsage:
        """Best effort, without cgroups: CPU time from the main process's rusage, which includes the
        descendants it (or a descendant it waited for) waited for, but not those left running when it
        ended or that detached; memory from the resident sizes of the run's session, sampled. While the
        main process runs (no rusage yet), CPU time is that of its session's processes so far (see
        `procfs.session_cpu_usec`: a read of /proc, milliseconds)."""
        memory = self._memory.integral
        rusage = self._process.rusage
        if rusage is None:
            return ComputeUsage(await self._cpu_so_far(), memory.byte_s, memory.peak_bytes)
        cpu_usec = round((rusage.ru_utime + rusage.ru_stime) * 1_000_000)
        # ru_maxrss is in KiB: the largest single process, a floor for the session's peak.
        return ComputeUsage(cpu_usec, memory.byte_s, max(memory.peak_bytes, rusage.ru_maxrss * 1024))

    async def _cpu_so_far(self) -> int:
        try:
            return await asyncio.to_thread(procfs.session_cpu_usec, self._process.pid)
        except OSError:
            return 0  # /proc unreadable: what cannot be measured is zero (the contract)


class ProcessSandbox:
    name = "process"
    isolated = False

    def __init__(self, data_dir: Path, max_line_bytes: int) -> None:
        self._instance = instance_marker(data_dir)
        self._workspaces_dir = workspaces_dir(data_dir)
        self._homes_dir = data_dir.resolve() / "homes"
        self._max_line_bytes = max_line_bytes
        self._shared: dict[str, tuple[str, ServedListener]] = {}
        self._shared_lock = asyncio.Lock()

    async def create_workspace(self, name: str, limits: RequestedLimits) -> Path:
        """A plain directory: this backend has no disk limit."""
        workdir = self._workspaces_dir / name
        try:
            await asyncio.to_thread(_fresh_directory, workdir)
        except OSError as exc:
            raise SandboxError(f"cannot create the workspace: {exc}") from exc
        return workdir

    async def remove_workspace(self, workdir: Path) -> None:
        await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def view(self, run_id: str, workdir: Path, services: tuple[InboundService, ...]) -> RunView:
        urls = {service.name: await self._shared_url(service) for service in services}
        return RunView(workdir=str(workdir), home=str(self._homes_dir / run_id), urls=urls)

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> ProcessRun:
        marker = f"{self._instance}:{spec.run_id}"
        home = self._homes_dir / spec.run_id
        await asyncio.to_thread(_fresh_home, home, spec)
        if spec.on_staged is not None:
            await asyncio.to_thread(spec.on_staged)
        if gate is not None:
            await pass_gate(gate, lambda: asyncio.to_thread(shutil.rmtree, home, True))
        env = {"PATH": BASE_PATH, "HOME": str(home), "LANG": "C.UTF-8", **spec.env}
        env[procfs.MARKER_VARIABLE] = marker
        try:
            process = await Child.spawn(spec.argv, cwd=spec.workdir, env=env, new_session=True)
        except OSError as exc:
            await asyncio.to_thread(shutil.rmtree, home, True)
            raise SandboxError(f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}") from exc
        return ProcessRun(process, marker, self._max_line_bytes, home)

    async def _shared_url(self, service: InboundService) -> str:
        """The URL of the service's one host listener, opened on first use and kept for the server's life."""
        async with self._shared_lock:
            if service.name not in self._shared:
                listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    listener.bind(("127.0.0.1", 0))
                    listener.listen(128)
                except OSError as exc:
                    listener.close()
                    raise SandboxError(f"cannot open a listener for {service.name}: {exc}") from exc
                url = f"http://127.0.0.1:{listener.getsockname()[1]}"
                self._shared[service.name] = (url, await service.serve(listener, None))
            return self._shared[service.name][0]

    async def reap_leftovers(self) -> int:
        killed = await asyncio.to_thread(procfs.kill_marked, f"{self._instance}:")
        await asyncio.to_thread(shutil.rmtree, self._homes_dir, True)  # the homes of runs that were lost
        return killed

    async def close(self) -> None:
        """Nothing waits between runs here: each run starts its command directly."""

    def problems(self) -> list[str]:
        return []


def _fresh_home(home: Path, spec: SandboxSpec) -> None:
    _fresh_directory(home)
    home.chmod(0o700)
    place_home_files(home, spec.home_files, None)


def _fresh_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
