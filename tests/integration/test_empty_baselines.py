"""Baselines of workspaces that start empty: the first is made with git, later ones are copies of its
files that git reads the same, and a run's changes are captured against them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from outpost.workspaces.baselines import EMPTY_TREE, EmptyBaselines
from outpost.workspaces.capture import capture_changes
from outpost.workspaces.git import Git
from outpost.workspaces.raw_diff import ChangeKind
from tests.git_repos import git, local_git


class CountingGit(Git):
    """Counts the git processes run."""

    runs = 0

    async def run(self, args: Any, **options: Any) -> Any:  # type: ignore[override]
        CountingGit.runs += 1
        return await super().run(args, **options)


@pytest.fixture
def runner(tmp_path: Path) -> CountingGit:
    CountingGit.runs = 0
    base = local_git(tmp_path)
    return CountingGit(base.settings, tmp_path / "git-home")


async def test_later_baselines_are_copies_made_without_git_that_git_reads_as_the_empty_tree(
    runner: CountingGit, tmp_path: Path
) -> None:
    baselines = EmptyBaselines(runner)
    first = await baselines.make(tmp_path / "first")
    ran_for_first = CountingGit.runs
    second = await baselines.make(tmp_path / "second")
    assert ran_for_first > 0
    assert CountingGit.runs == ran_for_first  # no git process for the copy
    assert second.commit == first.commit
    assert second.git_dir == tmp_path / "second"
    for baseline in (first, second):
        head = git(tmp_path, "--git-dir", str(baseline.git_dir), "rev-parse", "HEAD^{tree}").strip()
        assert head == EMPTY_TREE
        assert git(tmp_path, "--git-dir", str(baseline.git_dir), "cat-file", "-t", "HEAD").strip() == "commit"
        listed = git(tmp_path, "--git-dir", str(baseline.git_dir), "ls-files", "--stage")
        assert listed == ""  # its index matches the empty tree
    assert (second.git_dir.stat().st_mode & 0o777) == 0o700


async def test_a_run_in_a_copied_baseline_has_its_files_captured_as_added(
    runner: CountingGit, tmp_path: Path
) -> None:
    baselines = EmptyBaselines(runner)
    await baselines.make(tmp_path / "first")
    copied = await baselines.make(tmp_path / "private")
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    (workdir / "made.txt").write_text("by the run\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    changes = await capture_changes(runner, copied, workdir, out_dir)
    assert [(change.path, change.kind) for change in changes.files] == [("made.txt", ChangeKind.ADDED)]
