"""A dispatch's workspace before and after its run: filled host-side, then read back host-side.

Before the run, the workspace (an empty directory the sandbox made) is filled from the tenant's mirror
of the dispatch's repository at the requested ref, with the tenant's git credential if it set one: the
sandbox never sees a credential and needs no network for the checkout. A dispatch without a repository
starts from an empty tree. Either way a private git dir outside the workspace records the baseline that
the run's changes are captured against (see `outpost.workspaces.checkout` and `.capture`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from outpost.db.repositories.dispatches import DispatchRow
from outpost.sandbox.base import RequestedLimits
from outpost.services.git_credentials import credential_host
from outpost.services.workspaces import WorkspaceService
from outpost.worker.persistent import PersistentStore, RunEnd, SpaceCheck
from outpost.worker.run_outputs import reset_outputs_dir
from outpost.workspaces.baselines import EmptyBaselines
from outpost.workspaces.checkout import Baseline, checkout, exclude_outputs
from outpost.workspaces.git import Git, HttpCredential
from outpost.workspaces.index_stat import restamp_index
from outpost.workspaces.mirrors import MirrorCache
from outpost.workspaces.push import PushResult, push_changes
from outpost.workspaces.repo_url import parse_repo_url

log = logging.getLogger(__name__)


class GitCredentialSource(Protocol):
    async def credential_for(
        self, tenant_id: str, host: str, *, run_id: str | None = None
    ) -> HttpCredential | None:
        """The tenant's credential for `host`, None when it set none (audited as read for `run_id`).
        Raises SecretUnreadable."""


@dataclass(slots=True)
class StageMark:
    """What was seen of the workspace as the run was about to start."""

    ctime_ns: int = 0
    """A ctime read after the sandbox handed the files over: any later change has one at least as
    recent (0: never staged)."""


@dataclass(frozen=True, slots=True)
class PreparedWorkspace:
    """A filled workspace, its baseline, and the host directories runs must see read-only (the mirror
    objects the workspace's own `.git` borrows)."""

    workdir: Path
    baseline: Baseline
    read_only: tuple[Path, ...]
    checked_out: bool = False
    """True when the private index's stat data came from writing these very files (a fresh checkout)."""
    staged: StageMark = field(default_factory=StageMark)

    def after_staged(self) -> None:
        """Called by the sandbox once the files belong to the run's uid, before the run starts: marks
        the time (see `StageMark`) and keeps capture from re-reading a fresh checkout's files (see
        `index_stat`). Never raises: without either, capture and saving are slower, not wrong."""
        try:
            self.staged.ctime_ns = _current_ctime_ns(self.baseline.git_dir)
            if self.checked_out:
                restamp_index(self.baseline.index_path, self.workdir)
        except OSError:
            log.warning("the workspace's stat data was not recorded; capture will re-read every file")


def _current_ctime_ns(directory: Path) -> int:
    """The ctime the file system gives a file changed now (its clock is coarser than `time.time`)."""
    probe = directory / "stage-probe"
    probe.write_bytes(b"")
    try:
        return os.lstat(probe).st_ctime_ns
    finally:
        probe.unlink()


@dataclass(frozen=True, slots=True)
class WorkspacePlaces:
    """Where the worker keeps what workspaces need on its disk, and what may fill it."""

    persistent: PersistentStore
    sizes: WorkspaceService
    default_disk_bytes: int
    space: SpaceCheck


class RunWorkspaces:
    """Fills workspaces before runs and, for persistent ones, saves them after."""

    def __init__(
        self, git: Git, mirrors: MirrorCache, credentials: GitCredentialSource, places: WorkspacePlaces
    ) -> None:
        self.git = git
        self._empty = EmptyBaselines(git)
        self._mirrors = mirrors
        self._credentials = credentials
        self._places = places

    def _git_dir(self, row: DispatchRow, private: Path) -> Path:
        if row.workspace_id is not None:
            return self._places.persistent.git_dir(row.tenant_id, row.workspace_id)
        return private / "git"

    def private_limits(self, limits: RequestedLimits) -> RequestedLimits:
        """What the worker's private area of a run may hold: its git dir (the index, and the objects
        capture writes for every file the run changed, uncompressed) and the patch."""
        disk = limits.disk_bytes or self._places.default_disk_bytes
        return RequestedLimits(disk_bytes=2 * disk + self.git.settings.max_patch_bytes)

    async def limits_for(self, row: DispatchRow, limits: RequestedLimits) -> RequestedLimits:
        """A run in a persistent workspace may fill what the tenant's other workspaces leave."""
        if row.workspace_id is None:
            return limits
        room = await self._places.sizes.room_for(row.tenant_id, row.workspace_id)
        return replace(
            limits, disk_bytes=max(1, min(limits.disk_bytes or self._places.default_disk_bytes, room))
        )

    async def prepare(self, row: DispatchRow, workdir: Path, private: Path) -> PreparedWorkspace:
        """Fill `workdir` (empty) for `row`; the baseline goes into `private`, an empty directory that
        runs cannot reach (but for a persistent workspace, whose baseline is kept with it).

        Then `.outpost/outputs` in it is made an empty directory (see `run_outputs`).

        Raises InvalidInput (refused URL or ref, no such repository or ref, credential refused, tree
        too large), Unavailable (remote unreachable, disk low), PayloadTooLarge (repository over the
        fetch limit), SecretUnreadable and SandboxError."""
        prepared = await self._fill(row, workdir, private)
        await asyncio.to_thread(reset_outputs_dir, workdir)
        return prepared

    async def _fill(self, row: DispatchRow, workdir: Path, private: Path) -> PreparedWorkspace:
        self._places.space.check(0)
        if row.workspace_id is not None and self._places.persistent.exists(row.tenant_id, row.workspace_id):
            return await self._load(row, row.workspace_id, workdir)
        private = self._git_dir(row, private)
        await asyncio.to_thread(shutil.rmtree, private, ignore_errors=True)  # an earlier attempt's leftovers
        if row.repo is None:
            return PreparedWorkspace(workdir, await self._empty.make(private), ())
        url, ref = row.repo["url"], row.repo.get("ref")
        credential = await self._credential(row, url)
        text = f"{credential.username}:{credential.password}" if credential else None
        resolved = await self._mirrors.resolve(url, ref, text, scope=row.tenant_id)
        baseline = await checkout(self.git, resolved, workdir, private)
        return PreparedWorkspace(workdir, baseline, (baseline.objects_path,), checked_out=True)

    async def _credential(self, row: DispatchRow, url: str) -> HttpCredential | None:
        """The tenant's credential for the URL's host (see `credential_host`)."""
        repo = parse_repo_url(url, self.git.settings)
        if not repo.host:
            return None  # a repository on the worker's own disk
        run_id = f"{row.id}.{row.attempt}"
        return await self._credentials.credential_for(row.tenant_id, credential_host(repo), run_id=run_id)

    async def _load(self, row: DispatchRow, workspace_id: str, workdir: Path) -> PreparedWorkspace:
        persistent = self._places.persistent
        commit = await persistent.load(row.tenant_id, workspace_id, workdir)
        git_dir = persistent.git_dir(row.tenant_id, workspace_id)
        await asyncio.to_thread(exclude_outputs, git_dir)  # a workspace saved before outputs existed
        if row.repo is None:
            return PreparedWorkspace(workdir, Baseline(commit, git_dir, git_dir / "objects"), ())
        repo = parse_repo_url(row.repo["url"], self.git.settings)
        objects = self._mirrors.mirror_path(repo, row.tenant_id) / "objects"
        return PreparedWorkspace(workdir, Baseline(commit, git_dir, objects), (objects,))

    async def save(self, row: DispatchRow, prepared: PreparedWorkspace, tree: str | None) -> None:
        """Keep a persistent workspace's end state (see `persistent`) and record its size. Raises
        SandboxError and InsufficientStorage; the workspace then stays as it was before the run."""
        if row.workspace_id is None:
            return
        run = RunEnd(prepared.workdir, prepared.baseline.commit, tree, prepared.staged.ctime_ns)
        size = await self._places.persistent.save(row.tenant_id, row.workspace_id, run, self._places.space)
        await self._places.sizes.record_size(row.workspace_id, size)

    async def push(self, row: DispatchRow, prepared: PreparedWorkspace, tree: str) -> PushResult:
        """Commit the captured `tree` on the baseline and push it to the dispatch's branch, with the
        tenant's credential. Raises Conflict (the branch moved on), InvalidInput (refused), Unavailable."""
        if row.repo is None or row.push_branch is None:
            raise ValueError("only a dispatch on a repository with a push branch pushes")
        settings = self.git.settings
        first_line = row.task.strip().splitlines()[0][:200] if row.task.strip() else ""
        credential = await self._credential(row, row.repo["url"])
        return await push_changes(
            self.git, repo_url=row.repo["url"], credential=credential,
            baseline=prepared.baseline, tree=tree, branch=row.push_branch,
            message=f"{first_line}\n\nOutpost dispatch {row.id} ({row.agent})\n",
            author=(settings.push_author_name, settings.push_author_email),
        )  # fmt: skip

    async def scratch_dir(self, private: Path) -> Path:
        """An empty directory in the run's private area for files made while capturing (the patch)."""
        scratch = private / "out"
        await asyncio.to_thread(shutil.rmtree, scratch, ignore_errors=True)
        await asyncio.to_thread(scratch.mkdir, mode=0o700)
        return scratch
