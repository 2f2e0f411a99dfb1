"""Baselines that are not a plain checkout: an empty workspace's, and a persistent workspace's after
each run. Both are commits in a private git dir (see `checkout`), made by Outpost's own identity."""

from __future__ import annotations

import asyncio
from pathlib import Path

from outpost.errors import SandboxError
from outpost.workspaces.checkout import LOCAL_CONFIG, NEUTRAL_ATTRIBUTES, Baseline, exclude_outputs
from outpost.workspaces.git import Git
from outpost.workspaces.remote_failures import last_words

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
"""git's id of the empty tree, which every repository knows without storing it."""
BASELINE_IDENTITY = {"user.name": "Outpost", "user.email": "outpost@localhost"}


class EmptyBaselines:
    """Makes the baselines of workspaces that start empty. The first is made with git (`empty_baseline`);
    later ones are copies of its few small files (the commit object, the index, HEAD, info), which spares
    two git processes, ~5 ms, on every start. They all hold the same commit, as they record the same
    empty tree."""

    def __init__(self, git: Git) -> None:
        self._git = git
        self._made: tuple[str, dict[str, bytes | None]] | None = None
        """The commit, and the private dir's files (None for a directory) by relative path."""

    async def make(self, private: Path) -> Baseline:
        if self._made is None:
            baseline = await empty_baseline(self._git, private)
            self._made = (baseline.commit, await asyncio.to_thread(_snapshot, private))
            return baseline
        commit, files = self._made
        await asyncio.to_thread(_restore, private, files)
        return Baseline(commit, private, private / "objects")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every directory and file under `root` by relative path, parents first."""
    found: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = None if path.is_dir() else path.read_bytes()
    return found


def _restore(root: Path, files: dict[str, bytes | None]) -> None:
    root.mkdir(mode=0o700, parents=True)
    for relative, content in files.items():
        if content is None:
            (root / relative).mkdir()
        else:
            (root / relative).write_bytes(content)


async def empty_baseline(git: Git, private: Path) -> Baseline:
    """A baseline for a workspace that starts empty: a commit of the empty tree in a new private git
    dir `private` (so that capture lists every file the run created, as for a repository)."""
    await asyncio.to_thread(_init_private_dir, private)
    commit = await advance_baseline(git, private, None, EMPTY_TREE)
    return Baseline(commit, private, private / "objects")


async def advance_baseline(git: Git, git_dir: Path, parent: str | None, tree: str) -> str:
    """Make a commit of `tree` (on `parent`, if any) the private git dir's HEAD, with an index that
    matches it; the commit's id."""
    parents = ["-p", parent] if parent else []
    commit = await private_git(git, git_dir, ["commit-tree", *parents, "-m", "workspace state", tree])
    await private_git(git, git_dir, ["read-tree", "--reset", commit], index=git_dir / "index")
    await asyncio.to_thread((git_dir / "HEAD").write_text, f"{commit}\n")
    return commit


async def head_commit(git: Git, git_dir: Path) -> str:
    return await private_git(git, git_dir, ["rev-parse", "--verify", "HEAD^{commit}"])


async def private_git(git: Git, git_dir: Path, args: list[str], index: Path | None = None) -> str:
    """`git <args>` in a private git dir; its output. Raises SandboxError."""
    result = await git.run(
        args, git_dir=git_dir, config={**LOCAL_CONFIG, **BASELINE_IDENTITY}, index_file=index,
        timeout_s=git.settings.local_timeout_s,
    )  # fmt: skip
    if not result.ok:
        raise SandboxError(f"cannot record the workspace's baseline: {last_words(result)}")
    return result.stdout.decode().strip()


def _init_private_dir(private: Path) -> None:
    private.mkdir(mode=0o700, parents=True)
    for sub in ("objects/info", "objects/pack", "refs/heads", "refs/tags", "info"):
        (private / sub).mkdir(parents=True)
    (private / "HEAD").write_text("ref: refs/heads/main\n")
    (private / "info" / "attributes").write_text(NEUTRAL_ATTRIBUTES)
    exclude_outputs(private)
