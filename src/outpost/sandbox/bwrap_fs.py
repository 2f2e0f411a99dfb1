"""The host side of a bwrap run's file system: what bwrap binds, staged where the run's uid can reach it.

bwrap runs as the job's unprivileged uid, so each bind source must be reachable by that uid. Rather than
require the data dir (often under a private home) to be searchable, the server stages each run under
`<run dir>/<instance>/<run id>/` (directories 0711, root's) with:

    etc/{passwd,group,hosts,resolv.conf}  synthetic, read-only in the sandbox
    scratch/                              a tmpfs capped in size and inodes, owned by the job's uid,
        tmp/ home/ shm/                   bound at /tmp, the home dir and /dev/shm
    workspace/                            a bind mount of the dispatch's workspace (itself a capped tmpfs)
    ro/0, ro/1, …                         bind mounts of host directories the run may read (agent CLIs)

so every place the command can write ends in ENOSPC at a known size and file count.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from outpost.sandbox import mounts
from outpost.sandbox.home_files import place_home_files

DEFAULT_RUN_DIR = Path("/run/outpost")
# The scratch tmpfs holds the run's /tmp, home and /dev/shm together; its pages also count against the
# run's memory limit.
SCRATCH_BYTES = 512 * 1024 * 1024
SCRATCH_INODES = 65_536
SCRATCH_DIRS = ("tmp", "home", "shm")
SEARCHABLE = 0o711
HOME = "/home/agent"


@dataclass(frozen=True, slots=True)
class DiskLimits:
    """A workspace's default size and its file count (the size may be lowered per dispatch)."""

    size_bytes: int = 2 * 1024**3
    inodes: int = 262_144


DEFAULT_DISK = DiskLimits()


@dataclass(frozen=True, slots=True)
class JobPaths:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def workspace(self) -> Path:
        return self.root / "workspace"

    @property
    def home(self) -> Path:
        return self.scratch / "home"

    def read_only(self, index: int) -> Path:
        return self.root / "ro" / str(index)

    def is_full(self) -> bool:
        """Whether the run has filled its workspace or its scratch space (in bytes or in files)."""
        return mounts.is_full(self.workspace) or mounts.is_full(self.scratch)


def searchable_dir(path: Path) -> Path:
    """Create `path` (and missing parents) so that other users may pass through but not list it."""
    missing = [parent for parent in (path, *path.parents) if not parent.exists()]
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        directory.chmod(SEARCHABLE)
    return path


def stage(
    paths: JobPaths,
    workdir: Path,
    uid: int,
    read_only: tuple[Path, ...] = (),
    home_files: Mapping[str, bytes | Path] | None = None,
) -> None:
    """Stage one run's files for `uid`; on failure nothing is left behind. `read_only` host directories
    are bound under the run dir, which the run's uid can reach whatever their own parents' modes."""
    try:
        paths.root.mkdir(mode=SEARCHABLE)
        paths.root.chmod(SEARCHABLE)  # mkdir's mode is filtered by the umask
        _write_etc(paths.etc, uid)
        _mount_scratch(paths.scratch, uid)
        place_home_files(paths.home, home_files or {}, uid)
        paths.workspace.mkdir()
        mounts.bind(workdir, paths.workspace)
        _chown_tree(workdir, uid)
        for index, source in enumerate(read_only):
            paths.read_only(index).mkdir(parents=True)
            mounts.bind(source, paths.read_only(index))
    except BaseException:
        remove(paths)
        raise


def remove(paths: JobPaths) -> None:
    """Unmount and delete a run's staged files (its workspace itself stays: the worker owns it)."""
    mounts.unmount_all_under(paths.root)  # the workspace, scratch and read-only binds stage() made
    shutil.rmtree(paths.root, ignore_errors=True)


def create_workspace(workdir: Path, size_bytes: int, inodes: int) -> None:
    """A fresh capped tmpfs at `workdir`, root's until a run's `stage()` hands it to the run's uid."""
    remove_workspace(workdir)
    workdir.mkdir(parents=True)
    try:
        mounts.mount_tmpfs(workdir, size_bytes=size_bytes, inodes=inodes, uid=0, mode=0o700)
    except BaseException:
        workdir.rmdir()
        raise


def remove_workspace(workdir: Path) -> None:
    mounts.unmount(workdir)  # nothing is mounted inside it: runs see it through their own bind
    shutil.rmtree(workdir, ignore_errors=True)


def _write_etc(etc: Path, uid: int) -> None:
    etc.mkdir()
    (etc / "passwd").write_text(
        f"root:x:0:0:root:/root:/usr/sbin/nologin\nagent:x:{uid}:{uid}::{HOME}:/bin/sh\n"
    )
    (etc / "group").write_text(f"root:x:0:\nagent:x:{uid}:\n")
    (etc / "hosts").write_text("127.0.0.1 localhost sandbox\n::1 localhost\n")
    (etc / "resolv.conf").write_text("")  # no DNS inside: names are resolved by the egress proxy


def _mount_scratch(scratch: Path, uid: int) -> None:
    scratch.mkdir()
    mounts.mount_tmpfs(scratch, size_bytes=SCRATCH_BYTES, inodes=SCRATCH_INODES, uid=uid, mode=0o700)
    for name in SCRATCH_DIRS:
        (scratch / name).mkdir(mode=0o700)
        os.chown(scratch / name, uid, uid)


def _chown_tree(top: Path, uid: int) -> None:
    """Give the run's uid its workspace, links included (never followed: they may point anywhere)."""
    os.chown(top, uid, uid)
    for directory, subdirs, files in os.walk(top):
        for name in (*subdirs, *files):
            os.lchown(os.path.join(directory, name), uid, uid)
