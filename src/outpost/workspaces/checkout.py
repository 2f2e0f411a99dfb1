"""Filling a dispatch's workspace from a mirror on the host, fast, and the baseline its changes are
later captured against.

A checkout makes two git directories, both reading the mirror's objects through
`objects/info/alternates` (no object is copied):
- a private one, `git_dir`, outside the workspace where runs cannot reach it. Outpost's own commands
  (this checkout, and the capture after the run) use it and nothing else. Its `info/attributes`, which
  outranks every `.gitattributes`, unsets the attributes that transform content (`text`, `eol`,
  `filter`, `ident`, `working-tree-encoding`, `diff`), so files are written and read back byte for
  byte, whatever the repository or the agent put in `.gitattributes`.
- the workspace's `.git`, for the agent: HEAD detached at the commit, a copy of the private index (so
  `git status` is clean at once) and alternates naming the mirror's objects by their host path (the
  worker mounts `Baseline.objects_path` read-only at that path in the sandbox). The agent may change or
  break it at will: nothing on the host reads it.

Speed: one `git read-tree -u --reset` writes the index and the files. Measured on 20,000 files, reading
blobs dominates, most of it inflating zlib; mirrors are therefore kept uncompressed (see
`mirror_packs`), after which a checkout is mostly file creation. Parallel checkout
(`GitSettings.checkout_workers`) only pays off when inflating dominates and cores are idle.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import InvalidInput, SandboxError
from outpost.workspaces.git import Git
from outpost.workspaces.mirrors import ResolvedRef
from outpost.workspaces.refs import is_full_sha
from outpost.workspaces.remote_failures import last_words

OUTPUTS_DIR = ".outpost/outputs"
"""A run's outputs directory, relative to its workspace: files there become artifacts, never changes."""
# Anchored, and without a trailing `/`, so that whatever the run leaves at that path (a directory, a
# file, a symlink) stays out of the captured changes.
OUTPUT_EXCLUDES = f"/{OUTPUTS_DIR}\n"
NEUTRAL_ATTRIBUTES = "* !text !eol !crlf !filter !ident !working-tree-encoding !diff !merge\n"
# Private and transient: a crash loses the workspace anyway, so fsync would only cost time.
LOCAL_CONFIG = {"core.fsync": "none", "core.compression": "0", "core.looseCompression": "0"}
WORKSPACE_CONFIG = (
    "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n"
)


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a workspace was checked out from: the commit, the private git dir that captures its changes,
    and the mirror objects both git dirs read (to be mounted read-only, at the same path, into runs)."""

    commit: str
    git_dir: Path
    objects_path: Path

    @property
    def index_path(self) -> Path:
        return self.git_dir / "index"


async def checkout(git: Git, resolved: ResolvedRef, workdir: Path, git_dir: Path) -> Baseline:
    """Fill the existing, empty directory `workdir` with the tree of `resolved.commit`, plus a `.git`
    for the agent; `git_dir` (missing or empty, outside `workdir`) becomes the private git dir.

    Raises ValueError when the directories are not as described, InvalidInput when the commit has a
    path git refuses to write or does not fit in the workspace, and SandboxError when git fails
    otherwise or takes longer than `GitSettings.local_timeout_s`.
    """
    if not is_full_sha(resolved.commit):
        raise ValueError(f"checkout needs a full commit id, not {resolved.commit!r}")
    baseline = Baseline(resolved.commit, git_dir, resolved.objects_path.resolve())
    await asyncio.to_thread(_prepare_private_dir, baseline, workdir)
    config = {**LOCAL_CONFIG, "checkout.workers": str(git.settings.checkout_workers)}
    try:
        result = await git.run(
            ["read-tree", "-u", "--reset", baseline.commit], git_dir=git_dir, work_tree=workdir,
            config=config, timeout_s=git.settings.local_timeout_s,
        )  # fmt: skip
    except TimeoutError:
        raise SandboxError(f"checking out {baseline.commit} took longer than "
                           f"{git.settings.local_timeout_s:g} s") from None  # fmt: skip
    if not result.ok:
        raise _checkout_error(baseline.commit, result.stderr, last_words(result))
    await asyncio.to_thread(_write_workspace_git, baseline, workdir)
    return baseline


def _prepare_private_dir(baseline: Baseline, workdir: Path) -> None:
    if workdir.is_symlink() or not workdir.is_dir() or any(workdir.iterdir()):
        raise ValueError(f"{workdir} must be an existing, empty directory")
    work, private = workdir.resolve(), baseline.git_dir.resolve()
    if private == work or private.is_relative_to(work) or work.is_relative_to(private):
        raise ValueError("the private git dir must be outside the workspace")
    private.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(private.iterdir()):
        raise ValueError(f"{private} must be missing or empty")
    _write_git_dir(private, baseline)
    (private / "info").mkdir()
    (private / "info" / "attributes").write_text(NEUTRAL_ATTRIBUTES)
    exclude_outputs(private)


def exclude_outputs(git_dir: Path) -> None:
    """Keep the outputs directory out of what `git_dir` captures, through its `info/exclude`. Idempotent.
    A `.gitignore` outranks it: capture takes out whatever a re-including `.gitignore` let in."""
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "exclude").write_text(OUTPUT_EXCLUDES)


def _write_workspace_git(baseline: Baseline, workdir: Path) -> None:
    dot_git = workdir / ".git"
    dot_git.mkdir()
    _write_git_dir(dot_git, baseline)
    (dot_git / "config").write_text(WORKSPACE_CONFIG)
    exclude_outputs(dot_git)  # the agent's own `git status` and `git add -A` leave its outputs alone
    shutil.copyfile(baseline.index_path, dot_git / "index")


def _write_git_dir(path: Path, baseline: Baseline) -> None:
    """The files that make `path` a git dir at `baseline.commit` borrowing the mirror's objects."""
    (path / "objects" / "info").mkdir(parents=True)
    (path / "objects" / "info" / "alternates").write_text(f"{baseline.objects_path}\n")
    (path / "refs" / "heads").mkdir(parents=True)
    (path / "refs" / "tags").mkdir()
    (path / "HEAD").write_text(f"{baseline.commit}\n")


def _checkout_error(commit: str, stderr: str, detail: str) -> InvalidInput | SandboxError:
    if "no space left on device" in stderr.lower() or "disk quota exceeded" in stderr.lower():
        return InvalidInput(
            f"the tree of {commit} does not fit in the workspace: ask for a larger disk limit"
        )
    if "invalid path" in stderr.lower():
        return InvalidInput(f"{commit} has a path git refuses to check out ({detail})")
    return SandboxError(f"cannot check out {commit}: {detail}")
