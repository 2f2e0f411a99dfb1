"""Per-job cgroup v1 control: limits, usage, the freeze-kill-thaw kill, cleanup and the janitor.

A job's cgroup is `<mount>/<root_name>/<job>` in each of the memory, pids, cpu, cpuacct and freezer
hierarchies, where `<mount>` is the controller's mount point (usually `/sys/fs/cgroup/<controller>`).
Job cgroups hang off the mount point, not off this process's own cgroup:

* the path is the same after a restart, whatever cgroup the new server lands in, so the janitor finds
  what a crashed server left behind;
* with `memory.use_hierarchy=1`, a job nested under the server's memcg would share the server's limit,
  and an OOM at that level may pick the server itself as its victim;
* in a container with its own cgroup namespace, the mount point is the container's cgroup anyway.

The price: jobs are not bounded by the server's own limits, so the total is bounded by the number of
concurrent jobs times their limits. Co-mounted hierarchies (`cpu,cpuacct`) share one directory.

Every function blocks for at most a few milliseconds, or up to its `timeout_s`; async callers run them
in a thread. cgroup v2 is not supported yet; `problems()` says so on a v2-only host.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import SandboxError

_roots_lock = threading.Lock()
"""Serializes making a server's root cgroup (with a job's) and removing it once its last job is gone."""

CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
CPU_PERIOD_US = 100_000
_MIN_CPU_QUOTA_US = 1_000  # the kernel refuses smaller quotas
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_POLL_S = 0.002
_FREEZE_TIMEOUT_S = 0.5
_ROUND_S = 0.1  # how long killed processes get to leave before the next freeze-kill-thaw round
_RMDIR_WAITS_S = (0.002,) * 10 + (0.01,) * 10 + (0.05,) * 18  # ~1 s: exits can be slow on a busy host
_MOUNTINFO = Path("/proc/self/mountinfo")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one job may use. Raises ValueError on construction when a value is out of range."""

    memory_bytes: int
    pids_max: int
    cpu_cores: float

    def __post_init__(self) -> None:
        if self.memory_bytes <= 0 or self.pids_max <= 0:
            raise ValueError(f"memory and pids limits must be positive: {self}")
        if self.cpu_cores * CPU_PERIOD_US < _MIN_CPU_QUOTA_US:
            raise ValueError(f"cpu_cores must be at least {_MIN_CPU_QUOTA_US / CPU_PERIOD_US}: {self}")


@dataclass(frozen=True, slots=True)
class Usage:
    """What one job used: OOM kills and refused forks (counts), CPU time, and peak memory."""

    oom_kills: int
    pids_limit_hits: int
    cpu_seconds: float
    memory_peak_bytes: int


