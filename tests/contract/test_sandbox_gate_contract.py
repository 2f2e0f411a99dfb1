"""The start gate of every sandbox backend: `Sandbox.start(spec, gate)` makes the run ready, holds its
command until the gate says yes, and leaves nothing of the run when the gate says no, fails or is
cancelled."""

from __future__ import annotations

import asyncio
import glob
from pathlib import Path

import pytest

from outpost.sandbox.base import Gate, RequestedLimits, Sandbox, StartCalledOff
from outpost.sandbox.bwrap_fs import DEFAULT_RUN_DIR
from outpost.sandbox.naming import instance_marker
from tests.contract.sandbox_backends import collect, make_bwrap, script_spec
from tests.procs import alive, pids_running

HELD_S = 0.3
"""How long the gates below keep a command waiting: ample time for a command that was not held to run."""


async def test_the_command_starts_only_once_the_gate_says_yes(sandbox: Sandbox, workdir: Path) -> None:
    ran = workdir / "ran"
    seen_before_yes: list[bool] = []

    async def gate() -> bool:
        await asyncio.sleep(HELD_S)
        seen_before_yes.append(ran.exists())
        return True

    run = await sandbox.start(script_spec(workdir, "touch ran; echo started"), gate)
    assert [line.text for line in await collect(run)] == ["started"]
    assert seen_before_yes == [False]
    assert ran.exists()
    await run.kill()


class GateFailed(Exception):
    pass


async def _says_no() -> bool:
    await asyncio.sleep(0.05)
    return False


async def _fails() -> bool:
    raise GateFailed("the database went away")


@pytest.mark.parametrize(
    ("gate", "raised", "script"),
    [(_says_no, StartCalledOff, "touch ran; sleep 31.1"), (_fails, GateFailed, "touch ran; sleep 31.2")],
    ids=["says no", "fails"],
)
async def test_a_gate_that_says_no_or_fails_calls_the_start_off(
    sandbox: Sandbox, workdir: Path, tmp_path: Path, gate: Gate, raised: type[Exception], script: str
) -> None:
    with pytest.raises(raised):
        await sandbox.start(script_spec(workdir, script), gate)
    await _assert_nothing_left(workdir, tmp_path, script)


async def test_a_start_cancelled_at_its_gate_leaves_nothing(
    sandbox: Sandbox, workdir: Path, tmp_path: Path
) -> None:
    reached = asyncio.Event()

    async def gate() -> bool:
        reached.set()
        await asyncio.Event().wait()  # never opens
        return True

    starting = asyncio.create_task(sandbox.start(script_spec(workdir, "touch ran; sleep 31.3"), gate))
    await asyncio.wait_for(reached.wait(), 10)
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    await _assert_nothing_left(workdir, tmp_path, "touch ran; sleep 31.3")


async def test_a_start_called_off_leaves_room_for_the_next(sandbox: Sandbox, workdir: Path) -> None:
    async def no() -> bool:
        return False

    for _ in range(3):
        with pytest.raises(StartCalledOff):
            await sandbox.start(script_spec(workdir, "true"), no)
    run = await sandbox.start(script_spec(workdir, "echo after"))
    assert [line.text for line in await collect(run)] == ["after"]
    await run.kill()


async def _assert_nothing_left(workdir: Path, tmp_path: Path, script: str, held_s: float = HELD_S) -> None:
    """The command never ran, and no process (a sandbox holding it back), file or cgroup of the run is
    left."""
    await asyncio.sleep(held_s)
    assert not (workdir / "ran").exists()
    assert alive(pids_running(script)) == []
    data_dir = tmp_path / "data"
    marker = instance_marker(data_dir)
    assert glob.glob(f"/sys/fs/cgroup/*/outpost-{marker}/d.*") == []  # bwrap's
    assert not (DEFAULT_RUN_DIR / marker / "d.1").exists()  # bwrap's staged files
    assert not (data_dir / "homes" / "d.1").exists()  # the process backend's home of the run


@pytest.mark.parametrize("parked_launchers", [0, 2])
async def test_a_bwrap_start_cancelled_at_any_point_leaves_nothing(
    tmp_path: Path, parked_launchers: int
) -> None:
    # The worker cancels a start as it stops. Swept over the start's whole length: staging, bwrap born
    # from a launcher or started and moved in, its info, the listeners, the gate.
    sandbox = make_bwrap(tmp_path / "data", parked_launchers=parked_launchers)
    workdir = await sandbox.create_workspace("w", RequestedLimits())
    script = "touch ran; sleep 31.4"

    async def never() -> bool:
        await asyncio.Event().wait()
        return True

    for delay_ms in range(0, 60, 3):
        starting = asyncio.create_task(sandbox.start(script_spec(workdir, script), never))
        await asyncio.sleep(delay_ms / 1000)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
        await asyncio.sleep(0.06)  # a launcher taken is refilled behind the start
        await _assert_nothing_left(workdir, tmp_path, script, held_s=0)
    await sandbox.remove_workspace(workdir)
