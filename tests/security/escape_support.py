"""A real BwrapSandbox for the escape cases of section 4 of the sandbox reference (test_escape_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from outpost.sandbox import mounts
from outpost.sandbox.base import LimitName, RequestedLimits, SandboxSpec, output_lines
from outpost.sandbox.bwrap import BwrapRun, BwrapSandbox
from outpost.sandbox.bwrap_fs import DEFAULT_DISK, DiskLimits
from outpost.sandbox.cgroups import Limits
from outpost.sandbox.uids import UidPool, pids_owned_by

MAX_LINE = 4096
UID_COUNT = 64
LIMITS = Limits(memory_bytes=128 * 2**20, pids_max=64, cpu_cores=0.5)
ALLOWED = ("allowed.test",)
PYTHON = "/usr/bin/python3"

# Speaks to the proxy listener inside the sandbox: one connection per argument ("CONNECT host:port" or
# "GET http://host/"), printing `request | status line | body`.
PROXY_PROBE = r"""
import socket, sys
for request in sys.argv[1:]:
    with socket.create_connection(("127.0.0.1", 3128), timeout=5) as s:
        s.sendall(f"{request} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    print(request, "|", head.split(b"\r\n")[0].decode(), "|", body.decode().strip())
"""


@dataclass
class Outcome:
    code: int
    stdout: list[str]
    stderr: list[str]
    limit: LimitName | None
    events: list[dict[str, object]] = field(default_factory=list)

    @property
    def out(self) -> str:
        return "\n".join(self.stdout)

    def pairs(self) -> dict[str, str]:
        """`key value` stdout lines as a dict."""
        return dict(line.split(" ", 1) for line in self.stdout if " " in line)


class Jail:
    """A BwrapSandbox over a private temp dir, with a uid range of its own."""

    def __init__(self, root: Path, limits: Limits = LIMITS, disk: DiskLimits = DEFAULT_DISK) -> None:
        self.root = root
        self.data_dir = root / "data"
        self.uid_first = 600_000 + random.randrange(1000) * UID_COUNT
        self.limits = limits
        self.disk = disk
        self.sandbox = self.make_sandbox()
        self.events: list[dict[str, object]] = []

    def make_sandbox(self) -> BwrapSandbox:
        return BwrapSandbox(
            self.data_dir, MAX_LINE, self.uid_first, UID_COUNT, self.limits, ALLOWED, disk=self.disk
        )

    def leftover_pids(self) -> list[int]:
        """Processes (zombies included) whose uid is in this jail's range."""
        return pids_owned_by(UidPool(self.uid_first, UID_COUNT))

    def workdir(self) -> Path:
        """A plain host directory (not capped) for a run's workspace."""
        path = self.root / f"ws-{uuid.uuid4().hex[:8]}"
        path.mkdir(mode=0o700)
        return path

    async def workspace(self, disk_bytes: int | None = None) -> Path:
        """A workspace as the worker gets it: a capped tmpfs."""
        name = f"ws-{uuid.uuid4().hex[:8]}"
        return await self.sandbox.create_workspace(name, RequestedLimits(disk_bytes=disk_bytes))

    async def start(
        self, argv: list[str], workdir: Path | None = None, env: dict[str, str] | None = None
    ) -> BwrapRun:
        spec = SandboxSpec(
            run_id=f"esc-{uuid.uuid4().hex[:10]}", argv=argv, env=env or {},
            workdir=workdir or await self.workspace(), events=lambda kind, data: self.events.append(data),
        )  # fmt: skip
        return await self.sandbox.start(spec)

    async def run(
        self,
        code: str,
        *,
        python: bool = False,
        args: tuple[str, ...] = (),
        timeout_s: float = 20,
        **kw: object,
    ) -> Outcome:
        """Run a bash script (or Python code) to the end; its output, exit code and limit hit."""
        argv = [PYTHON, "-c", code, *args] if python else ["/bin/bash", "-c", code, "bash", *args]
        run = await self.start(argv, **kw)  # type: ignore[arg-type]
        try:
            async with asyncio.timeout(timeout_s):
                lines = [line async for line in output_lines(run)]
                code_ = await run.wait()
            limit = await run.limit_exceeded()
        finally:
            await run.kill()
        stdout = [line.text for line in lines if line.stream == "stdout"]
        stderr = [line.text for line in lines if line.stream == "stderr"]
        return Outcome(code_, stdout, stderr, limit, list(self.events))


@contextlib.asynccontextmanager
async def jail_in_temp_dir(limits: Limits = LIMITS, disk: DiskLimits = DEFAULT_DISK) -> AsyncIterator[Jail]:
    """A Jail over a private temp dir (the sandbox's uids need not reach it: runs are staged elsewhere)."""
    path = Path(tempfile.mkdtemp(prefix="outpost-escape-"))
    jail = None
    try:
        jail = Jail(path, limits, disk)
        assert jail.sandbox.problems() == [], jail.sandbox.problems()
        yield jail
    finally:
        if jail is not None:
            await jail.sandbox.close()  # the launchers it parked
        mounts.unmount_all_under(path)  # the workspaces' tmpfs
        shutil.rmtree(path, ignore_errors=True)