class JobCgroup:
    """One job's cgroups, one directory per controller. Build with `create()`; the janitor builds them
    from existing directories."""

    def __init__(self, dirs: Mapping[str, Path]) -> None:
        self.dirs = dict(dirs)
        """The job's directory in each controller's hierarchy (co-mounted controllers share one)."""

    @classmethod
    def create(cls, root_name: str, job: str, limits: Limits) -> JobCgroup:
        """Make the job's cgroups and write its limits.

        Raises SandboxError when a name is not a plain file name, a controller is not mounted, the job's
        cgroup already exists, or a directory or limit cannot be written; nothing is left behind then.
        """
        mounts = _required_mounts()
        dirs = {name: mounts[name] / _checked(root_name) / _checked(job) for name in CONTROLLERS}
        cgroup = cls(dirs)
        made: list[Path] = []
        try:
            for path in cgroup._unique_dirs():
                with _roots_lock:  # another job's remove() may be removing the empty root
                    path.parent.mkdir(exist_ok=True)
                    path.mkdir()
                made.append(path)
            cgroup._write_limits(limits)
        except OSError as exc:
            for path in reversed(made):
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise SandboxError(f"cannot create the cgroup of job {job}: {exc}") from exc
        return cgroup

    @classmethod
    def create_holding(cls, root_name: str, job: str, limits: Limits, pids: Collection[int]) -> JobCgroup:
        """`create()` the job's cgroups and move `pids` into them. Raises SandboxError; nothing is left
        behind then (what was moved in already is killed)."""
        cgroup = cls.create(root_name, job, limits)
        try:
            for pid in pids:
                cgroup.add(pid)
        except SandboxError:
            with contextlib.suppress(SandboxError):  # the error to report is the one above
                cgroup.kill()
                cgroup.remove()
            raise
        return cgroup

    def add(self, pid: int) -> None:
        """Move `pid` into the job's cgroup in every controller; its future children follow.

        Raises SandboxError when the process is gone or a cgroup.procs file cannot be written.
        """
        for path in self._unique_dirs():
            try:
                _write(path / "cgroup.procs", str(pid))
            except OSError as exc:
                raise SandboxError(f"cannot move pid {pid} into {path}: {exc}") from exc

    def renamed(self, job: str) -> JobCgroup:
        """The same cgroups, processes and counters under the name `job`: cgroup v1 renames a cgroup in
        place, which (unlike moving a process in) never waits for the kernel's RCU grace period.

        Raises SandboxError when `job` is not a plain name or already exists; nothing is renamed then.
        """
        _checked(job)
        done: list[Path] = []
        try:
            for path in self._unique_dirs():
                path.rename(path.with_name(job))
                done.append(path)
        except OSError as exc:
            for path in reversed(done):
                with contextlib.suppress(OSError):
                    path.with_name(job).rename(path)
            raise SandboxError(f"cannot rename the cgroup {self.dirs['memory']} to {job}: {exc}") from exc
        return JobCgroup({name: path.with_name(job) for name, path in self.dirs.items()})

    def set_limits(self, limits: Limits) -> None:
        """Write the job's limits anew. Raises SandboxError when one cannot be written."""
        try:
            self._write_limits(limits)
        except OSError as exc:
            raise SandboxError(f"cannot write the limits of {self.dirs['memory']}: {exc}") from exc

    def pids(self) -> set[int]:
        """Every process in the job's cgroups (thread group ids). A removed cgroup holds none."""
        found: set[int] = set()
        for path in self._unique_dirs():
            with contextlib.suppress(FileNotFoundError):
                found.update(int(line) for line in (path / "cgroup.procs").read_text().split())
        return found

    def is_empty(self) -> bool:
        """True when no process is left in any of the job's cgroups (or they are gone)."""
        return not self.pids()

    def kill(self, except_pids: Collection[int] = (), timeout_s: float = 2.0) -> bool:
        """SIGKILL every process in the job's cgroups except `except_pids`, without fork races.

        Each round freezes the cgroup (so nothing forks meanwhile), kills every listed pid and thaws it
        (frozen processes die once thawed). Rounds repeat until only `except_pids` are left; returns
        whether that happened within `timeout_s`. Zombies are not listed, but their parents must still
        reap them: the caller waits for its own children. A removed cgroup counts as empty.
        Raises SandboxError when the freezer cannot be written.
        """
        spared = set(except_pids)
        if self.pids() <= spared:
            return True  # the common end of a run: nothing left to stop, so no freeze round-trip
        deadline = time.monotonic() + timeout_s
        while True:
            self._kill_round(spared)
            if _poll(lambda: self.pids() <= spared, min(deadline, time.monotonic() + _ROUND_S)):
                return True
            if time.monotonic() >= deadline:
                return False

    def usage(self) -> Usage:
        """The job's counters; read them before `remove()`. Raises SandboxError when they are gone."""
        try:
            return Usage(
                oom_kills=_field(self.dirs["memory"] / "memory.oom_control", "oom_kill"),
                pids_limit_hits=_field(self.dirs["pids"] / "pids.events", "max"),
                cpu_seconds=int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9,
                memory_peak_bytes=int((self.dirs["memory"] / "memory.max_usage_in_bytes").read_text()),
            )
        except (OSError, ValueError) as exc:
            raise SandboxError(f"cannot read the usage of {self.dirs['memory']}: {exc}") from exc

    def cpu_usec(self) -> int | None:
        """CPU time the job's processes used so far, in microseconds (exited ones included); None once
        the cgroup is gone."""
        try:
            return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) // 1000
        except (OSError, ValueError):
            return None

    def memory_bytes(self) -> int | None:
        """Memory the job uses now (its page cache included); None once the cgroup is gone."""
        try:
            return int((self.dirs["memory"] / "memory.usage_in_bytes").read_text())
        except (OSError, ValueError):
            return None

    def kill_and_remove(self) -> None:
        """`kill()` then `remove()`: for a cgroup made by a step whose start was called off."""
        self.kill()
        self.remove()

    def remove(self) -> None:
        """Remove the job's cgroups; directories already gone are fine.

        A cgroup whose last process just died can be busy for a moment, so EBUSY is retried briefly.
        Raises SandboxError naming the cgroups still busy after that (kill() first); the rest are removed.
        """
        busy = [path for path in self._unique_dirs() if not _rmdir(path)]
        if busy:
            raise SandboxError(f"cgroups still in use, kill their processes first: {busy}")
        with _roots_lock:
            for root in dict.fromkeys(path.parent for path in self._unique_dirs()):
                with contextlib.suppress(OSError):  # other jobs still there: the root stays
                    root.rmdir()

    def _unique_dirs(self) -> list[Path]:
        return list(dict.fromkeys(self.dirs.values()))

    def _write_limits(self, limits: Limits) -> None:
        memory, cpu = self.dirs["memory"], self.dirs["cpu"]
        _write(memory / "memory.limit_in_bytes", str(limits.memory_bytes))
        _write(memory / "memory.swappiness", "0")
        # memsw (memory + swap) exists only with swap accounting, and may not be set below the memory limit.
        if (memory / "memory.memsw.limit_in_bytes").exists():
            _write(memory / "memory.memsw.limit_in_bytes", str(limits.memory_bytes))
        _write(self.dirs["pids"] / "pids.max", str(limits.pids_max))
        _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
        _write(cpu / "cpu.cfs_quota_us", str(round(limits.cpu_cores * CPU_PERIOD_US)))

    def _kill_round(self, spared: set[int]) -> None:
        frozen = self._freeze()
        try:
            for pid in self.pids() - spared:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            if frozen:
                with contextlib.suppress(OSError):
                    _write(self.dirs["freezer"] / "freezer.state", "THAWED")

    def _freeze(self) -> bool:
        """Freeze the job, waiting a little for it; False when its freezer cgroup is gone."""
        state = self.dirs["freezer"] / "freezer.state"
        try:
            _write(state, "FROZEN")
            # A task in uninterruptible sleep can hold off freezing; kill anyway, the next round follows.
            _poll(lambda: state.read_text().strip() == "FROZEN", time.monotonic() + _FREEZE_TIMEOUT_S)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise SandboxError(f"cannot freeze {state.parent}: {exc}") from exc
        return True


