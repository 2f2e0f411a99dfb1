"""Saving a workspace writes only what changed, makes the saved tree an exact copy, and is all or nothing:
a save that fails or is cut off at any step is rolled back to the earlier tree."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from outpost.worker import tree_sync
from outpost.worker.persistent import SAVING, PersistentStore
from outpost.worker.tree_sync import apply_sync, discard_undo, plan_sync, roll_back
from tests.git_repos import local_git, tree_listing, write_files

START = {
    "README.md": "hello\n",
    "src/app.py": "print('hi')\n",
    "src/keep/a.txt": "a\n",
    "run.sh:x": "#!/bin/sh\n",
    "link": ("symlink", "README.md"),
    "becomes-dir": "a file first\n",
    "becomes-file/inner.txt": "inner\n",
    "gone/deep/file.txt": "gone\n",
    "node_modules/pkg/index.js": "ignored by git, kept by saves\n",
}


def _ctime_now(root: Path) -> int:
    probe = root / "probe"
    probe.write_bytes(b"")
    try:
        return os.lstat(probe).st_ctime_ns
    finally:
        probe.unlink()


def _saved(tmp_path: Path) -> tuple[Path, Path, int]:
    """A workspace and its saved copy, identical, and a ctime mark taken after both were written."""
    work, saved = tmp_path / "work", tmp_path / "saved"
    work.mkdir()
    write_files(work, START)
    shutil.copytree(work, saved, symlinks=True)
    return work, saved, _ctime_now(tmp_path)


def _edit(work: Path) -> None:
    write_files(work, {
        "README.md": "hello, changed\n",
        "new/dir/file.txt": "new\n",
        "link": ("symlink", "/etc/passwd"),
        "becomes-dir": None,
        "becomes-file/inner.txt": None,
    })  # fmt: skip
    (work / "becomes-dir").mkdir()
    (work / "becomes-dir" / "x.txt").write_text("x\n")
    (work / "becomes-file").rmdir()
    (work / "becomes-file").write_text("now a file\n")
    shutil.rmtree(work / "gone")
    (work / "src" / "keep").chmod(0o750)


def test_an_unchanged_tree_plans_nothing(tmp_path: Path) -> None:
    work, saved, mark = _saved(tmp_path)
    plan = plan_sync(work, saved, mark)
    assert (plan.remove, plan.make_dirs, plan.copy, plan.chmod_dirs, plan.write_bytes) == ([], [], [], [], 0)
    assert plan.source_bytes > 0


def test_a_sync_makes_an_exact_copy_and_leaves_unchanged_files_alone(tmp_path: Path) -> None:
    work, saved, mark = _saved(tmp_path)
    _edit(work)
    untouched = os.lstat(saved / "src" / "keep" / "a.txt").st_ino
    plan = plan_sync(work, saved, mark)
    assert {path for path, _ in plan.copy} == {
        b"README.md", b"new/dir/file.txt", b"link", b"becomes-dir/x.txt", b"becomes-file",
    }  # fmt: skip
    apply_sync(work, saved, plan, tmp_path / "undo")
    discard_undo(tmp_path / "undo")
    assert tree_listing(saved) == tree_listing(work)
    assert os.readlink(saved / "link") == "/etc/passwd"  # copied as a link, never followed
    assert (os.lstat(saved / "src" / "keep").st_mode & 0o777) == 0o750
    assert os.lstat(saved / "src" / "keep" / "a.txt").st_ino == untouched
    assert not (tmp_path / "undo").exists()


def test_a_rewrite_that_forges_size_and_mtime_is_still_saved(tmp_path: Path) -> None:
    work, saved, mark = _saved(tmp_path)
    target = work / "src" / "app.py"
    before = os.lstat(target)
    target.write_text("print('xx')\n")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    plan = plan_sync(work, saved, mark)
    assert plan.copy == [(b"src/app.py", True)]


def test_a_symlinked_directory_in_the_saved_tree_is_replaced_not_entered(tmp_path: Path) -> None:
    work, saved, mark = _saved(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("must survive\n")
    (saved / "src" / "keep").rename(tmp_path / "old-keep")
    (saved / "src" / "keep").symlink_to(outside)
    plan = plan_sync(work, saved, mark)
    apply_sync(work, saved, plan, tmp_path / "undo")
    discard_undo(tmp_path / "undo")
    assert (outside / "precious.txt").read_text() == "must survive\n"
    assert tree_listing(saved) == tree_listing(work)


@pytest.mark.parametrize("fail_at", [0, 1, 4, 7, 9])
def test_a_save_that_fails_part_way_rolls_back_to_the_earlier_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    work, saved, mark = _saved(tmp_path)
    before = tree_listing(saved)
    _edit(work)
    plan = plan_sync(work, saved, mark)
    real_apply, calls = tree_sync._apply, []

    def failing_apply(*args: object) -> None:
        calls.append(args)
        if len(calls) > fail_at:
            raise OSError(28, "No space left on device")
        real_apply(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(tree_sync, "_apply", failing_apply)
    with pytest.raises(OSError, match="No space"):
        apply_sync(work, saved, plan, tmp_path / "undo")
    assert tree_listing(saved) == before
    assert not (tmp_path / "undo").exists()


def test_a_save_cut_off_by_a_crash_is_rolled_back_from_its_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, saved, mark = _saved(tmp_path)
    before = tree_listing(saved)
    _edit(work)
    plan = plan_sync(work, saved, mark)
    monkeypatch.setattr(tree_sync, "_apply", _dies_after(5, tree_sync._apply))
    monkeypatch.setattr(tree_sync, "roll_back", lambda *_: None)  # a dead worker rolls nothing back
    with pytest.raises(KeyboardInterrupt):
        apply_sync(work, saved, plan, tmp_path / "undo")
    assert tree_listing(saved) != before
    monkeypatch.undo()
    roll_back(saved, tmp_path / "undo")
    assert tree_listing(saved) == before
    assert not (tmp_path / "undo").exists()


def test_a_persistent_workspace_whose_save_was_cut_off_comes_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "persistent" / "tenant" / "ws"
    work, _, _ = _saved(tmp_path)
    (home / "git").mkdir(parents=True)
    shutil.copytree(work, home / "tree", symlinks=True)
    before = tree_listing(home / "tree")
    (home / "git" / "HEAD").write_text("new-commit\n")  # the save got as far as advancing HEAD
    (home / SAVING).write_text("old-commit\n")
    mark = _ctime_now(tmp_path)
    _edit(work)
    monkeypatch.setattr(tree_sync, "roll_back", lambda *_: None)
    monkeypatch.setattr(tree_sync, "_apply", _dies_after(3, tree_sync._apply))
    with pytest.raises(KeyboardInterrupt):
        apply_sync(work, home / "tree", plan_sync(work, home / "tree", mark), home / "undo")
    monkeypatch.undo()
    assert PersistentStore(tmp_path / "persistent", local_git(tmp_path)).exists("tenant", "ws")
    assert tree_listing(home / "tree") == before
    assert (home / "git" / "HEAD").read_text() == "old-commit\n"
    assert sorted(path.name for path in home.iterdir()) == ["git", "tree"]


def _dies_after(count: int, apply: Callable[..., None]) -> Callable[..., None]:
    calls: list[object] = []

    def dying(*args: object) -> None:
        calls.append(args)
        if len(calls) > count:
            raise KeyboardInterrupt  # stands for the worker dying
        apply(*args)

    return dying
