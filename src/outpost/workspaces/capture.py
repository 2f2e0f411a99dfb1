"""Capturing what a run changed in its workspace, on the host, whatever the agent did to the workspace.

Only the private git dir of the baseline is used (`--git-dir=<private> --work-tree=<workspace>`), with
a throwaway copy of its index. The workspace's `.git` is never read: git skips every entry named `.git`
in a work tree, so hooks, config (fsmonitor, filters, aliases), alternates or a `.git` that is a file or
a symlink to `/` planted there do nothing. Nothing the agent wrote can make host-side git run a command:
- hooks come from `core.hooksPath=/dev/null`, fsmonitor is off, and the only configs git reads are the
  private git dir's (written by Outpost) and the `-c` options of `Git`;
- a `filter=`, `diff=` or `textconv` attribute in a `.gitattributes` runs a command only through a
  driver defined in config (`filter.<name>.clean`, ...), and none is; on top of that the private
  `info/attributes` (see `checkout`) unsets those attributes, so not even built-in conversions apply.
Symlinks are recorded as links (their target text), never followed; a hardlink is read as the content of
its workspace path, and nothing in the work tree is written except that FIFOs and other special files are
removed first: git opens `.gitignore` files and nested `.git/HEAD` files without looking at their type,
and opening a FIFO blocks forever. A directory holding a repository of its own is recorded by git as
its commit id (read from that repository, which may point anywhere); such entries are taken out of the
capture and reported in `warnings`.

Files that the workspace's `.gitignore` files ignore are left out, as `git add -A` leaves them (a build's
`node_modules`); a change to a `.gitignore` itself is in the patch.

Unchanged files are recognised by the stat data the checkout left in the index; the agent cannot forge
a file's ctime, which git compares (`core.trustctime`, `core.checkStat=default`). Anything that touches
every file's ctime after the checkout (a chown of the workspace) makes git re-read them all instead:
measured on 20,000 files with 1,000 changed, about three times slower.

Precondition: every process of the run is gone. A live one could swap a directory for a symlink while
git reads below it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import PayloadTooLarge, SandboxError
from outpost.workspaces.checkout import LOCAL_CONFIG, OUTPUTS_DIR, Baseline
from outpost.workspaces.git import MAX_CAPTURED_BYTES, Git, GitResult
from outpost.workspaces.raw_diff import GITLINK_MODE, ChangedFile, decode_name, display_name, parse_raw
from outpost.workspaces.remote_failures import last_words

PATCH_NAME = "changes.patch"
MAX_LISTING_BYTES = 64 * 1024 * 1024
MAX_WARNINGS = 20
DIFF_OPTIONS = ("--cached", "-M", "--no-ext-diff", "--no-textconv", "--ignore-submodules=none")
PATCH_OPTIONS = ("--binary", "--full-index", "--no-color", "--src-prefix=a/", "--dst-prefix=b/")


@dataclass(frozen=True, slots=True)
class Changes:
    """What a run changed: a binary-safe patch against `base_commit` (`git apply` takes it), the changed
    files, what could not be captured (`warnings`, printable), and `tree`, the id of the captured tree
    (written to the private git dir, nested repositories left as in the baseline: what a push commits),
    None when it was not asked for."""

    base_commit: str
    patch_path: Path
    patch_bytes: int
    files: tuple[ChangedFile, ...]
    warnings: tuple[str, ...]
    tree: str | None


async def capture_changes(
    git: Git, baseline: Baseline, workdir: Path, out_dir: Path, *, with_tree: bool = True
) -> Changes:
    """Capture the changes in `workdir` since `baseline`; the patch is written to `out_dir/changes.patch`.
    `with_tree` records the captured tree too (a push or a persistent workspace needs it).

    Raises PayloadTooLarge when the patch exceeds `GitSettings.max_patch_bytes`, and SandboxError when
    git fails or takes longer than `GitSettings.local_timeout_s` (per command).
    """
    removed = await asyncio.to_thread(remove_special_files, workdir)
    index = baseline.git_dir / f"capture-{uuid.uuid4().hex}.index"
    # copy2 keeps the index's mtime, which git compares with its entries' to spot racily clean ones.
    await asyncio.to_thread(shutil.copy2, baseline.index_path, index)
    run = _Capture(git, baseline, workdir, index)
    try:
        return await run.changes(out_dir / PATCH_NAME, removed, with_tree)
    except TimeoutError:
        raise SandboxError(
            f"capturing the changes took longer than {git.settings.local_timeout_s:g} s"
        ) from None
    finally:
        index.unlink(missing_ok=True)


class _Capture:
    def __init__(self, git: Git, baseline: Baseline, workdir: Path, index: Path) -> None:
        self._git = git
        self._baseline = baseline
        self._workdir = workdir
        self._index = index

    async def changes(self, patch_path: Path, removed: list[str], with_tree: bool) -> Changes:
        warnings = [f"{display_name(path)}: a FIFO or other special file, removed" for path in removed]
        added = await self._run(["add", "--all", "--ignore-errors"])
        if added.returncode not in {0, 1}:  # 1: some paths could not be added, the rest was
            raise SandboxError(f"cannot record the workspace's files: {last_words(added)}")
        warnings += _git_warnings(added.stderr)
        files = await self._changed_files()
        if any(_in_outputs(change) for change in files):
            # The run's outputs are artifacts, never changes. The git dir's `info/exclude` leaves them
            # out, but a `.gitignore` that re-includes them outranks it.
            await self._restore([OUTPUTS_DIR.encode()])
            files = await self._changed_files()
        nested = [change for change in files if change.new_mode == GITLINK_MODE]
        if nested:
            await self._restore([change.path_bytes for change in nested])
            warnings += [f"{change.display_path}: a nested git repository, not captured" for change in nested]
        patch = await self._patch(patch_path)
        tree = await self._write_tree() if with_tree else None
        kept = tuple(change for change in files if change.new_mode != GITLINK_MODE)
        return Changes(self._baseline.commit, patch_path, patch.stdout_bytes, kept, _capped(warnings), tree)

    async def _changed_files(self) -> list[ChangedFile]:
        try:
            args = ["diff", *DIFF_OPTIONS, "--raw", "-z", "--no-abbrev", self._baseline.commit]
            listing = await self._run(args, max_stdout_bytes=MAX_LISTING_BYTES)
        except PayloadTooLarge:
            raise PayloadTooLarge(
                f"the run changed too many files to list ({MAX_LISTING_BYTES} bytes of names)"
            ) from None
        _check(listing, "list the changed files")
        try:
            return parse_raw(listing.stdout)
        except ValueError as exc:
            raise SandboxError(f"cannot read git's list of changed files: {exc}") from exc

    async def _restore(self, names: list[bytes]) -> None:
        """Put the baseline's entries back for `names` and everything below them (a nested repository's
        commit id would be read from a repository the agent controls)."""
        paths = self._index.with_suffix(".paths")
        await asyncio.to_thread(paths.write_bytes, b"".join(name + b"\0" for name in names))
        try:
            pathspecs = [f"--pathspec-from-file={paths}", "--pathspec-file-nul"]
            result = await self._run(["reset", "--quiet", *pathspecs, self._baseline.commit])
        finally:
            paths.unlink(missing_ok=True)
        _check(result, "leave paths out of the capture")

    async def _write_tree(self) -> str:
        """The id of the index's tree, written to the private git dir (a push commits it as it is)."""
        result = await self._run(["write-tree"])
        _check(result, "record the captured tree")
        return result.stdout.decode("ascii").strip()

    async def _patch(self, path: Path) -> GitResult:
        limit = self._git.settings.max_patch_bytes
        try:
            patch = await self._run(["diff", *DIFF_OPTIONS, *PATCH_OPTIONS, self._baseline.commit],
                                    stdout_file=path, max_stdout_bytes=limit)  # fmt: skip
        except PayloadTooLarge:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise PayloadTooLarge(f"the run's changes make a patch larger than {limit} bytes") from None
        _check(patch, "write the patch")
        return patch

    async def _run(
        self, args: list[str], *, stdout_file: Path | None = None, max_stdout_bytes: int = MAX_CAPTURED_BYTES
    ) -> GitResult:
        return await self._git.run(
            args, git_dir=self._baseline.git_dir, work_tree=self._workdir, index_file=self._index,
            config=LOCAL_CONFIG, timeout_s=self._git.settings.local_timeout_s, stdout_file=stdout_file,
            max_stdout_bytes=max_stdout_bytes,
        )  # fmt: skip


