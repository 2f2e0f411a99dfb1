"""The contract every sandbox backend keeps (the backends: sandbox_backends.py)."""

from __future__ import annotations

import asyncio
import glob
import random
import time
from pathlib import Path
from typing import Any

import pytest

from outpost.errors import SandboxError
from outpost.sandbox import mounts
from outpost.sandbox.base import (
    RequestedLimits,
    Sandbox,
    SandboxSpec,
    output_lines,
)
from outpost.sandbox.bwrap import BwrapSandbox
from outpost.sandbox.bwrap_fs import DEFAULT_RUN_DIR, DiskLimits
from outpost.sandbox.process import ProcessSandbox, instance_marker
from outpost.sandbox.procfs import pids_with_marker
from tests.contract.sandbox_backends import LIMITS, MAX_LINE, UID_RANGE, collect, make_bwrap, start_script
from tests.procs import pids_running


async def test_output_of_both_streams_arrives_in_order_per_stream(sandbox: Sandbox, workdir: Path) -> None:
    run = await start_script(sandbox, workdir, "for i in 1 2 3; do echo out$i; echo err$i >&2; done")
    lines = await collect(run)
    assert await run.wait() == 0
    assert [line.text for line in lines if line.stream == "stdout"] == ["out1", "out2", "out3"]
    assert [line.text for line in lines if line.stream == "stderr"] == ["err1", "err2", "err3"]
    await run.kill()


async def test_exit_code_is_reported(sandbox: Sandbox, workdir: Path) -> None:
    run = await start_script(sandbox, workdir, "exit 7")
    await collect(run)
    assert await run.wait() == 7
    await run.kill()


