"""A run's captured changes are pushed, host-side, as one commit on top of its baseline, to a branch of
a real repository (local, and over smart HTTP with Basic auth): never forced, never to a protected
branch, never running a hook, and never showing the credential."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from outpost.errors import Conflict, InvalidInput
from outpost.workspaces.capture import Changes
from outpost.workspaces.checkout import checkout
from outpost.workspaces.git import Git, HttpCredential
from outpost.workspaces.mirrors import MirrorCache
from outpost.workspaces.push import PushResult, check_push_branch, push_changes
from outpost.workspaces.settings import GitSettings
from tests.git_http_server import GitHttpServer
from tests.git_repos import Origin, Workspace, git, local_git, write_files

SECRET = "s3cret-pass"
AUTHOR = ("Outpost Run", "run@example.org")
TREE = {"README.md": "hello\n", "src/app.py": "print('hi')\n"}


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    origin = Origin(tmp_path / "served")
    origin.commit(TREE)
    return origin


@pytest.fixture
def runner(tmp_path: Path) -> Git:
    return local_git(tmp_path, allow_http=True, allow_private_network=True)


async def start_run(root: Path, runner: Git, origin: Origin, ref: str = "main") -> Workspace:
    """A workspace checked out from `ref` of `origin` through the mirror cache, under `root`."""
    cache = MirrorCache(root.parent / "mirrors", runner)
    resolved = await cache.resolve(origin.url, ref, None, scope="test")
    await cache.settle()
    await cache.close()
    (root / "ws").mkdir(parents=True)
    (root / "out").mkdir()
    baseline = await checkout(runner, resolved, root / "ws", root / "private")
    return Workspace(runner, origin, resolved, baseline, root / "ws", root / "out")


async def push(
    workspace: Workspace,
    changes: Changes,
    branch: str,
    *,
    url: str | None = None,
    credential: str | None = None,
    message: str = "Outpost run\n\nWhat the agent changed.\n",
) -> PushResult:
    return await push_changes(
        workspace.git,
        repo_url=url or workspace.origin.url,
        credential=HttpCredential.parse(credential) if credential is not None else None,
        baseline=workspace.baseline,
        tree=changes.tree,
        branch=branch,
        message=message,
        author=AUTHOR,
    )


def branch_tip(origin: Origin, branch: str) -> str | None:
    tip = git(origin.path, "rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False).strip()
    return tip or None


def commit_fields(repo: Path, commit: str) -> list[str]:
    """Tree, parents, author name and email, committer name and email, then the message as it is."""
    fields = git(repo, "log", "-1", "--format=%T%n%P%n%an%n%ae%n%cn%n%ce", commit).splitlines()
    return [*fields, git(repo, "cat-file", "commit", commit).partition("\n\n")[2]]


def files_snapshot(root: Path) -> dict[str, bytes]:
    """Every file's content (not its mtime: git freshens a pack it finds an object in, a mere utime)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


async def test_the_changes_become_one_commit_on_the_baseline_in_a_new_branch(
    origin: Origin, runner: Git, tmp_path: Path
) -> None:
    workspace = await start_run(tmp_path / "run1", runner, origin)
    mirror_before = files_snapshot(workspace.resolved.mirror_path)
    write_files(workspace.workdir, {"README.md": "hello, changed\n", "new.txt": "new\n"})
    changes = await workspace.capture()
    result = await push(workspace, changes, "outpost/run-1")
    assert result.pushed
    assert result.branch == "outpost/run-1"
    assert result.commit is not None
    assert "created branch 'outpost/run-1'" in result.detail
    assert branch_tip(origin, "outpost/run-1") == result.commit
    assert commit_fields(origin.path, result.commit) == [
        changes.tree, workspace.baseline.commit, *AUTHOR, *AUTHOR, "Outpost run\n\nWhat the agent changed.\n"
    ]  # fmt: skip
    assert git(origin.path, "show", f"{result.commit}:README.md") == "hello, changed\n"
    assert branch_tip(origin, "main") == workspace.baseline.commit
    git(workspace.baseline.git_dir, "cat-file", "-e", f"{result.commit}^{{commit}}")  # kept privately
    assert files_snapshot(workspace.resolved.mirror_path) == mirror_before  # the mirror is never written