def remove_special_files(workdir: Path) -> list[str]:
    """Delete FIFOs, sockets and device nodes under `workdir`, its top `.git` aside (git never reads
    it); returns their paths relative to `workdir`. Symlinks are neither followed nor removed."""
    removed: list[str] = []
    root = os.fsencode(workdir)
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # unreadable: git reports it, if it matters
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not (directory == root and entry.name == b".git"):
                    pending.append(entry.path)
            elif not entry.is_file(follow_symlinks=False) and not entry.is_symlink():
                os.unlink(entry.path)
                removed.append(decode_name(os.path.relpath(entry.path, root)))
    return removed


def _in_outputs(change: ChangedFile) -> bool:
    return any(
        path is not None and (path == OUTPUTS_DIR or path.startswith(f"{OUTPUTS_DIR}/"))
        for path in (change.path, change.old_path)
    )


def _git_warnings(stderr: str) -> list[str]:
    """The error and warning lines of `git add --ignore-errors` (paths it could not record)."""
    lines = [line for line in stderr.splitlines() if line.startswith(("error: ", "warning: "))]
    return [display_name(line) for line in lines if "embedded git repository" not in line]


def _capped(warnings: list[str]) -> tuple[str, ...]:
    if len(warnings) <= MAX_WARNINGS:
        return tuple(warnings)
    return (*warnings[:MAX_WARNINGS], f"... and {len(warnings) - MAX_WARNINGS} more")


def _check(result: GitResult, doing: str) -> None:
    if not result.ok:
        raise SandboxError(f"cannot {doing}: {last_words(result)}")
