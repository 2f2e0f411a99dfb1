"""Whatever an agent does to its workspace, capturing it on the host runs none of its commands, follows
none of its links, writes nothing outside, and still records what changed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.git_repos import checked_out, git

TREE = {"README.md": "hello\n", "src/app.py": "print('hi')\n"}
Tamper = Callable[[Path, Path], tuple[str, ...] | None]
"""Plants a trap in a workspace that would create `marker`; returns the git command (run inside the
workspace) that springs it, proving the trap is armed, or None when there is no such command."""


def _script(path: Path, marker: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ntouch '{marker}'\ncat\n")
    path.chmod(0o755)
    return str(path)


def _hooks(workdir: Path, marker: Path) -> tuple[str, ...]:
    for hook in ("pre-commit", "post-index-change", "post-checkout", "reference-transaction", "pre-auto-gc"):
        _script(workdir / ".git" / "hooks" / hook, marker)
    return ("commit", "-q", "--allow-empty", "-m", "x")


def _hooks_path(workdir: Path, marker: Path) -> tuple[str, ...]:
    hooks = workdir / "my-hooks"
    hooks.mkdir()
    _script(hooks / "post-index-change", marker)
    _script(hooks / "pre-commit", marker)
    _append_config(workdir, f"[core]\n\thooksPath = {hooks}\n")
    return ("commit", "-q", "--allow-empty", "-m", "x")


def _fsmonitor(workdir: Path, marker: Path) -> tuple[str, ...]:
    script = _script(workdir.parent / "fsmonitor.sh", marker)
    _append_config(workdir, f"[core]\n\tfsmonitor = {script}\n")
    return ("status",)


def _filters(workdir: Path, marker: Path) -> tuple[str, ...]:
    script = _script(workdir.parent / "filter.sh", marker)
    _append_config(workdir, f'[filter "evil"]\n\tclean = {script}\n\tsmudge = {script}\n\trequired = true\n'
                            f'[diff "evil"]\n\ttextconv = {script}\n\tcommand = {script}\n')  # fmt: skip
    (workdir / ".gitattributes").write_text("* filter=evil diff=evil\n")
    return ("add", "-A")


def _alias_and_include(workdir: Path, marker: Path) -> tuple[str, ...]:
    included = workdir.parent / "included.cfg"
    included.write_text(f"[core]\n\tfsmonitor = {_script(workdir.parent / 'inc.sh', marker)}\n")
    _append_config(workdir, f"[include]\n\tpath = {included}\n[alias]\n\tadd = !touch '{marker}'\n")
    return ("status",)


def _dot_git_is_a_file(workdir: Path, marker: Path) -> None:
    shutil.rmtree(workdir / ".git")
    (workdir / ".git").write_text("gitdir: /\n")


def _dot_git_is_a_symlink_to_root(workdir: Path, marker: Path) -> None:
    shutil.rmtree(workdir / ".git")
    (workdir / ".git").symlink_to("/")


def _append_config(workdir: Path, text: str) -> None:
    with (workdir / ".git" / "config").open("a") as config:
        config.write(text)


@pytest.mark.parametrize(
    "tamper",
    [
        _hooks,
        _hooks_path,
        _fsmonitor,
        _filters,
        _alias_and_include,
        _dot_git_is_a_file,
        _dot_git_is_a_symlink_to_root,
    ],
)
async def test_a_tampered_workspace_git_runs_nothing_on_the_host(tmp_path: Path, tamper: Tamper) -> None:
    workspace = await checked_out(tmp_path, TREE)
    marker = tmp_path / "marker"
    springs = tamper(workspace.workdir, marker)
    if springs is not None:
        workspace.agent_git(*springs, check=False)
        assert marker.exists(), "the trap is not armed: the test would prove nothing"
    (workspace.workdir / "README.md").write_text("changed\n")
    marker.unlink(missing_ok=True)
    changes = await workspace.capture()
    assert not marker.exists()
    paths = {change.path for change in changes.files}
    assert "README.md" in paths
    assert not any(path.startswith(".git/") or path == ".git" for path in paths)
    assert b"changed" in changes.patch_path.read_bytes()


async def test_a_symlink_to_a_host_file_is_captured_as_a_link(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    (workspace.workdir / "leak").symlink_to("/etc/passwd")
    (workspace.workdir / "leakdir").symlink_to("/etc")
    patch = (await workspace.capture()).patch_path.read_bytes()
    assert b"new file mode 120000" in patch
    assert b"+/etc/passwd" in patch
    assert b"root:" not in patch


async def test_a_hardlink_to_an_outside_file_is_read_but_never_modified(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    outside = tmp_path / "outside-secret.txt"
    outside.write_text("outside content\n")
    os.link(outside, workspace.workdir / "hard.txt")
    before = outside.stat()
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["hard.txt"]
    assert b"+outside content" in changes.patch_path.read_bytes()
    after = outside.stat()
    assert outside.read_text() == "outside content\n"
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns, after.st_nlink) == (
        before.st_ino, before.st_mtime_ns, before.st_ctime_ns, 2
    )  # fmt: skip


async def test_nested_repositories_are_left_out_with_a_warning(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    real = workspace.workdir / "vendor" / "real"
    real.mkdir(parents=True)
    git(real, "init", "-q")
    git(real, "commit", "-q", "--allow-empty", "-m", "nested")
    pointing_out = workspace.workdir / "vendor" / "out"
    pointing_out.mkdir()
    (pointing_out / ".git").write_text(f"gitdir: {workspace.origin.path}\n")  # another repository's HEAD
    (pointing_out / "file.txt").write_text("x\n")
    (workspace.workdir / "README.md").write_text("changed\n")
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["README.md"]
    assert any("vendor/real: a nested git repository" in warning for warning in changes.warnings)
    patch = changes.patch_path.read_bytes()
    nested_head = git(real, "rev-parse", "HEAD").strip().encode()
    assert b"Subproject commit" not in patch
    assert nested_head not in patch
    assert workspace.baseline.commit.encode() not in patch  # what vendor/out's HEAD (the origin's) names
    tree = git(workspace.baseline.git_dir, "ls-tree", "-r", "--full-tree", changes.tree)
    assert "160000" not in tree  # no gitlink, so none in a pushed commit either
    assert "vendor/" not in tree


async def test_fifos_are_removed_so_the_capture_cannot_hang(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    os.mkfifo(workspace.workdir / ".gitignore")  # git opens it without checking its type
    nested = workspace.workdir / "sub" / ".git"
    for name in ("objects", "refs"):
        (nested / name).mkdir(parents=True)
    os.mkfifo(nested / "HEAD")  # so does its look for a nested repository
    (workspace.workdir / "README.md").write_text("changed\n")
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["README.md"]
    removed = {f"{name}: a FIFO or other special file, removed" for name in (".gitignore", "sub/.git/HEAD")}
    assert removed <= set(changes.warnings)


async def test_an_uppercase_dot_git_is_reported_and_the_rest_captured(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    (workspace.workdir / ".GIT").mkdir()
    (workspace.workdir / ".GIT" / "config").write_text("x\n")
    (workspace.workdir / "README.md").write_text("changed\n")
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["README.md"]
    assert any(".GIT/config" in warning for warning in changes.warnings)