async def test_a_newer_run_from_the_pushed_branch_fast_forwards_it(
    origin: Origin, runner: Git, tmp_path: Path
) -> None:
    first_run = await start_run(tmp_path / "run1", runner, origin)
    write_files(first_run.workdir, {"a.txt": "first\n"})
    first = await push(first_run, await first_run.capture(), "outpost/topic")
    second_run = await start_run(tmp_path / "run2", runner, origin, ref="outpost/topic")
    assert second_run.baseline.commit == first.commit
    write_files(second_run.workdir, {"a.txt": "second\n"})
    changes = await second_run.capture()
    second = await push(second_run, changes, "outpost/topic")
    assert second.pushed
    assert "fast-forwarded branch 'outpost/topic'" in second.detail
    assert second.commit is not None
    assert branch_tip(origin, "outpost/topic") == second.commit
    assert commit_fields(origin.path, second.commit)[:2] == [changes.tree, first.commit]


@pytest.mark.parametrize("mirrored", [True, False], ids=["tip-in-the-mirror", "tip-unknown-locally"])
async def test_a_branch_that_moved_elsewhere_is_a_conflict_and_keeps_its_commits(
    origin: Origin, runner: Git, tmp_path: Path, mirrored: bool
) -> None:
    if mirrored:
        taken = origin.commit({"other.txt": "someone else\n"}, branch="outpost/taken")
    workspace = await start_run(tmp_path / "run", runner, origin)
    if not mirrored:
        taken = origin.commit({"other.txt": "someone else\n"}, branch="outpost/taken")
    write_files(workspace.workdir, {"README.md": "mine\n"})
    changes = await workspace.capture()
    with pytest.raises(
        Conflict, match=r"branch 'outpost/taken' of .* has commits this run does not build on"
    ):
        await push(workspace, changes, "outpost/taken")
    assert branch_tip(origin, "outpost/taken") == taken


async def test_a_run_that_changed_nothing_pushes_nothing_and_contacts_no_remote(
    origin: Origin, runner: Git, tmp_path: Path
) -> None:
    workspace = await start_run(tmp_path / "run", runner, origin)
    changes = await workspace.capture()
    assert changes.tree == git(origin.path, "rev-parse", f"{workspace.baseline.commit}^{{tree}}").strip()
    with GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}") as server:
        url = server.url("origin.git")
        result = await push(workspace, changes, "outpost/idle", url=url, credential=f"alice:{SECRET}")
    assert (result.commit, result.branch, result.pushed) == (None, "outpost/idle", False)
    assert "changed nothing" in result.detail
    assert server.state.authorizations == []
    assert branch_tip(origin, "outpost/idle") is None


async def test_over_http_with_basic_auth_the_branch_is_pushed(
    origin: Origin, runner: Git, tmp_path: Path
) -> None:
    git(origin.path, "config", "http.receivepack", "true")  # http-backend serves pushes only when told
    workspace = await start_run(tmp_path / "run", runner, origin)
    write_files(workspace.workdir, {"src/app.py": "print('changed')\n"})
    changes = await workspace.capture()
    with GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}") as server:
        url = server.url("origin.git")
        result = await push(workspace, changes, "outpost/http", url=url, credential=f"alice:{SECRET}")
    assert result.pushed
    assert result.commit is not None
    assert branch_tip(origin, "outpost/http") == result.commit
    assert commit_fields(origin.path, result.commit)[:2] == [changes.tree, workspace.baseline.commit]
    assert set(server.state.authorizations) == {
        HttpCredential.parse(f"alice:{SECRET}").header.removeprefix("Authorization: ")
    }


