"""The sandbox seam. Every backend passes the contract suite in tests/contract/test_sandbox_contract.py."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Stream = Literal["stdout", "stderr"]
LimitName = Literal["oom", "pids", "disk_full"]


@dataclass(frozen=True, slots=True)
class RequestedLimits:
    """Limits a dispatch asked for; None keeps the backend's default. Backends without limits ignore it."""

    memory_bytes: int | None = None
    pids_max: int | None = None
    cpu_cores: float | None = None
    disk_bytes: int | None = None


EventSink = Callable[[str, dict[str, object]], None]
"""`(kind, data)`: something the sandbox observed about the run (e.g. an egress decision). Must not block."""


Gate = Callable[[], Awaitable[bool]]
"""Asked by `Sandbox.start()` once the run is ready but before its command starts: True lets the command
start, False calls the start off."""


class StartCalledOff(Exception):
    """`Sandbox.start()`'s gate said no: the command never started and nothing of the run is left."""


async def pass_gate(gate: Gate, undo: Callable[[], Awaitable[None]]) -> None:
    """For backends: await `gate` with the run ready and its command held back. Unless it lets the
    command start, `undo()` what the start made, then raise StartCalledOff (or the gate's exception)."""
    try:
        go = await gate()
    except BaseException:
        await undo()
        raise
    if not go:
        await undo()
        raise StartCalledOff


def _ignore_events(kind: str, data: dict[str, object]) -> None:
    """The default sink: the caller does not record sandbox events."""


class ServedListener(Protocol):
    async def close(self) -> None:
        """Stop serving and close the socket and its connections. Idempotent; never raises."""


class InboundService(Protocol):
    """A host-side server that runs reach by URL (the model gateway). The backend opens a listening socket
    where the run can reach it and hands it over; the service serves it from the host."""

    name: str
    port: int
    """The port it listens on at 127.0.0.1 inside a run's own network namespace."""

    async def serve(self, listener: socket.socket, run_id: str | None) -> ServedListener:
        """Serve `listener`. `run_id` is the one run that can reach it, or None for a listener every run
        of the backend shares (backends without a network namespace per run)."""


@dataclass(frozen=True, slots=True)
class RunView:
    """How a run sees its places: its working directory, its home, and each inbound service's URL."""

    workdir: str
    home: str
    urls: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """One run of one command. `run_id` is unique per dispatch attempt. `egress_allow` adds hosts to the
    server's egress allowlist for this run (backends without network ignore it). `home_files` are placed
    in the run's home before it starts (content, or a host file to copy), by path relative to the home;
    `read_only` host directories are visible to the run at the same path; `services` are reachable at the
    URLs `Sandbox.view()` gave. `on_staged`, if any, is called (in a worker thread) once the run's files are
    in place and its workspace belongs to the run, before its command starts."""

    run_id: str
    argv: list[str]
    env: dict[str, str]
    workdir: Path
    egress_allow: tuple[str, ...] = ()
    events: EventSink = field(default=_ignore_events)
    limits: RequestedLimits = field(default_factory=RequestedLimits)
    home_files: Mapping[str, bytes | Path] = field(default_factory=dict)
    read_only: tuple[Path, ...] = ()
    services: tuple[InboundService, ...] = ()
    on_staged: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class OutputLine:
    stream: Stream
    text: str


@dataclass(frozen=True, slots=True)
class OutputBatch:
    """Consecutive lines of one stream, read together. Output comes in batches so that a run printing
    millions of short lines costs the worker per read, not per line."""

    stream: Stream
    lines: list[str]
    continued: frozenset[int] = frozenset()
    """Indexes of lines the backend cut at its line limit: each continues in the stream's next line
    (perhaps in the next batch)."""


@dataclass(frozen=True, slots=True)
class ComputeUsage:
    """What a run used: CPU time of all its processes, memory held over its life, and peak memory."""

    cpu_usec: int = 0
    memory_byte_s: int = 0
    """Memory in use integrated over time (sampled; see sandbox/compute.py)."""
    memory_peak_bytes: int = 0


class SandboxRun(Protocol):
    def output(self) -> AsyncIterator[OutputBatch]:
        """The run's output, stdout and stderr batches interleaved (order kept within each stream), until
        both streams close.

        Lines are decoded as UTF-8 (bad bytes replaced), NUL characters replaced, and lines longer than
        the backend's limit split. No batch is empty.
        """

    async def wait(self) -> int:
        """Wait for the run's main process; its exit code, or minus the signal that killed it."""

    async def limit_exceeded(self) -> LimitName | None:
        """After `wait()` and before `kill()`: which resource limit the run ran into, if any (a run that
        hits its memory limit is killed by the kernel; one that hits its process limit cannot fork; one
        that fills its workspace or scratch space gets ENOSPC)."""

    async def kill(self) -> None:
        """Kill every process of the run and return once they are gone. Idempotent; never raises."""

    async def compute_usage(self) -> ComputeUsage:
        """After `kill()`: the CPU time and memory the run used, for the ledger. While the run is alive
        (not during `kill()`): what it used so far, cheap enough to ask every few seconds. Never raises;
        what the backend cannot measure is zero."""


class Sandbox(Protocol):
    name: str
    isolated: bool
    """False for backends that do not confine the command (they say so in logs and /health/ready)."""

    async def create_workspace(self, name: str, limits: RequestedLimits) -> Path:
        """A new empty directory for a dispatch's workspace, capped at the disk limit where the backend
        has one. The worker fills it (and reads it back) on the host; `start()` makes it the run's
        working directory. Raises SandboxError."""

    async def remove_workspace(self, workdir: Path) -> None:
        """Delete a workspace made by `create_workspace`, after its runs are killed. Never raises."""

    async def view(self, run_id: str, workdir: Path, services: tuple[InboundService, ...]) -> RunView:
        """How run `run_id` in `workdir` will see its places and reach `services` (start it with the same
        services). Raises SandboxError when a service cannot be made reachable."""

    async def start(self, spec: SandboxSpec, gate: Gate | None = None) -> SandboxRun:
        """Start the command. Raises SandboxError when it cannot start (missing program, bad workdir).

        With `gate`, the backend first makes the run ready as far as it can without starting the command
        (bwrap: staging, namespaces, cgroup, listeners), then awaits `gate()`: True starts the command;
        False raises StartCalledOff, and an exception from the gate passes through, each once nothing of
        the run is left. The caller's own work before the command may start (recording that it runs)
        then overlaps with the sandbox's."""

    async def reap_leftovers(self) -> int:
        """Kill processes left behind by an earlier server of this data dir; how many there were."""

    async def close(self) -> None:
        """Let go of what the backend keeps between runs (processes waiting for the next run). For the
        server's stop, after its runs are gone; runs started later still work. Never raises."""

    def problems(self) -> list[str]:
        """What stops this backend from working here (empty when ready), each with how to fix it."""


async def output_lines(run: SandboxRun) -> AsyncIterator[OutputLine]:
    """The run's output one line at a time, for readers that do not care about batches."""
    async for batch in run.output():
        for text in batch.lines:
            yield OutputLine(batch.stream, text)