def reap_stale(root_name: str, keep: Collection[str] = ()) -> int:
    """The janitor: kill every process in the job cgroups under `root_name` (except the jobs named in
    `keep`, which are live) and remove those cgroups. Returns how many job cgroups it removed.

    At startup nothing is live. A periodic caller must keep every job that may own a cgroup, including
    one being created right now, or that job is killed as stale.

    Raises SandboxError, after handling every other job, naming the jobs it could not clear.
    """
    mounts = _required_mounts()
    jobs: set[str] = set()
    for name in CONTROLLERS:
        with contextlib.suppress(FileNotFoundError):
            jobs.update(path.name for path in (mounts[name] / _checked(root_name)).iterdir() if path.is_dir())
    jobs.difference_update(keep)
    failed = []
    for job in sorted(jobs):
        # Every controller's path, even where a crash mid-create left no directory: those count as gone.
        cgroup = JobCgroup({name: mounts[name] / root_name / job for name in CONTROLLERS})
        try:
            cgroup.kill()
            cgroup.remove()
        except SandboxError as exc:
            failed.append(f"{job}: {exc.detail}")
    if failed:
        raise SandboxError(f"stale job cgroups under {root_name} could not be cleared: {failed}")
    with _roots_lock:
        for name in CONTROLLERS:
            with contextlib.suppress(OSError):  # gone already, or a live job (in `keep`) is inside
                (mounts[name] / root_name).rmdir()
    return len(jobs)


