"""Real git repositories for tests: an origin (a bare repository) fed from a work repository by pushes,
and the same git commands a developer would type, isolated from the machine's git config."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from outpost.workspaces.capture import Changes, capture_changes
from outpost.workspaces.checkout import Baseline, checkout
from outpost.workspaces.git import Git
from outpost.workspaces.mirrors import MirrorCache, ResolvedRef
from outpost.workspaces.settings import GitSettings

File = bytes | str | tuple[str, str]
"""Content of a file (text or bytes), or `("symlink", target)`."""


def git_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.org",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.org",
        "LC_ALL": "C",
    }


def git(cwd: Path, *args: str, env: Mapping[str, str] | None = None, check: bool = True) -> str:
    """Run git in `cwd` with a config-free environment; its stdout."""
    home = cwd.parent if cwd.is_dir() else cwd
    done = subprocess.run(["git", *args], cwd=cwd, env={**git_env(home), **(env or {})},
                          capture_output=True, check=False)  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode(errors="surrogateescape")


def write_files(root: Path, files: Mapping[str, File | None]) -> None:
    """Write (or with None, delete) each file under `root`; `name:x` in a key makes it executable."""
    for key, content in files.items():
        name, _, flag = key.partition(":")
        path = root / name
        if content is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or path.exists():
            path.unlink()
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        else:
            path.write_bytes(content.encode() if isinstance(content, str) else content)
            path.chmod(0o755 if flag == "x" else 0o644)


class Origin:
    """A bare repository at `path` (what resolve is pointed at) and the work repository that feeds it."""

    def __init__(self, root: Path) -> None:
        self.path = root / "origin.git"
        self.work = root / "origin-work"
        self.work.mkdir(parents=True)
        git(self.work, "init", "-q", "-b", "main")
        git(root, "init", "-q", "--bare", str(self.path))
        git(self.path, "symbolic-ref", "HEAD", "refs/heads/main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def commit(self, files: Mapping[str, File | None], message: str = "change", branch: str = "main") -> str:
        """Commit `files` on `branch` (created from the current commit when new) and push it; the new id."""
        if self.head_exists():
            exists = bool(git(self.work, "branch", "--list", branch).strip())
            git(self.work, "checkout", "-q", *([branch] if exists else ["-b", branch]))
        write_files(self.work, files)
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "--allow-empty", "-m", message)
        git(self.work, "push", "-q", "-f", str(self.path), f"{branch}:refs/heads/{branch}")
        return git(self.work, "rev-parse", "HEAD").strip()

    def tag(self, name: str, commit: str) -> None:
        git(self.work, "tag", "-f", name, commit)
        git(self.work, "push", "-q", "-f", str(self.path), f"refs/tags/{name}")

    def head_exists(self) -> bool:
        return bool(git(self.work, "rev-parse", "--verify", "-q", "HEAD", check=False).strip())


def local_git(root: Path, **settings: object) -> Git:
    """A Git runner allowed to use local repositories, with its private home under `root`."""
    return Git(GitSettings.model_validate({"allow_local": True, **settings}), root / "git-home")


def fast_import(repo: Path, commits: Iterable[Mapping[str, bytes]], branch: str = "main") -> str:
    """Commit each mapping of path to content (a whole tree or changes to it) on `branch` of the bare
    `repo` with `git fast-import`, far faster than files and `git add`; the last commit's id."""
    process = subprocess.Popen(["git", "--git-dir", str(repo), "fast-import", "--quiet", "--done"],
                               stdin=subprocess.PIPE, env=git_env(repo.parent))  # fmt: skip
    assert process.stdin is not None
    for number, files in enumerate(commits):
        message = f"commit {number}\n".encode()
        header = b"commit refs/heads/%s\ncommitter Test <test@example.org> %d +0000\n"
        process.stdin.write(header % (branch.encode(), 1_700_000_000 + number))
        process.stdin.write(b"data %d\n%s\n" % (len(message), message))
        for path, content in files.items():
            process.stdin.write(b"M 644 inline %s\ndata %d\n%s\n" % (path.encode(), len(content), content))
    process.stdin.write(b"done\n")
    process.stdin.close()
    assert process.wait() == 0
    return git(repo, "rev-parse", f"refs/heads/{branch}").strip()


def tree_listing(root: Path) -> dict[bytes, tuple[str, bytes | int]]:
    """Every entry under `root` but its top `.git`: path bytes to ("dir", 0), ("link", target) or
    ("file", content + executable flag)."""
    listing: dict[bytes, tuple[str, bytes | int]] = {}
    top = os.fsencode(root)
    for directory, dirs, files in os.walk(top):
        if directory == top and b".git" in dirs:
            dirs.remove(b".git")
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, top)
            if os.path.islink(path):
                listing[relative] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                listing[relative] = ("dir", 0)
            else:
                executable = b"x" if os.stat(path).st_mode & 0o100 else b"-"
                listing[relative] = ("file", executable + Path(os.fsdecode(path)).read_bytes())
    return listing


@dataclass
class Workspace:
    """A workspace checked out from an origin through a real mirror, and where its capture goes."""

    git: Git
    origin: Origin
    resolved: ResolvedRef
    baseline: Baseline
    workdir: Path
    out_dir: Path

    async def capture(self) -> Changes:
        return await capture_changes(self.git, self.baseline, self.workdir, self.out_dir)

    def agent_git(self, *args: str, check: bool = True) -> str:
        """git run inside the workspace, as an agent would (its `.git`, its config)."""
        return git(self.workdir, *args, check=check)

    def assert_patch_reproduces_workspace(self, changes: Changes, root: Path) -> None:
        """Apply the patch to a fresh clone at the baseline: the result must be the workspace's tree."""
        verify = root / "verify"
        git(root, "clone", "-q", "--no-checkout", str(self.origin.path), str(verify))
        git(verify, "checkout", "-q", "--detach", self.baseline.commit)
        if changes.patch_bytes:
            git(verify, "apply", "--index", str(changes.patch_path))
        assert tree_listing(verify) == tree_listing(self.workdir)


async def checked_out(
    root: Path, files: Mapping[str, File | None], git_runner: Git | None = None
) -> Workspace:
    """An origin committing `files`, mirrored, resolved and checked out into `root/ws`."""
    origin = Origin(root / "origin")
    origin.commit(files)
    runner = git_runner or local_git(root)
    cache = MirrorCache(root / "mirrors", runner)
    resolved = await cache.resolve(origin.url, "main", None, scope="test")
    await cache.close()
    workdir, out_dir = root / "ws", root / "out"
    workdir.mkdir()
    out_dir.mkdir()
    baseline = await checkout(runner, resolved, workdir, root / "private")
    return Workspace(runner, origin, resolved, baseline, workdir, out_dir)