async def test_command_runs_in_the_workdir_with_only_the_given_environment(
    sandbox: Sandbox, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTPOST_PROVIDERS__ANTHROPIC__API_KEY", "must-not-leak")
    run = await start_script(sandbox, workdir, "echo made-here > marker; env", GREETING="hi")
    output = [line.text for line in await collect(run)]
    assert (workdir / "marker").read_text() == "made-here\n"
    assert "GREETING=hi" in output
    assert not any("must-not-leak" in line for line in output)
    await run.kill()


async def test_stdin_is_empty(sandbox: Sandbox, workdir: Path) -> None:
    run = await start_script(sandbox, workdir, "cat; echo after-stdin")
    assert [line.text for line in await collect(run)] == ["after-stdin"]
    await run.kill()


async def test_long_lines_are_split_and_bad_bytes_replaced(sandbox: Sandbox, workdir: Path) -> None:
    script = f"head -c {MAX_LINE * 3} /dev/zero | tr '\\0' a; echo; printf 'x\\0y\\377z\\n'"
    run = await start_script(sandbox, workdir, script)
    lines = [line.text for line in await collect(run)]
    assert lines[:3] == ["a" * MAX_LINE] * 3
    assert lines[-1] == "x\ufffdy\ufffdz"
    await run.kill()


async def test_a_missing_program_raises_sandbox_error(sandbox: Sandbox, workdir: Path) -> None:
    spec = SandboxSpec(run_id="d.1", argv=["/nonexistent/program"], env={}, workdir=workdir)
    with pytest.raises(SandboxError, match="nonexistent"):
        await sandbox.start(spec)


# SLEEP becomes a duration unique to the test: it finds the run's processes in /proc, whatever the backend.
ESCAPES = {
    "setsid": "setsid sh -c 'sleep SLEEP' & sleep SLEEP",
    "double fork": "(sh -c 'sleep SLEEP &' &) ; sleep SLEEP",
    "nohup": "nohup sleep SLEEP >/dev/null 2>&1 & sleep SLEEP",
    "trapped signals": "trap '' TERM INT HUP; sh -c \"trap '' TERM INT HUP; sleep SLEEP\" & sleep SLEEP",
}


@pytest.mark.parametrize("script", ESCAPES.values(), ids=ESCAPES.keys())
async def test_kill_reaches_every_process_of_the_run(sandbox: Sandbox, workdir: Path, script: str) -> None:
    duration = f"{random.randrange(100_000, 999_999)}.5"
    run = await start_script(sandbox, workdir, script.replace("SLEEP", duration))
    await asyncio.sleep(0.3)
    assert len(pids_running(duration)) >= 2
    await run.kill()
    assert pids_running(duration) == []
    assert await run.wait() < 0


async def test_kill_is_idempotent_and_safe_after_exit(sandbox: Sandbox, workdir: Path) -> None:
    run = await start_script(sandbox, workdir, "true")
    await collect(run)
    assert await run.wait() == 0
    await run.kill()
    await run.kill()


async def test_process_reap_leftovers_kills_runs_of_its_data_dir_only(tmp_path: Path, host_dir: Path) -> None:
    ours, theirs = ProcessSandbox(tmp_path / "ours", MAX_LINE), ProcessSandbox(tmp_path / "theirs", MAX_LINE)
    our_run = await start_script(ours, host_dir, "sleep 60", run_id="a.1")
    their_run = await start_script(theirs, host_dir, "sleep 60", run_id="b.1")
    await asyncio.sleep(0.1)
    assert await ours.reap_leftovers() >= 1
    assert await our_run.wait() < 0
    assert pids_with_marker(f"{instance_marker(tmp_path / 'theirs')}:b.1")
    await their_run.kill()
    await our_run.kill()


async def test_bwrap_reap_leftovers_kills_the_processes_of_its_uids(tmp_path: Path, host_dir: Path) -> None:
    sandbox = make_bwrap(tmp_path / "data")
    run = await start_script(sandbox, host_dir, "sleep 60")
    await asyncio.sleep(0.1)
    assert await sandbox.reap_leftovers() >= 1
    assert await run.wait() < 0
    await run.kill()


def test_each_backend_says_whether_it_isolates(tmp_path: Path) -> None:
    assert ProcessSandbox(tmp_path, MAX_LINE).isolated is False
    assert make_bwrap(tmp_path).isolated is True


async def test_a_bwrap_run_sees_neither_host_files_nor_a_network(tmp_path: Path, host_dir: Path) -> None:
    sandbox = make_bwrap(tmp_path / "data")
    script = (
        "id -u; cat /etc/shadow; ls /root; touch /usr/planted; "
        "(echo > /dev/tcp/1.1.1.1/80) 2>&1; ls /sys/fs/cgroup 2>&1; echo done"
    )
    spec = SandboxSpec(run_id="iso.1", argv=["/bin/bash", "-c", script], env={}, workdir=host_dir)
    run = await sandbox.start(spec)
    lines = [line.text for line in await collect(run)]
    await run.kill()
    text = "\n".join(lines)
    assert int(lines[0]) >= 300_000  # its own unprivileged uid, not root
    assert "root:" not in text  # neither /etc/shadow nor /root's listing
    assert "Read-only file system" in text
    assert "Network is unreachable" in text
    assert "cpu" not in text.split("done")[0].splitlines()[-1]  # no host cgroupfs
    assert lines[-1] == "done"


def test_bwrap_names_a_run_dir_its_uids_cannot_reach(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    problems = _bwrap_unchecked(tmp_path / "data", run_dir=private / "run").problems()
    reported = [problem for problem in problems if "cannot reach the run dir" in problem]
    assert len(reported) == 1
    assert "is not searchable by others" in reported[0]


def _bwrap_unchecked(data_dir: Path, **options: Any) -> BwrapSandbox:
    first = 300_000 + random.randrange(1000) * UID_RANGE
    return BwrapSandbox(data_dir, MAX_LINE, uid_first=first, uid_count=8, limits=LIMITS, **options)


async def test_a_workspace_holds_what_the_host_put_there_and_the_run_wrote(sandbox: Sandbox) -> None:
    workdir = await sandbox.create_workspace("w", RequestedLimits())
    assert list(workdir.iterdir()) == []
    (workdir / "seed.txt").write_text("from the host\n")  # as a git checkout would be
    (workdir / "src").mkdir()
    run = await start_script(sandbox, workdir, "echo from the run >> seed.txt && echo new > src/made.txt")
    await collect(run)
    await run.kill()
    assert (workdir / "seed.txt").read_text() == "from the host\nfrom the run\n"
    assert (workdir / "src" / "made.txt").read_text() == "new\n"
    again = await sandbox.create_workspace("w", RequestedLimits())  # a second attempt starts afresh
    assert again == workdir
    assert list(again.iterdir()) == []
    await sandbox.remove_workspace(workdir)
    assert not workdir.exists()


async def test_a_bwrap_run_that_fills_its_workspace_reports_disk_full(tmp_path: Path) -> None:
    sandbox = make_bwrap(tmp_path / "data")
    workdir = await sandbox.create_workspace("w", RequestedLimits(disk_bytes=4 << 20))
    try:
        run = await start_script(sandbox, workdir, "head -c 5000000 /dev/zero > f")
        await collect(run)
        assert (await run.wait(), await run.limit_exceeded()) == (1, "disk_full")
        await run.kill()
        assert (workdir / "f").stat().st_size == 4 << 20
    finally:
        await sandbox.remove_workspace(workdir)
    assert mounts.mounts_under(tmp_path) == []


async def test_a_bwrap_run_that_fails_with_room_left_reports_no_limit(tmp_path: Path) -> None:
    sandbox = make_bwrap(tmp_path / "data", disk=DiskLimits(size_bytes=4 << 20, inodes=100))
    workdir = await sandbox.create_workspace("w", RequestedLimits())
    try:
        run = await start_script(sandbox, workdir, "head -c 1000000 /dev/zero > f; exit 3")
        await collect(run)
        assert (await run.wait(), await run.limit_exceeded()) == (3, None)
        await run.kill()
    finally:
        await sandbox.remove_workspace(workdir)


async def test_a_private_data_dir_works_for_bwrap(tmp_path: Path) -> None:
    # pytest's temp dirs are private to root: runs are staged under the run dir, so the sandbox's uid
    # never walks the data dir's path.
    sandbox = make_bwrap(tmp_path / "private" / "data")
    workdir = await sandbox.create_workspace("w", RequestedLimits())
    try:
        run = await start_script(sandbox, workdir, "echo hi > f && cat f && ls -ld /workspace | cut -c1-10")
        assert [line.text for line in await collect(run)] == ["hi", "drwx------"]
        await run.kill()
    finally:
        await sandbox.remove_workspace(workdir)


async def test_a_bwrap_run_leaves_no_cgroup_staged_file_or_mount_behind(tmp_path: Path) -> None:
    sandbox = make_bwrap(tmp_path / "data")
    marker = instance_marker(tmp_path / "data")
    for run_id in ("d.1", "d.2"):  # started directly, then (most likely) from a parked launcher
        workdir = await sandbox.create_workspace("w", RequestedLimits())
        run = await start_script(sandbox, workdir, "echo hi > f; sleep 0.1 &", run_id=run_id)
        await collect(run)
        await run.kill()
        await sandbox.remove_workspace(workdir)
        assert glob.glob(f"/sys/fs/cgroup/*/outpost-{marker}/d.*") == []
        await asyncio.sleep(0.3)  # the launchers parked meanwhile stay until the backend closes
    assert not (DEFAULT_RUN_DIR / marker).exists()
    assert mounts.mounts_under(tmp_path) == []
    await sandbox.close()
    assert glob.glob(f"/sys/fs/cgroup/*/outpost-{marker}") == []


BURN_CPU = "( i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done )"
HOLD_MEMORY = "import time; held = b'x' * (64 << 20); time.sleep(1.5)"


async def test_a_run_reports_the_cpu_time_of_its_processes(sandbox: Sandbox, workdir: Path) -> None:
    started = time.monotonic()
    run = await start_script(sandbox, workdir, BURN_CPU)  # in a subshell: a child's time counts too
    await collect(run)
    wall_usec = (time.monotonic() - started) * 1e6
    await run.kill()
    used = await run.compute_usage()
    assert 50_000 < used.cpu_usec < wall_usec * 1.2, (used, wall_usec)
    assert await run.compute_usage() == used  # measured once, at the kill


async def test_a_live_run_reports_what_it_used_so_far(sandbox: Sandbox, workdir: Path) -> None:
    # One busy child in the background, one in the foreground, then the run idles until it is killed.
    run = await start_script(sandbox, workdir, f"{BURN_CPU} & {BURN_CPU}; wait; echo burnt; exec sleep 30")
    lines = output_lines(run)
    assert (await anext(lines)).text == "burnt"
    so_far = await run.compute_usage()
    assert so_far.cpu_usec > 100_000, so_far  # both children, though the run goes on
    await asyncio.sleep(1.2)  # the memory sampler takes one every second
    later = await run.compute_usage()
    assert so_far.cpu_usec <= later.cpu_usec < so_far.cpu_usec + 100_000, (so_far, later)
    assert 0 < so_far.memory_byte_s < later.memory_byte_s, (so_far, later)
    await run.kill()
    assert [line async for line in lines] == []
    final = await run.compute_usage()
    # The final measurement covers what the samples saw (rusage's precision differs from /proc's ticks).
    assert final.cpu_usec >= later.cpu_usec * 0.9, (later, final)
    assert final.memory_byte_s >= later.memory_byte_s, (later, final)


async def test_a_run_reports_the_memory_it_held_over_time(sandbox: Sandbox, workdir: Path) -> None:
    run = await start_script(sandbox, workdir, f'exec python3 -c "{HOLD_MEMORY}"')
    await collect(run)
    await run.kill()
    used = await run.compute_usage()
    held = 64 * 2**20
    assert used.memory_peak_bytes >= held, used
    # Held for 1.5 s, sampled at least every second: at least one second's worth is seen.
    assert held * 1.0 <= used.memory_byte_s <= used.memory_peak_bytes * 3, used
