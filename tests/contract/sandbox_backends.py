"""The sandbox backends the contract suites run against, and their helpers. Add each new backend to
BACKENDS (the fixtures are in conftest.py)."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from outpost.sandbox.base import (
    OutputLine,
    Sandbox,
    SandboxRun,
    SandboxSpec,
    output_lines,
)
from outpost.sandbox.bwrap import BwrapSandbox
from outpost.sandbox.cgroups import Limits
from outpost.sandbox.process import ProcessSandbox

MAX_LINE = 1024
UID_RANGE = 64
LIMITS = Limits(memory_bytes=256 * 2**20, pids_max=64, cpu_cores=1.0)


_OPEN_BWRAP: list[BwrapSandbox] = []
"""bwrap backends the running test made: closed at its end, with the launchers they parked."""


def make_bwrap(data_dir: Path, **options: Any) -> BwrapSandbox:
    """A bwrap backend on a uid range of this test's own, so that other servers' sandboxes on the
    machine are never touched; closed when the test ends (`close_bwrap_backends`)."""
    first = 300_000 + random.randrange(1000) * UID_RANGE
    backend = BwrapSandbox(data_dir, MAX_LINE, uid_first=first, uid_count=UID_RANGE, limits=LIMITS, **options)
    assert backend.problems() == [], backend.problems()
    _OPEN_BWRAP.append(backend)
    return backend


async def close_bwrap_backends() -> None:
    while _OPEN_BWRAP:
        await _OPEN_BWRAP.pop().close()


BACKENDS: dict[str, Callable[[Path], Sandbox]] = {
    "process": lambda data_dir: ProcessSandbox(data_dir, MAX_LINE),
    "bwrap": make_bwrap,
}


def script_spec(workdir: Path, script: str, run_id: str = "d.1", **env: str) -> SandboxSpec:
    return SandboxSpec(run_id=run_id, argv=["/bin/sh", "-c", script], env=env, workdir=workdir)


async def start_script(
    sandbox: Sandbox, workdir: Path, script: str, run_id: str = "d.1", **env: str
) -> SandboxRun:
    return await sandbox.start(script_spec(workdir, script, run_id, **env))


async def collect(run: SandboxRun) -> list[OutputLine]:
    """All output, then the exit (so that no process is left unreaped)."""
    lines = [line async for line in output_lines(run)]
    await run.wait()
    return lines
