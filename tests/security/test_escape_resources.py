"""Escape cases 18-23 of section 4 of the sandbox reference: memory, processes, disk, CPU, surviving the
kill and a launcher crash, against the real BwrapSandbox with small limits (128 MiB, 64 pids, 0.5 CPU)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outpost.sandbox import mounts
from outpost.sandbox.base import output_lines
from outpost.sandbox.bwrap_fs import DEFAULT_RUN_DIR, SCRATCH_BYTES, SCRATCH_INODES, DiskLimits
from outpost.sandbox.cgroups import Limits
from outpost.sandbox.naming import instance_marker
from tests.procs import alive
from tests.security.escape_support import LIMITS, UID_COUNT, Jail, jail_in_temp_dir


@pytest.fixture
async def jail() -> AsyncIterator[Jail]:
    async with jail_in_temp_dir() as jail:
        yield jail


async def _workload_running(jail: Jail, command: bytes, seconds: float) -> bool:
    """Whether a process of the jail runs `command` (its argv[0]) within `seconds`. Only then has bwrap
    finished its set-up, including the parent-death signal it arms after its last credential change."""
    for _ in range(int(seconds / 0.05)):
        if command in map(_argv0, jail.leftover_pids()):
            return True
        await asyncio.sleep(0.05)
    return False


def _argv0(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().split(b"\0")[0]
    except OSError:
        return b""


async def _gone_within(jail: Jail, seconds: float) -> list[int]:
    """The jail's processes still alive after `seconds`. Zombies count as gone: once their parent died
    they belong to the host's init, which reaps them on its own schedule."""
    for _ in range(int(seconds / 0.05)):
        if not (left := alive(jail.leftover_pids())):
            return left
        await asyncio.sleep(0.05)
    return alive(jail.leftover_pids())


def _zombie_children() -> list[str]:
    """Zombies whose parent is this test process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(stat.parent.name)
    return found


async def test_case_18_a_memory_hog_is_oom_killed_and_reported(jail: Jail) -> None:
    outcome = await jail.run("x = b'\\1' * (512 << 20); print('allocated')", python=True)
    assert (outcome.code, outcome.limit, outcome.stdout) == (-9, "oom", [])


async def test_case_18_filling_tmp_and_dev_shm_ends_in_enospc_or_the_oom_killer(jail: Jail) -> None:
    # tmpfs pages are charged to the job's memcg: with 128 MiB of memory, the scratch tmpfs behind /tmp
    # and /dev/shm (512 MiB) cannot reach its size, so the writer is OOM-killed first.
    for path in ("/dev/shm/f", "/tmp/f"):
        outcome = await jail.run(f"dd if=/dev/zero of={path} bs=1M count=300")
        assert (outcome.code, outcome.limit) == (-9, "oom"), outcome


async def test_case_19_a_fork_bomb_hits_pids_max_and_leaves_nothing_after_kill(jail: Jail) -> None:
    run = await jail.start(["/bin/bash", "-c", ":(){ :|:& };:; sleep 30"])
    try:
        await asyncio.sleep(1.0)
        limit = await run.limit_exceeded()
    finally:
        await run.kill()
    assert limit == "pids"
    assert jail.leftover_pids() == []


async def test_case_20_filling_tmp_ends_in_enospc_at_its_size() -> None:
    # A memory limit above the scratch size (tmpfs pages count against it), so the size is what stops the
    # writer; the run is then reported as having filled its disk.
    scratch_mb = SCRATCH_BYTES >> 20
    async with jail_in_temp_dir(Limits(scratch_mb + 256 << 20, LIMITS.pids_max, LIMITS.cpu_cores)) as jail:
        outcome = await jail.run(f"dd if=/dev/zero of=/tmp/f bs=1M count={scratch_mb + 50}; du -m /tmp/f")
    assert outcome.stdout == [f"{scratch_mb}\t/tmp/f"]
    assert "No space left on device" in outcome.stderr[0]
    assert outcome.limit == "disk_full"


async def test_case_20_filling_the_workspace_ends_in_enospc_at_its_size(jail: Jail) -> None:
    workdir = await jail.workspace(disk_bytes=16 << 20)
    outcome = await jail.run("dd if=/dev/zero of=f bs=1M count=40 || exit 1", workdir=workdir)
    assert (outcome.code, outcome.limit) == (1, "disk_full"), outcome
    assert "No space left on device" in outcome.stderr[0]
    assert (workdir / "f").stat().st_size == 16 << 20


CREATE_FILES = """
import errno, os, sys
for i in range(int(sys.argv[2])):
    try:
        os.close(os.open(f"{sys.argv[1]}/{i}", os.O_CREAT | os.O_WRONLY))
    except OSError as exc:
        print(errno.errorcode[exc.errno], i)
        sys.exit(1)
