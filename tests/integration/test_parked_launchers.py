"""Parked launchers on the real kernel: bwrap born in its job's cgroup, with the job's limits and normal
priority; the launch message and descriptors arrive whole; dead launchers are skipped; close and the
janitor leave nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from outpost.sandbox.base import RequestedLimits, SandboxSpec, output_lines
from outpost.sandbox.bwrap import BwrapSandbox
from outpost.sandbox.cgroups import JobCgroup, Limits
from outpost.sandbox.launchers import LauncherGone, LauncherPool, ParkedLauncher, park
from outpost.sandbox.naming import instance_marker
from tests.sandboxes import require_bwrap

LIMITS = Limits(memory_bytes=256 << 20, pids_max=64, cpu_cores=1.0)
PATH_ONLY = {"PATH": "/usr/bin:/bin"}


@pytest.fixture(autouse=True)
def _bwrap_works() -> None:
    require_bwrap()


@pytest.fixture
def root() -> str:
    """A cgroup root of this test's own."""
    return f"outpost-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def launcher(root: str) -> AsyncIterator[ParkedLauncher]:
    parked = await park(root, "_parked-t", LIMITS)
    yield parked
    await parked.discard()


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[tuple[BwrapSandbox, str]]:
    """A bwrap backend with 2 parked launchers, and its cgroup root, which its close must leave empty."""
    sandbox = _bwrap(tmp_path / "data")
    root = f"outpost-{instance_marker(tmp_path / 'data')}"
    yield sandbox, root
    await sandbox.close()
    assert glob.glob(f"/sys/fs/cgroup/*/{root}") == []


def _value(path: Path) -> str:
    return path.read_text().strip()


def _cgroup_of(pid: int, controller: str = "memory") -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
    raise AssertionError(f"no {controller} line for pid {pid}")


async def test_a_launcher_waits_in_its_cgroup_without_its_start_up_charged_to_it(
    launcher: ParkedLauncher, root: str
) -> None:
    assert _cgroup_of(launcher.child.pid) == f"/{root}/_parked-t"
    assert launcher.child.running
    # The interpreter started before the move: what the job's accounting holds is a few syscalls.
    assert launcher.cgroup.cpu_usec() is not None
    assert launcher.cgroup.cpu_usec() < 5_000


async def test_a_claimed_launcher_execs_its_command_in_the_job_cgroup_with_the_descriptors_given(
    launcher: ParkedLauncher, root: str
) -> None:
    cgroup = await asyncio.to_thread(launcher.claim, "job.1", Limits(64 << 20, 16, 0.5))
    assert _value(cgroup.dirs["memory"] / "memory.limit_in_bytes") == str(64 << 20)
    assert _value(cgroup.dirs["pids"] / "pids.max") == "16"
    assert glob.glob(f"/sys/fs/cgroup/*/{root}/_parked-t") == []
    first_read, first_write = os.pipe()
    second_read, second_write = os.pipe()
    script = (
        'echo one >&3; echo two >&4; echo "$GREETING"; cat /proc/self/cgroup | grep memory; ls /proc/self/fd'
    )
    child = await launcher.exec(
        ["sh", "-c", script], {**PATH_ONLY, "GREETING": "hello"}, [first_write, second_write]
    )  # fmt: skip
    for fd in (first_write, second_write):
        os.close(fd)
    assert child.pid == launcher.child.pid  # the launcher became the command
    assert await child.wait() == 0
    lines = (await child.stdout.read()).decode().splitlines()
    assert lines[0] == "hello"
    assert lines[1].endswith(f":memory:/{root}/job.1")
    assert sorted(int(fd) for fd in lines[2:]) == [0, 1, 2, 3, 4, 5]  # 5: ls's own directory
    assert os.read(first_read, 100) == b"one\n"
    assert os.read(second_read, 100) == b"two\n"


async def test_a_launch_message_larger_than_a_socket_buffer_arrives_whole(launcher: ParkedLauncher) -> None:
    pieces = ["x" * (64 << 10)] * 12  # 768 KiB; one argument may hold at most 128 KiB
    child = await launcher.exec(["sh", "-c", 'printf %s "$@" | wc -c', "sh", *pieces], PATH_ONLY, [])
    assert await child.wait() == 0, await child.stderr.read()
    assert (await child.stdout.read()).decode().strip() == str(12 * (64 << 10))


async def test_a_nul_in_the_command_is_refused_and_the_launcher_stays_usable(
    launcher: ParkedLauncher,
) -> None:
    with pytest.raises(ValueError, match="null byte"):
        await launcher.exec(["echo", "a\0b"], PATH_ONLY, [])
    child = await launcher.exec(["echo", "ok"], PATH_ONLY, [])
    assert (await child.stdout.read()).decode() == "ok\n"


