"""Per-job cgroups on the real kernel: memory, pids and CPU limits hold, kill leaves nothing, the janitor
clears what a crashed server left, and jobs under different roots do not touch each other."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from outpost.errors import SandboxError
from outpost.sandbox.cgroups import CONTROLLERS, JobCgroup, Limits, parse_mountinfo, problems, reap_stale
from tests.requirements import require

LOOSE = Limits(memory_bytes=256 << 20, pids_max=64, cpu_cores=1.0)


@pytest.fixture(scope="module", autouse=True)
def _cgroups_available() -> None:
    found = problems()
    require(f"cgroup v1 is not usable here: {found}" if found else None)


@dataclass
class Jobs:
    """Makes job cgroups under one test's own root names, and parked processes inside them."""

    roots: set[str] = field(default_factory=set)
    made: list[JobCgroup] = field(default_factory=list)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def new_root(self) -> str:
        root = f"outpost-test-{uuid.uuid4().hex[:12]}"
        self.roots.add(root)
        return root

    def cgroup(self, limits: Limits = LOOSE, root: str | None = None, job: str = "job") -> JobCgroup:
        made = JobCgroup.create(root or self.new_root(), job, limits)
        self.made.append(made)
        return made

    def park(self, cgroup: JobCgroup, script: str) -> Callable[[], subprocess.Popen[bytes]]:
        """Start `bash -c script` in the cgroup, held on a pipe until the returned release() is called,
        so no fork escapes before the process is in the cgroup."""
        proc = subprocess.Popen(
            ["bash", "-c", f"read -r _; {script}"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.spawned.append(proc)
        cgroup.add(proc.pid)
        assert proc.stdin is not None
        stdin = proc.stdin

        def release() -> subprocess.Popen[bytes]:
            stdin.write(b"go\n")
            stdin.close()
            return proc

        return release

    def run(self, cgroup: JobCgroup, script: str) -> subprocess.Popen[bytes]:
        return self.park(cgroup, script)()

    def clean_up(self) -> None:
        """Kill and remove everything, even after a failed test; then raise the first cleanup error."""
        errors: list[Exception] = []
        for made in self.made:
            with _collected(errors):
                made.kill()
        for proc in self.spawned:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait(timeout=5)
        for made in self.made:
            with _collected(errors):
                made.remove()
        for root in self.roots:
            for mount in _mounts():
                with _collected(errors), contextlib.suppress(FileNotFoundError):
                    (mount / root).rmdir()
        if errors:
            raise errors[0]


@contextlib.contextmanager
def _collected(errors: list[Exception]) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # kept, and raised once every other cleanup step has run
        errors.append(exc)


@pytest.fixture
def jobs() -> Iterator[Jobs]:
    made = Jobs()
    try:
        yield made
    finally:
        made.clean_up()


def _mounts() -> set[Path]:
    return set(parse_mountinfo(Path("/proc/self/mountinfo").read_text()).values())


def _exists_anywhere(cgroup: JobCgroup) -> bool:
    return any(path.exists() for path in cgroup.dirs.values())


def _wait_until(done: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _python(code: str) -> str:
    """A shell command that replaces the shell with Python running `code`."""
    return f"exec {shlex.quote(sys.executable)} -c {shlex.quote(code)}"


def _in_proc(pid: int) -> bool:
    """Whether the pid is still in /proc, running or as a zombie nobody reaped."""
    return Path(f"/proc/{pid}").exists()


def test_the_job_cgroup_exists_in_every_controller_with_its_limits(jobs: Jobs) -> None:
    cgroup = jobs.cgroup(Limits(memory_bytes=64 << 20, pids_max=32, cpu_cores=0.5))
    assert set(cgroup.dirs) == set(CONTROLLERS)
    assert (cgroup.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (cgroup.dirs["pids"] / "pids.max").read_text().strip() == "32"
    assert (cgroup.dirs["cpu"] / "cpu.cfs_quota_us").read_text().strip() == "50000"
    assert cgroup.is_empty()


def test_a_memory_hog_is_oom_killed_and_reported(jobs: Jobs) -> None:
    cgroup = jobs.cgroup(Limits(memory_bytes=64 << 20, pids_max=32, cpu_cores=1.0))
    hog = jobs.run(cgroup, _python("data = b'x' * (300 << 20)  # touches every page"))
    assert hog.wait(timeout=10) == -9
    usage = cgroup.usage()
    assert usage.oom_kills >= 1
    assert 32 << 20 < usage.memory_peak_bytes <= 64 << 20


# Stands in for the outer bwrap: a subreaper that starts the bomb and reaps every orphan it leaves.
REAPER = """
import ctypes, os, subprocess
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: orphans come to us, not to the host's init
subprocess.Popen(["bash", "-c", ":(){ :|:& };:"], stderr=subprocess.DEVNULL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
"""


def test_a_fork_bomb_stays_under_pids_max_and_kill_leaves_nothing(jobs: Jobs) -> None:
    cgroup = jobs.cgroup(Limits(memory_bytes=256 << 20, pids_max=32, cpu_cores=1.0))
    release = jobs.park(cgroup, _python(REAPER))
    # Only release the bomb once the limit is known to hold: without it, it would take the host down.
    assert (cgroup.dirs["pids"] / "pids.max").read_text().strip() == "32"
    reaper = release()
    peak = 0
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        peak = max(peak, int((cgroup.dirs["pids"] / "pids.current").read_text()))
    assert 16 < peak <= 32
    assert cgroup.usage().pids_limit_hits >= 1
    members = cgroup.pids() - {reaper.pid}

    started = time.monotonic()
    assert cgroup.kill(except_pids={reaper.pid})
    assert time.monotonic() - started < 1.0
    assert reaper.wait(timeout=1) == 0
    assert cgroup.is_empty()
    assert not [pid for pid in members if _in_proc(pid)], "processes or zombies left"


def test_a_cpu_quota_throttles_a_busy_loop(jobs: Jobs) -> None:
    cgroup = jobs.cgroup(Limits(memory_bytes=64 << 20, pids_max=8, cpu_cores=0.2))
    jobs.run(cgroup, "while :; do :; done")
    started = time.monotonic()
    time.sleep(1.0)
    ratio = cgroup.usage().cpu_seconds / (time.monotonic() - started)
    assert 0.05 < ratio < 0.5


def test_kill_spares_the_pids_it_is_told_to(jobs: Jobs) -> None:
    cgroup = jobs.cgroup()
    spared = jobs.run(cgroup, "exec sleep 60")
    victim = jobs.run(cgroup, "exec sleep 60")
    assert _wait_until(lambda: len(cgroup.pids()) == 2, 1.0)
    assert cgroup.kill(except_pids={spared.pid})
    assert victim.wait(timeout=1) == -9
    assert spared.poll() is None
    assert cgroup.pids() == {spared.pid}


def test_remove_after_kill_leaves_no_directory(jobs: Jobs) -> None:
    cgroup = jobs.cgroup()
    sleeper = jobs.run(cgroup, "sleep 60 & sleep 60")
    assert cgroup.kill()
    sleeper.wait(timeout=1)
    cgroup.remove()
    assert not _exists_anywhere(cgroup)
    cgroup.remove()  # already gone: still fine


def test_the_janitor_kills_and_removes_stale_job_cgroups_but_keeps_live_ones(jobs: Jobs) -> None:
    root = jobs.new_root()
    stale = jobs.cgroup(root=root, job="stale")
    live = jobs.cgroup(root=root, job="live")
    orphan = jobs.run(stale, "exec sleep 60")
    survivor = jobs.run(live, "exec sleep 60")
    assert reap_stale(root, keep={"live"}) == 1
    assert orphan.wait(timeout=1) == -9
    assert not _exists_anywhere(stale)
    assert survivor.poll() is None
    assert _exists_anywhere(live)


def test_jobs_under_different_roots_do_not_interfere(jobs: Jobs) -> None:
    first_root, second_root = jobs.new_root(), jobs.new_root()
    first, second = jobs.cgroup(root=first_root, job="same"), jobs.cgroup(root=second_root, job="same")
    first_proc = jobs.run(first, "exec sleep 60")
    second_proc = jobs.run(second, "exec sleep 60")
    assert first.pids() == {first_proc.pid}
    assert second.pids() == {second_proc.pid}
    assert first.kill()
    assert first_proc.wait(timeout=1) == -9
    assert reap_stale(first_root) == 1
    assert second_proc.poll() is None
    assert second.pids() == {second_proc.pid}


def test_a_job_name_that_is_not_a_plain_name_is_refused(jobs: Jobs) -> None:
    root = jobs.new_root()
    for bad in ("../escape", "a/b", "..", ".hidden", ""):
        with pytest.raises(SandboxError, match="not a valid cgroup name"):
            JobCgroup.create(root, bad, LOOSE)


def test_creating_an_existing_job_cgroup_fails_and_leaves_the_first_intact(jobs: Jobs) -> None:
    root = jobs.new_root()
    first = jobs.cgroup(root=root, job="twice")
    with pytest.raises(SandboxError, match="cannot create the cgroup of job twice"):
        JobCgroup.create(root, "twice", LOOSE)
    assert all(path.is_dir() for path in first.dirs.values())


def test_adding_a_process_that_is_gone_fails(jobs: Jobs) -> None:
    cgroup = jobs.cgroup()
    gone = subprocess.Popen(["true"])
    gone.wait()
    with pytest.raises(SandboxError, match=f"cannot move pid {gone.pid}"):
        cgroup.add(gone.pid)


def test_the_janitor_clears_a_job_cgroup_that_a_crash_left_half_made(jobs: Jobs) -> None:
    root = jobs.new_root()
    mounts = parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    half = [mounts["memory"] / root / "half", mounts["pids"] / root / "half"]
    for path in half:
        path.mkdir(parents=True)
    assert reap_stale(root) == 1
    assert not any(path.exists() for path in half)