def problems() -> list[str]:
    """What stops per-job cgroups from working on this host (empty when ready), each with its fix."""
    mountinfo = _MOUNTINFO.read_text()
    mounts = parse_mountinfo(mountinfo)
    if not mounts and " - cgroup2 " in mountinfo:
        return [
            "this host has cgroup v2 only, and sandbox limits need cgroup v1 for now: boot with "
            "systemd.unified_cgroup_hierarchy=0 (systemd 256 and later also need "
            "SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1)"
        ]
    found = []
    for name in CONTROLLERS:
        if name not in mounts:
            found.append(
                f"the cgroup v1 {name} controller is not mounted: mkdir -p /sys/fs/cgroup/{name} && "
                f"mount -t cgroup -o {name} cgroup /sys/fs/cgroup/{name} (if the kernel disables it, "
                f"remove cgroup_disable={name} from its command line)"
            )
        elif not os.access(mounts[name], os.W_OK):
            found.append(
                f"cannot write to {mounts[name]}: run the server as root with a read-write cgroup mount "
                "(a container needs a private cgroup namespace and a writable /sys/fs/cgroup)"
            )
    return found


def parse_mountinfo(text: str) -> dict[str, Path]:
    """The mount point of each cgroup v1 controller, from /proc/self/mountinfo text (first mount wins)."""
    mounts: dict[str, Path] = {}
    for line in text.splitlines():
        fields, _, tail = line.partition(" - ")
        parts, extra = fields.split(), tail.split()
        if len(parts) < 5 or len(extra) < 3 or extra[0] != "cgroup":
            continue
        mount_point = Path(_unescape(parts[4]))
        for option in extra[2].split(","):
            mounts.setdefault(option, mount_point)
    return {name: path for name, path in mounts.items() if name in CONTROLLERS}


def _required_mounts() -> dict[str, Path]:
    mounts = parse_mountinfo(_MOUNTINFO.read_text())
    missing = [name for name in CONTROLLERS if name not in mounts]
    if missing:
        raise SandboxError(f"cgroup v1 controllers not mounted: {', '.join(missing)} (see /health/ready)")
    return mounts


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes (`\\040`)."""
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match.group(1), 8)), field)


def _checked(name: str) -> str:
    """A cgroup directory name: one path component, so callers' ids cannot escape the hierarchy."""
    if not _NAME.fullmatch(name):
        raise SandboxError(f"not a valid cgroup name: {name!r} (letters, digits, '.', '_' and '-')")
    return name


def _write(path: Path, value: str) -> None:
    """One write(2), so the kernel sees the whole value and its error reaches us (no buffering)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _field(path: Path, key: str) -> int:
    """The value of `key` in a file of `key value` lines (memory.oom_control, pids.events)."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return int(value)
    raise ValueError(f"no {key} in {path}")


def _poll(done: Callable[[], bool], deadline: float) -> bool:
    """Call `done()` every few milliseconds until it returns True (then True) or the deadline passes."""
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


def _rmdir(path: Path) -> bool:
    """Remove one empty cgroup directory; False when it stays busy (its last processes still exiting)
    through every retry."""
    for wait_s in (*_RMDIR_WAITS_S, None):
        try:
            path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise SandboxError(f"cannot remove {path}: {exc}") from exc
            if wait_s is None:
                return False
            time.sleep(wait_s)
        else:
            return True
    return False
