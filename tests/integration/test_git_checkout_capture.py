"""A workspace checked out from a mirror is the commit's tree with a working `.git`; capturing it records
exactly what changed, as a patch that reproduces the workspace when applied to the commit."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from outpost.errors import PayloadTooLarge
from outpost.workspaces.capture import capture_changes
from outpost.workspaces.checkout import checkout
from outpost.workspaces.mirrors import MirrorCache
from outpost.workspaces.raw_diff import ChangeKind
from tests.git_repos import Origin, checked_out, fast_import, git, local_git, tree_listing, write_files

TREE = {
    "README.md": "hello\n",
    "src/app.py": "print('hi')\n",
    "run.sh:x": "#!/bin/sh\necho hi\n",
    "link": ("symlink", "README.md"),
    "dir/nested/deep.txt": "deep\n",
    "data.bin": bytes(range(256)) * 4,
    "to-delete.txt": "bye\n",
    "to-rename.txt": "a file long enough for git to see it was renamed\n" * 5,
    "mode.txt": "mode\n",
}


async def test_checkout_writes_the_tree_with_its_modes_and_symlinks(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    assert tree_listing(workspace.workdir) == tree_listing(workspace.origin.work)
    assert os.readlink(workspace.workdir / "link") == "README.md"
    assert os.stat(workspace.workdir / "run.sh").st_mode & 0o111
    assert not os.stat(workspace.workdir / "mode.txt").st_mode & 0o111
    assert workspace.baseline.git_dir == tmp_path / "private"
    assert workspace.baseline.objects_path == workspace.resolved.objects_path.resolve()


async def test_the_workspace_git_works_for_the_agent(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    packs_before = sorted((workspace.resolved.objects_path / "pack").iterdir())
    assert workspace.agent_git("status", "--porcelain") == ""
    assert workspace.agent_git("rev-parse", "HEAD").strip() == workspace.baseline.commit
    assert workspace.agent_git("log", "--format=%s") == "change\n"
    (workspace.workdir / "README.md").write_text("changed by the agent\n")
    assert workspace.agent_git("status", "--porcelain") == " M README.md\n"
    workspace.agent_git("commit", "-qam", "agent's commit")
    assert workspace.agent_git("status", "--porcelain") == ""
    assert sorted((workspace.resolved.objects_path / "pack").iterdir()) == packs_before  # mirror untouched


async def test_a_capture_without_changes_is_empty(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    changes = await workspace.capture()
    assert (changes.files, changes.patch_bytes, changes.warnings) == ((), 0, ())
    assert changes.patch_path.read_bytes() == b""
    assert changes.base_commit == workspace.baseline.commit
    baseline_tree = git(workspace.origin.path, "rev-parse", f"{workspace.baseline.commit}^{{tree}}")
    assert changes.tree == baseline_tree.strip()


async def test_capture_records_edits_adds_deletes_renames_binaries_and_modes(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    write_files(workspace.workdir, {
        "README.md": "hello, changed\n",
        "new/file.txt": "new\n",
        "to-delete.txt": None,
        "data.bin": os.urandom(2048),
        "link": ("symlink", "src/app.py"),
        "src/app.py": ("symlink", "../README.md"),
    })  # fmt: skip
    (workspace.workdir / "to-rename.txt").rename(workspace.workdir / "renamed.txt")
    (workspace.workdir / "mode.txt").chmod(0o755)
    changes = await workspace.capture()
    kinds = {change.path: change.kind for change in changes.files}
    assert kinds == {
        "README.md": ChangeKind.MODIFIED,
        "new/file.txt": ChangeKind.ADDED,
        "to-delete.txt": ChangeKind.DELETED,
        "data.bin": ChangeKind.MODIFIED,
        "link": ChangeKind.MODIFIED,
        "src/app.py": ChangeKind.TYPE_CHANGED,
        "renamed.txt": ChangeKind.RENAMED,
        "mode.txt": ChangeKind.MODIFIED,
    }
    mode = next(change for change in changes.files if change.path == "mode.txt")
    assert (mode.old_mode, mode.new_mode) == (0o100644, 0o100755)
    renamed = next(change for change in changes.files if change.path == "renamed.txt")
    assert renamed.old_path == "to-rename.txt"
    assert b"GIT binary patch" in changes.patch_path.read_bytes()
    assert changes.patch_bytes == changes.patch_path.stat().st_size
    workspace.assert_patch_reproduces_workspace(changes, tmp_path)


async def test_names_with_newlines_spaces_unicode_and_invalid_utf8_survive(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    names = [b"with\nnewline", b"with space", "ünïcødé.txt".encode(), b"bad\xffname", b'tab\tand "quote"']
    for name in names:
        _write_raw(os.fsencode(workspace.workdir) + b"/" + name, b"x\n")
    changes = await workspace.capture()
    assert sorted(change.path_bytes for change in changes.files) == sorted(names)
    shown = {change.display_path for change in changes.files}
    assert {"with\\nnewline", "bad\\xffname", "ünïcødé.txt"} <= shown
    assert all(change.kind == ChangeKind.ADDED for change in changes.files)
    workspace.assert_patch_reproduces_workspace(changes, tmp_path)


async def test_attributes_in_the_tree_transform_nothing(tmp_path: Path) -> None:
    tree = {".gitattributes": "* text eol=crlf\n*.txt ident\n", "a.txt": "$Id$\nline\n"}
    workspace = await checked_out(tmp_path, tree)
    assert (workspace.workdir / "a.txt").read_bytes() == b"$Id$\nline\n"  # no CRLF, no ident expansion
    assert (await workspace.capture()).files == ()
    (workspace.workdir / "a.txt").write_bytes(b"$Id$\r\nline\r\n")
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["a.txt"]
    assert b"line\r\n" in changes.patch_path.read_bytes()


async def test_outputs_stay_out_even_when_a_gitignore_re_includes_them(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    (workspace.workdir / ".gitignore").write_text("!/.outpost/outputs\n!.outpost/\n!*\n")
    outputs = workspace.workdir / ".outpost" / "outputs"
    outputs.mkdir(parents=True)
    (outputs / "report.md").write_text("an artifact, not a change\n")
    (workspace.workdir / ".outpost" / "beside.txt").write_text("a change\n")
    (workspace.workdir / "to-rename.txt").rename(outputs / "moved.txt")  # a removal, not a rename
    changes = await workspace.capture()
    assert sorted((change.path, change.kind) for change in changes.files) == [
        (".gitignore", ChangeKind.ADDED), (".outpost/beside.txt", ChangeKind.ADDED),
        ("to-rename.txt", ChangeKind.DELETED),
    ]  # fmt: skip
    assert b"report.md" not in changes.patch_path.read_bytes()


async def test_a_patch_over_the_limit_is_refused(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE, local_git(tmp_path, max_patch_bytes=4096))
    (workspace.workdir / "big.bin").write_bytes(os.urandom(50_000))
    with pytest.raises(PayloadTooLarge, match="larger than 4096 bytes"):
        await workspace.capture()
    assert not (workspace.out_dir / "changes.patch").exists()


async def test_checkout_refuses_a_used_workdir_or_a_private_dir_inside_it(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    runner, resolved = workspace.git, workspace.resolved
    with pytest.raises(ValueError, match="empty directory"):
        await checkout(runner, resolved, workspace.workdir, tmp_path / "other-private")
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(ValueError, match="outside the workspace"):
        await checkout(runner, resolved, fresh, fresh / "private")
    with pytest.raises(ValueError, match="missing or empty"):
        await checkout(runner, resolved, fresh, workspace.baseline.git_dir)


async def test_twenty_thousand_files_check_out_and_capture_correctly(tmp_path: Path) -> None:
    origin = Origin(tmp_path / "origin")
    files = {f"src/d{i // 100:03d}/f{i:05d}.txt": f"file {i}\n".encode() for i in range(20_000)}
    commit = fast_import(origin.path, [files])
    runner = local_git(tmp_path)
    cache = MirrorCache(tmp_path / "mirrors", runner)
    resolved = await cache.resolve(origin.url, "main", None, scope="test")
    await cache.close()
    assert resolved.commit == commit
    workdir, out_dir = tmp_path / "ws", tmp_path / "out"
    workdir.mkdir()
    out_dir.mkdir()
    baseline = await checkout(runner, resolved, workdir, tmp_path / "private")
    written = {path.relative_to(workdir).as_posix() for path in (workdir / "src").rglob("*.txt")}
    assert written == set(files)
    assert sorted(os.listdir(workdir)) == [".git", "src"]
    assert (workdir / "src/d123/f12345.txt").read_bytes() == b"file 12345\n"
    assert git(workdir, "status", "--porcelain") == ""
    for name in list(files)[::20]:
        (workdir / name).write_text("changed\n")
    changes = await capture_changes(runner, baseline, workdir, out_dir)
    assert len(changes.files) == 1000
    assert all(change.kind == ChangeKind.MODIFIED for change in changes.files)


def _write_raw(path: bytes, content: bytes) -> None:
    """Write a file named by raw bytes (some are not valid UTF-8)."""
    with open(path, "wb") as file:
        file.write(content)