@pytest.mark.parametrize("credential", [f"alice:wrong-{SECRET}", None, f"wrong-{SECRET}"])
async def test_over_http_a_wrong_or_missing_credential_is_a_clear_error_that_hides_it(
    origin: Origin, runner: Git, tmp_path: Path, credential: str | None
) -> None:
    git(origin.path, "config", "http.receivepack", "true")
    workspace = await start_run(tmp_path / "run", runner, origin)
    write_files(workspace.workdir, {"README.md": "changed\n"})
    changes = await workspace.capture()
    server = GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}")
    with server, pytest.raises(InvalidInput, match="refused the credential, or needs one") as refused:
        await push(workspace, changes, "outpost/x", url=server.url("origin.git"), credential=credential)
    assert SECRET not in str(refused.value)
    assert "wrong" not in str(refused.value)
    assert branch_tip(origin, "outpost/x") is None


async def test_over_http_a_credential_that_cannot_write_is_told_so(
    origin: Origin, runner: Git, tmp_path: Path
) -> None:
    workspace = await start_run(tmp_path / "run", runner, origin)  # http.receivepack off: 403 on push
    write_files(workspace.workdir, {"README.md": "changed\n"})
    changes = await workspace.capture()
    server = GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}")
    with server, pytest.raises(InvalidInput, match=r"denied the push \(HTTP 403\)") as denied:
        await push(
            workspace, changes, "outpost/x", url=server.url("origin.git"), credential=f"alice:{SECRET}"
        )
    assert SECRET not in str(denied.value)


async def test_hooks_planted_in_the_workspace_or_the_private_dir_never_run(
    origin: Origin, runner: Git, tmp_path: Path
) -> None:
    workspace = await start_run(tmp_path / "run", runner, origin)
    marker = tmp_path / "marker"
    hook = f"#!/bin/sh\ntouch '{marker}'\n"
    for hooks in (workspace.workdir / ".git" / "hooks", workspace.baseline.git_dir / "hooks"):
        for name in ("pre-commit", "commit-msg", "post-commit", "pre-push", "reference-transaction"):
            write_files(hooks, {f"{name}:x": hook})
    workspace.agent_git("commit", "-q", "--allow-empty", "-m", "armed?", check=False)
    assert marker.exists(), "the trap is not armed: the test would prove nothing"
    marker.unlink()
    write_files(workspace.workdir, {"README.md": "changed\n"})
    result = await push(workspace, await workspace.capture(), "outpost/hooked")
    assert result.pushed
    assert not marker.exists()


@pytest.mark.parametrize(
    "branch", ["main", "Master", "release/1.0", "-x", "a..b", "refs/heads/x", "foo.lock", ""]
)
async def test_protected_and_malformed_branches_are_refused_before_anything_is_pushed(
    origin: Origin, runner: Git, tmp_path: Path, branch: str
) -> None:
    workspace = await start_run(tmp_path / "run", runner, origin)
    write_files(workspace.workdir, {"README.md": "changed\n"})
    changes = await workspace.capture()
    refs_before = git(origin.path, "for-each-ref")
    with pytest.raises(InvalidInput) as refused:
        await push(workspace, changes, branch)
    assert refused.value.field == "push.branch"
    assert git(origin.path, "for-each-ref") == refs_before


@pytest.mark.parametrize(
    "branch",
    ["feature/x", "a@b", "x-1.2", "", "-x", "a..b", "foo.lock", "foo.lock/bar", "/x", "x/", "a//b", ".x",
     "x/.y", "x.", "a b", "a@{b", "HEAD", "a~1", "a^", "a:b", "a?", "a*", "a[b", "a\\b", "a\x7fb"],
)  # fmt: skip
def test_check_push_branch_agrees_with_git_on_what_a_branch_name_is(branch: str) -> None:
    by_git = subprocess.run(["git", "check-ref-format", "--branch", branch], capture_output=True, check=False)
    try:
        check_push_branch(branch, GitSettings(protected_branches=[]))
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == (by_git.returncode == 0)