async def test_a_launcher_that_died_while_parked_reports_itself_gone(launcher: ParkedLauncher) -> None:
    os.kill(launcher.child.pid, signal.SIGKILL)
    await launcher.child.wait()
    with pytest.raises(LauncherGone):
        await launcher.exec(["echo", "never"], PATH_ONLY, [])


async def test_a_launcher_whose_server_lets_go_of_it_exits(root: str) -> None:
    parked = await park(root, "_parked-orphan", LIMITS)
    parked._sock.close()  # what the server's exit does to its end
    assert await asyncio.wait_for(parked.child.wait(), 5) == 0
    await parked.discard()
    assert not parked.cgroup.dirs["memory"].exists()


async def test_the_pool_parks_on_first_take_skips_dead_launchers_and_closes_clean(root: str) -> None:
    pool = LauncherPool(root, LIMITS, 2)
    assert pool.take() is None  # nothing parked yet: that run starts bwrap directly
    await _until(lambda: len(pool._parked) == 2)
    dead = pool._parked[0]
    os.kill(dead.child.pid, signal.SIGKILL)
    await dead.child.wait()
    taken = pool.take()
    assert taken is not None
    assert taken is not dead
    assert taken.child.running
    await taken.discard()
    await _until(lambda: len(pool._parked) == 2)  # refilled
    await pool.close()
    assert glob.glob(f"/sys/fs/cgroup/*/{root}") == []
    assert pool.take() is None
    await asyncio.sleep(0.2)
    assert not pool._parked  # closed: no refill


async def test_bwrap_runs_from_parked_launchers_in_their_job_cgroup_at_normal_priority(
    backend: tuple[BwrapSandbox, str],
) -> None:
    sandbox, root = backend
    outputs = []
    for attempt in (1, 2, 3):
        launchers = [parked.child.pid for parked in sandbox._launchers._parked]
        workdir = await sandbox.create_workspace(f"w{attempt}", RequestedLimits())
        spec = SandboxSpec(
            run_id=f"p.{attempt}", argv=["/bin/sh", "-c", "cut -d' ' -f19 /proc/self/stat; sleep 5"],
            env={}, workdir=workdir, limits=RequestedLimits(memory_bytes=96 << 20),
        )  # fmt: skip
        run = await sandbox.start(spec)
        bwrap_pid = run._child.pid
        assert _cgroup_of(bwrap_pid) == f"/{root}/p.{attempt}"
        assert _cgroup_of(run._sandbox_pid, "freezer") == f"/{root}/p.{attempt}"
        assert _value(run._cgroup.dirs["memory"] / "memory.limit_in_bytes") == str(96 << 20)
        lines = output_lines(run)
        outputs.append(((await anext(lines)).text, bwrap_pid in launchers))
        await run.kill()
        await sandbox.remove_workspace(workdir)
        await asyncio.sleep(0.3)  # room for the pool to refill
    assert outputs[0] == ("0", False)  # the first run found the pool empty
    assert outputs[1:] == [("0", True), ("0", True)]  # the others were launchers, niced no more


async def test_the_janitor_clears_launchers_an_earlier_server_left_parked(tmp_path: Path) -> None:
    root = f"outpost-{instance_marker(tmp_path / 'data')}"
    left = await park(root, "_parked-1-0", LIMITS)  # as a SIGKILLed server would leave it
    sandbox = _bwrap(tmp_path / "data")
    await sandbox.reap_leftovers()
    assert await asyncio.wait_for(left.child.wait(), 5) == -signal.SIGKILL
    assert glob.glob(f"/sys/fs/cgroup/*/{root}") == []
    await left.discard()


async def test_the_janitor_on_a_live_backend_kills_its_runs_and_spares_its_parked_launchers(
    backend: tuple[BwrapSandbox, str],
) -> None:
    sandbox, root = backend
    workdir = await sandbox.create_workspace("w", RequestedLimits())
    spec = SandboxSpec(
        run_id="r.1", argv=["/bin/sleep", "60"], env={}, workdir=workdir, limits=RequestedLimits()
    )
    run = await sandbox.start(spec)  # the pool starts filling
    await _until(lambda: len(sandbox._launchers._parked) == 2)
    parked = [launcher.child.pid for launcher in sandbox._launchers._parked]
    assert await sandbox.reap_leftovers() >= 1
    assert await asyncio.wait_for(run.wait(), 5) < 0
    assert glob.glob(f"/sys/fs/cgroup/memory/{root}/r.1") == []
    assert [launcher.child.pid for launcher in sandbox._launchers._parked] == parked
    assert all(launcher.child.running for launcher in sandbox._launchers._parked)
    await run.kill()
    workdir = await sandbox.create_workspace("w2", RequestedLimits())  # the janitor took the first
    again = await sandbox.start(replace(spec, run_id="r.2", argv=["/bin/true"], workdir=workdir))
    assert again._child.pid in parked  # a spared launcher still runs a job
    assert await again.wait() == 0
    await again.kill()
    await sandbox.remove_workspace(workdir)


