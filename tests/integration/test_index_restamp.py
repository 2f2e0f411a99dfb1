"""Re-stamping a checkout's index after its files changed owner: git then sees them as unchanged without
reading them, and still sees every change a run makes afterwards, even one that forges size and mtime."""

from __future__ import annotations

import os
from pathlib import Path

from outpost.workspaces.index_stat import restamp_index
from outpost.workspaces.raw_diff import ChangeKind
from tests.git_repos import Workspace, checked_out, git

TREE = {
    "README.md": "hello\n",
    "src/app.py": "print('hi')\n",
    "run.sh:x": "#!/bin/sh\necho hi\n",
    "link": ("symlink", "README.md"),
    "empty.txt": "",
    "deep/er/file.txt": "deep\n",
}
FILES = 5  # TREE's entries but the empty file, which git compares by content anyway


def _touch_every_ctime(workdir: Path) -> None:
    """What handing the workspace to a run's uid does to it: a new ctime everywhere, content unchanged
    (a chmod to the same mode stands in for the chown where tests do not run as root)."""
    for directory, _, files in os.walk(workdir):
        if ".git" in Path(directory).relative_to(workdir).parts[:1]:
            continue
        for name in files:
            path = os.path.join(directory, name)
            if os.geteuid() == 0:
                os.lchown(path, 12345, 12345)
            elif not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode & 0o7777)


def _index_written_later(workspace: Workspace) -> None:
    """As for all but the last few files of a real checkout: the index is younger than every file (a
    tiny checkout writes both in the same clock tick, making every entry racily clean)."""
    later = os.stat(workspace.baseline.index_path).st_mtime_ns + 1_000_000_000
    os.utime(workspace.baseline.index_path, ns=(later, later))


def _index_stat(workspace: Workspace) -> dict[str, tuple[int, int, int]]:
    """(ctime s, uid, gid) per path as the private index holds them."""
    listing = git(
        workspace.workdir, f"--git-dir={workspace.baseline.git_dir}", f"--work-tree={workspace.workdir}",
        "ls-files", "--debug",
    )  # fmt: skip
    found: dict[str, tuple[int, int, int]] = {}
    path = ""
    for line in listing.splitlines():
        if not line.startswith(" "):
            path = line
        elif line.strip().startswith("ctime:"):
            found[path] = (int(line.split()[1].split(":")[0]), 0, 0)
        elif line.strip().startswith("uid:"):
            words = line.split()
            found[path] = (found[path][0], int(words[1]), int(words[3]))
    return found


async def test_a_restamped_index_holds_the_files_new_stat_data(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    _index_written_later(workspace)
    _touch_every_ctime(workspace.workdir)
    assert restamp_index(workspace.baseline.index_path, workspace.workdir) == FILES
    for path, (ctime_s, uid, gid) in _index_stat(workspace).items():
        now = os.lstat(workspace.workdir / path)
        if path != "empty.txt":
            assert (ctime_s, uid, gid) == (int(now.st_ctime), now.st_uid, now.st_gid), path
    changes = await workspace.capture()
    assert (changes.files, changes.patch_bytes) == ((), 0)


async def test_changes_after_the_restamp_are_captured_even_with_forged_size_and_mtime(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    _index_written_later(workspace)
    _touch_every_ctime(workspace.workdir)
    assert restamp_index(workspace.baseline.index_path, workspace.workdir) == FILES
    target = workspace.workdir / "src" / "app.py"
    before = os.lstat(target)
    target.write_text("print('xx')\n")  # same size
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    (workspace.workdir / "README.md").write_text("hello again\n")
    changes = await workspace.capture()
    assert {change.path: change.kind for change in changes.files} == {
        "src/app.py": ChangeKind.MODIFIED, "README.md": ChangeKind.MODIFIED,
    }  # fmt: skip
    workspace.assert_patch_reproduces_workspace(changes, tmp_path)


async def test_an_entry_whose_file_changed_before_the_restamp_keeps_its_old_stat(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    _index_written_later(workspace)
    (workspace.workdir / "README.md").write_text("hello, changed!\n")
    assert restamp_index(workspace.baseline.index_path, workspace.workdir) == FILES - 1
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["README.md"]


async def test_an_index_that_is_not_plain_is_left_as_it_was(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    _touch_every_ctime(workspace.workdir)
    index = workspace.baseline.index_path
    original = index.read_bytes()
    index.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # a checksum that does not match
    assert restamp_index(index, workspace.workdir) == 0
    assert index.read_bytes() == original[:-1] + bytes([original[-1] ^ 1])
    index.write_bytes(original[:8])  # truncated
    assert restamp_index(index, workspace.workdir) == 0
    index.write_bytes(original)
    git(workspace.workdir, f"--git-dir={workspace.baseline.git_dir}", "update-index", "--index-version=4")
    version_4 = index.read_bytes()
    assert restamp_index(index, workspace.workdir) == 0
    assert index.read_bytes() == version_4


async def test_racily_clean_entries_are_not_restamped_and_their_changes_are_seen(tmp_path: Path) -> None:
    workspace = await checked_out(tmp_path, TREE)
    target = workspace.workdir / "src" / "app.py"
    written = os.lstat(target).st_mtime_ns
    os.utime(workspace.baseline.index_path, ns=(written, written))  # index and file in one clock tick
    _touch_every_ctime(workspace.workdir)
    restamp_index(workspace.baseline.index_path, workspace.workdir)
    target.write_text("print('xx')\n")  # same size, and in the same tick as the checkout
    os.utime(target, ns=(written, written))
    changes = await workspace.capture()
    assert [change.path for change in changes.files] == ["src/app.py"]