print("no failure")
"""


async def test_case_20_creating_files_in_tmp_ends_in_enospc_at_its_inode_limit() -> None:
    async with jail_in_temp_dir(Limits(512 << 20, LIMITS.pids_max, 2.0)) as jail:
        outcome = await jail.run(CREATE_FILES, python=True, args=("/tmp", str(SCRATCH_INODES + 10)))
    error, count = outcome.stdout[0].split()
    # The scratch root and its three directories hold inodes too.
    assert (error, int(count), outcome.limit) == ("ENOSPC", SCRATCH_INODES - 4, "disk_full"), outcome


async def test_case_20_creating_files_in_the_workspace_ends_in_enospc_at_its_inode_limit() -> None:
    async with jail_in_temp_dir(disk=DiskLimits(size_bytes=64 << 20, inodes=2000)) as jail:
        outcome = await jail.run(CREATE_FILES, python=True, args=("/workspace", "3000"))
    assert outcome.stdout == ["ENOSPC 1999"], outcome  # the workspace's root is the 2000th
    assert outcome.limit == "disk_full"


async def test_case_21_busy_threads_are_throttled_to_the_cpu_quota(jail: Jail) -> None:
    run = await jail.start(["/bin/bash", "-c", "for i in 1 2 3 4; do while :; do :; done & done; wait"])
    try:
        await asyncio.sleep(0.2)
        before = run._cgroup.usage().cpu_seconds
        await asyncio.sleep(1.0)
        used = run._cgroup.usage().cpu_seconds - before
        cpu_stat = (run._cgroup.dirs["cpu"] / "cpu.stat").read_text()
    finally:
        await run.kill()
    assert 0.2 < used <= 0.7, used
    throttled = int(dict(line.split() for line in cpu_stat.splitlines())["nr_throttled"])
    # On a host whose cores are busy with other work the job may not even reach its quota in a period,
    # and then nothing needs throttling; a job that reached it must have been throttled.
    assert throttled > 0 or used < 0.45, (used, cpu_stat)


async def test_case_22_setsid_double_forks_traps_and_nohup_do_not_survive_the_kill(jail: Jail) -> None:
    script = """
trap '' TERM HUP INT
setsid bash -c "trap '' TERM HUP; (sleep 300 &); exec sleep 300" &
nohup sleep 300 >/dev/null 2>&1 &
( (sleep 300 &) & )
disown -a
echo started
exec sleep 300
"""
    run = await jail.start(["/bin/bash", "-c", script])
    try:
        lines = output_lines(run)
        assert (await anext(lines)).text == "started"
        await asyncio.sleep(0.1)
        assert len(jail.leftover_pids()) >= 5
    finally:
        await run.kill()
    assert jail.leftover_pids() == []  # zombies included: they keep their uid
    assert _zombie_children() == []


LAUNCHER = """
import asyncio, json, sys
from pathlib import Path
from outpost.sandbox.base import RequestedLimits, SandboxSpec
from outpost.sandbox.bwrap import BwrapSandbox
from outpost.sandbox.cgroups import Limits

async def main():
    data_dir, uid_first, uid_count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sandbox = BwrapSandbox(Path(data_dir), 4096, uid_first, uid_count, Limits(128 << 20, 64, 0.5))
    workdir = await sandbox.create_workspace("crash", RequestedLimits())
    run = await sandbox.start(SandboxSpec("crash-1", ["/bin/sleep", "300"], {}, workdir))
    print(json.dumps([str(d) for d in run._cgroup.dirs.values()]), flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


async def test_case_23_a_crashed_launcher_takes_its_sandbox_along_and_the_janitor_clears_the_rest(
    jail: Jail,
) -> None:
    args = [str(jail.data_dir), str(jail.uid_first), str(UID_COUNT)]
    staged = DEFAULT_RUN_DIR / instance_marker(jail.data_dir)
    launcher = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LAUNCHER, *args, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert launcher.stdout is not None
        cgroup_dirs = [Path(d) for d in json.loads(await asyncio.wait_for(launcher.stdout.readline(), 10))]
        # Killed before bwrap arms --die-with-parent, the sandbox would outlive the launcher: a window of
        # milliseconds that a loaded machine widens. The janitor covers it; this case tests the signal.
        assert await _workload_running(jail, b"/bin/sleep", 10.0)
        launcher.send_signal(signal.SIGKILL)
        await launcher.wait()
        assert await _gone_within(jail, 2.0) == []  # bwrap's --die-with-parent
        assert all(d.exists() for d in cgroup_dirs)  # nobody removed them yet
        # Left mounted: the workspace's tmpfs, and the run's scratch tmpfs and workspace bind.
        assert len(mounts.mounts_under(jail.data_dir.resolve())) == 1
        assert len(mounts.mounts_under(staged)) == 2
        await jail.make_sandbox().reap_leftovers()
        assert [d for d in cgroup_dirs if d.exists()] == []
        assert mounts.mounts_under(jail.data_dir.resolve()) == mounts.mounts_under(staged) == []
        assert not staged.exists()
        assert not (jail.data_dir / "workspaces").exists()
    finally:
        if launcher.returncode is None:
            launcher.kill()
        await launcher.wait()