def _bwrap(data_dir: Path) -> BwrapSandbox:
    first = 400_000 + random.randrange(1000) * 64
    return BwrapSandbox(data_dir, 4096, uid_first=first, uid_count=64, limits=LIMITS, parked_launchers=2)


async def _until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not done():  # noqa: ASYNC110 - the pool fills on its own; there is no event to wait on
            await asyncio.sleep(0.02)


async def test_a_pool_that_cannot_park_warns_once_and_counts_the_failures_that_follow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = LauncherPool("not/a-cgroup-name", LIMITS, 2)  # every park fails at the cgroup's name
    with caplog.at_level(logging.WARNING, logger="outpost.sandbox.launchers"):
        for _ in range(5):
            assert pool.take() is None
            await _until(lambda: pool._filling is not None and pool._filling.done())
        pool._warned_at -= 3600  # an hour later
        pool.take()
        await _until(lambda: pool._filling is not None and pool._filling.done())
    await pool.close()
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2, warnings
    assert "not a valid cgroup name" in warnings[0]
    assert "more since" not in warnings[0]
    assert warnings[1].endswith("(4 more since the last warning)")


async def test_a_pool_of_zero_never_parks(root: str) -> None:
    pool = LauncherPool(root, LIMITS, 0)
    assert pool.take() is None
    await asyncio.sleep(0.3)
    assert pool.take() is None
    assert glob.glob(f"/sys/fs/cgroup/*/{root}") == []
    await pool.close()


async def test_a_run_whose_launcher_is_gone_at_launch_starts_bwrap_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = _bwrap(tmp_path / "data")
    root = f"outpost-{instance_marker(tmp_path / 'data')}"
    gone: list[int] = []

    async def dies_before_it_reads(self: ParkedLauncher, *args: object) -> None:
        os.kill(self.child.pid, signal.SIGKILL)  # it died after the take, before the message reached it
        await self.child.wait()
        gone.append(self.child.pid)
        raise LauncherGone("the parked launcher is gone: broken pipe")

    try:
        sandbox._launchers.take()
        await _until(lambda: len(sandbox._launchers._parked) == 2)
        monkeypatch.setattr(ParkedLauncher, "exec", dies_before_it_reads)
        workdir = await sandbox.create_workspace("w", RequestedLimits())
        run = await sandbox.start(
            SandboxSpec(run_id="g.1", argv=["/bin/echo", "hi"], env={}, workdir=workdir)
        )
        assert len(gone) == 1
        assert run._child.pid != gone[0]
        assert _cgroup_of(run._sandbox_pid) == f"/{root}/g.1"
        assert [line.text async for line in output_lines(run)] == ["hi"]
        assert await run.wait() == 0
        await run.kill()
        await sandbox.remove_workspace(workdir)
        assert glob.glob(f"/sys/fs/cgroup/*/{root}/g.1") == []
    finally:
        await sandbox.close()
    assert glob.glob(f"/sys/fs/cgroup/*/{root}") == []


async def test_closing_while_the_pool_fills_leaves_no_launcher_or_cgroup(root: str) -> None:
    before = set(_launcher_pids())
    for delay_ms in range(40, 140, 4):  # wherever the refill is: starting, waiting, moving
        pool = LauncherPool(root, LIMITS, 2)
        pool.take()
        await asyncio.sleep(delay_ms / 1000)
        await pool.close()
        assert glob.glob(f"/sys/fs/cgroup/*/{root}") == [], f"closed after {delay_ms} ms"
        assert set(_launcher_pids()) <= before, f"closed after {delay_ms} ms"


async def test_a_park_cancelled_while_its_move_runs_removes_the_cgroup_the_move_made(
    root: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The move runs in a thread, which goes on to its end when the task waiting for it is cancelled.
    moved = threading.Event()
    create_holding = JobCgroup.create_holding

    def slow_to_return(*args: Any) -> JobCgroup:
        cgroup = create_holding(*args)
        moved.set()
        time.sleep(0.3)
        return cgroup

    monkeypatch.setattr(JobCgroup, "create_holding", slow_to_return)
    parking = asyncio.create_task(park(root, "_parked-cancelled", LIMITS))
    await asyncio.to_thread(moved.wait, 10)
    parking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await parking
    assert glob.glob(f"/sys/fs/cgroup/*/{root}/_parked-cancelled") == []


def _launcher_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if b"parked_exec.py" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found
