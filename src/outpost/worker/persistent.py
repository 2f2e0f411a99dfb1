"""Persistent workspaces on the worker's disk: loaded into a run's capped workspace, saved back after.

A persistent workspace lives under `<root>/<tenant>/<workspace>/`:

    tree/   its files, as the last run left them
    git/    its private git dir: HEAD is the state `tree/` holds, so the next run's changes are
            captured against it (each run adds one commit, parent the one before)

A run never works in `tree/` itself: its files are copied into the run's workspace (a tmpfs capped at
what is left of the tenant's quota), and copied back into a fresh `tree.new/` that replaces `tree/` by
rename once complete. The quota therefore holds during the run, the disk is checked before the copy
back, and a worker that dies mid-run leaves the workspace as the previous run left it.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from outpost.errors import SandboxError
from outpost.storage.disk_guard import measure_usage
from outpost.workspaces.baselines import advance_baseline, head_commit
from outpost.workspaces.git import Git


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
        """Whether a run has already saved this workspace (else the next run creates it). A save cut
        off between its two renames is finished here: the previous tree comes back."""
        tree = self.tree(tenant_id, workspace_id)
        old = tree.with_name("tree.old")
        if not tree.is_dir() and old.is_dir():
            old.rename(tree)
        return tree.is_dir()

    async def load(self, tenant_id: str, workspace_id: str, workdir: Path) -> str:
        """Copy the saved files into the (empty) run workspace; the commit they correspond to.
        Raises SandboxError when they do not fit or cannot be copied."""
        await _copy_tree(self.tree(tenant_id, workspace_id), workdir)
        return await head_commit(self._git, self.git_dir(tenant_id, workspace_id))

    async def save(
        self, tenant_id: str, workspace_id: str, workdir: Path, base: str, tree: str | None
    ) -> int:
        """Make the run's end state the workspace's: its files and, when the run's changes were
        captured (`tree`), a commit of them on top of `base`. Returns the saved size in bytes.
        Raises SandboxError; the workspace then stays as the previous run left it."""
        home = self.home(tenant_id, workspace_id)
        staged = home / "tree.new"
        await asyncio.to_thread(shutil.rmtree, staged, ignore_errors=True)
        await _copy_tree(workdir, staged)
        if tree is not None:
            await advance_baseline(self._git, self.git_dir(tenant_id, workspace_id), base, tree)
        await asyncio.to_thread(_swap, staged, home / "tree")
        return await asyncio.to_thread(measure_usage, home / "tree")

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


def _swap(staged: Path, current: Path) -> None:
    """Replace `current` by `staged` (both directories): a crash leaves one of them whole."""
    old = current.with_name("tree.old")
    shutil.rmtree(old, ignore_errors=True)
    if current.exists():
        current.rename(old)
    staged.rename(current)
    shutil.rmtree(old, ignore_errors=True)
