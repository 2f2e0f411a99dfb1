"""Persistent workspaces on the worker's disk: loaded into a run's capped workspace, saved back after.

A persistent workspace lives under `<root>/<tenant>/<workspace>/`:

    tree/   its files, as the last run left them
    git/    its private git dir: HEAD is the state `tree/` holds, so the next run's changes are
            captured against it (each run adds one commit, parent the one before)

A run never works in `tree/` itself: its files are copied into the run's workspace (a tmpfs capped at
what is left of the tenant's quota), and afterwards only what the run changed is written back (see
`tree_sync`): the quota holds during the run, the disk is checked for what the save writes, and a
worker that dies mid-run leaves the workspace as the previous run left it.

A save is all or nothing. Entries it replaces or removes go to `undo/` first, with a journal, and
`saving` records the commit the tree held; the save is done once the journal is gone. A save cut off
before that (an error, or a worker that died) is rolled back, by the save itself or by the next
access: the earlier files come back and HEAD names their commit again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from outpost.errors import SandboxError
from outpost.worker.tree_sync import JOURNAL, apply_sync, discard_undo, plan_sync, roll_back
from outpost.workspaces.baselines import advance_baseline, head_commit
from outpost.workspaces.git import Git

SAVING = "saving"


class SpaceCheck(Protocol):
    """Refuses a write that would leave the data dir's disk below its reserve (see `DiskGuard`)."""

    def check(self, need_bytes: int) -> None:
        """Raises InsufficientStorage."""


@dataclass(frozen=True, slots=True)
class RunEnd:
    """A finished run's workspace, as a save needs it."""

    workdir: Path
    base: str
    """The commit the run started from."""
    tree: str | None
    """The tree its changes were captured as, None when they could not be."""
    changed_since_ns: int
    """A ctime read before the run started (0: unknown, everything is written)."""


class PersistentStore:
    def __init__(self, root: Path, git: Git) -> None:
        self._root = root
        self._git = git

    def home(self, tenant_id: str, workspace_id: str) -> Path:
        return self._root / tenant_id / workspace_id

    def git_dir(self, tenant_id: str, workspace_id: str) -> Path:
        return self.home(tenant_id, workspace_id) / "git"

    def tree(self, tenant_id: str, workspace_id: str) -> Path:
        return self.home(tenant_id, workspace_id) / "tree"

    def exists(self, tenant_id: str, workspace_id: str) -> bool:
        """Whether a run has already saved this workspace (else the next run creates it). A save that
        was cut off is rolled back first."""
        home = self.home(tenant_id, workspace_id)
        _finish_or_roll_back(home)
        return (home / "tree").is_dir()

    async def load(self, tenant_id: str, workspace_id: str, workdir: Path) -> str:
        """Copy the saved files into the (empty) run workspace; the commit they correspond to.
        Raises SandboxError when they do not fit or cannot be copied."""
        await _copy_tree(self.tree(tenant_id, workspace_id), workdir)
        return await head_commit(self._git, self.git_dir(tenant_id, workspace_id))

    async def save(self, tenant_id: str, workspace_id: str, run: RunEnd, space: SpaceCheck) -> int:
        """Make the run's end state the workspace's: its files and, when the run's changes were
        captured (`run.tree`), a commit of them on top of `run.base`. Returns the saved size in bytes.
        Raises SandboxError and InsufficientStorage; the workspace then stays as the previous run left it."""
        home = self.home(tenant_id, workspace_id)
        tree, undo = home / "tree", home / "undo"
        plan = await asyncio.to_thread(plan_sync, run.workdir, tree, run.changed_since_ns)
        space.check(plan.write_bytes)
        await asyncio.to_thread(_write_atomically, home / SAVING, f"{run.base}\n")
        try:
            await asyncio.to_thread(apply_sync, run.workdir, tree, plan, undo)
        except OSError as exc:
            raise SandboxError(f"cannot save the workspace: {exc.strerror or exc}") from exc
        try:
            if run.tree is not None:
                await advance_baseline(self._git, self.git_dir(tenant_id, workspace_id), run.base, run.tree)
        except BaseException:
            await asyncio.to_thread(_finish_or_roll_back, home)
            raise
        await asyncio.to_thread(discard_undo, undo)
        return plan.source_bytes

    async def remove(self, tenant_id: str, workspace_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.home(tenant_id, workspace_id), ignore_errors=True)


async def _copy_tree(source: Path, target: Path) -> None:
    """`cp -a` of the directory's content: links stay links (never followed), hardlinks within it stay
    hardlinked, modes and times are kept."""
    await asyncio.to_thread(target.mkdir, mode=0o700, exist_ok=True)
    process = await asyncio.create_subprocess_exec(
        "cp", "-a", "--no-preserve=ownership", "--", f"{source}/.", f"{target}/",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, stderr = await process.communicate()
    if process.returncode != 0:
        message = stderr.decode(errors="replace").strip().splitlines()
        hint = " (it does not fit: ask for a larger disk limit)" if "No space left" in stderr.decode() else ""
        raise SandboxError(f"cannot copy the workspace{hint}: {message[-1] if message else 'cp failed'}")


def _finish_or_roll_back(home: Path) -> None:
    """Roll back a save that did not get to discard its journal (files, then HEAD); drop the leftovers
    of one that did."""
    undo, saving = home / "undo", home / SAVING
    if (undo / JOURNAL).exists():
        roll_back(home / "tree", undo)
        if saving.exists():
            _write_atomically(home / "git" / "HEAD", saving.read_text())
    elif undo.exists():
        discard_undo(undo)
    saving.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f"{path.name}.new")
    temporary.write_text(text)
    os.replace(temporary, path)
