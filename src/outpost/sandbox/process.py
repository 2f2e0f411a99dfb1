"""The `process` backend: the command runs as a plain subprocess. INSECURE: it is not isolated at all.

It exists for machines without bubblewrap. Each run gets its own session and process group and a
marker in its environment; kill() signals the group, then sweeps /proc for marked processes that left it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from outpost.errors import SandboxError
from outpost.sandbox import procfs
from outpost.sandbox.base import LimitName, OutputLine, RequestedLimits, SandboxSpec
from outpost.sandbox.child import Child
from outpost.sandbox.naming import instance_marker, workspaces_dir
from outpost.sandbox.streams import merged_lines

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


class ProcessRun:
    def __init__(self, process: Child, marker: str, max_line_bytes: int) -> None:
        self._process = process
        self._marker = marker
        self._max_line_bytes = max_line_bytes

    def output(self) -> AsyncIterator[OutputLine]:
        return merged_lines(self._process.stdout, self._process.stderr, self._max_line_bytes)

    async def wait(self) -> int:
        return await self._process.wait()

    async def limit_exceeded(self) -> LimitName | None:
        return None  # this backend sets no limits

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)
        await asyncio.to_thread(procfs.kill_marked, self._marker)
        await self._process.wait()
        self._process.close_pipes()


class ProcessSandbox:
    name = "process"
    isolated = False

    def __init__(self, data_dir: Path, max_line_bytes: int) -> None:
        self._instance = instance_marker(data_dir)
        self._workspaces_dir = workspaces_dir(data_dir)
        self._max_line_bytes = max_line_bytes

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

    async def start(self, spec: SandboxSpec) -> ProcessRun:
        marker = f"{self._instance}:{spec.run_id}"
        env = {"PATH": BASE_PATH, "HOME": str(spec.workdir), "LANG": "C.UTF-8", **spec.env}
        env[procfs.MARKER_VARIABLE] = marker
        try:
            process = await Child.spawn(spec.argv, cwd=spec.workdir, env=env, new_session=True)
        except OSError as exc:
            raise SandboxError(f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}") from exc
        return ProcessRun(process, marker, self._max_line_bytes)

    async def reap_leftovers(self) -> int:
        return await asyncio.to_thread(procfs.kill_marked, f"{self._instance}:")

    def problems(self) -> list[str]:
        return []


def _fresh_directory(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
