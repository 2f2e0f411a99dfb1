"""Pushing a run's captured changes to a branch of its repository, host-side: one commit on top of the
baseline, made in the private git dir, pushed without force.

The commit is `git commit-tree` of the captured tree (`Changes.tree`) with the baseline commit as its
parent, so it holds exactly what the capture recorded, whatever the agent committed, rewrote or broke in
the workspace's `.git`. Its author and committer are given as config (`user.name`/`user.email`) and git
may not guess an identity from the host (`user.useConfigOnly`). The new objects go to the private git
dir only; the mirror, shared by the tenant's runs, is never written.

The push goes through the same guards as a fetch (see `mirrors`): the URL policy, the host's checked
addresses pinned for git, the credential as an HTTP header redacted from every message, and hooks off
(`core.hooksPath=/dev/null` on every call, `--no-verify` on top). It is never forced: a branch whose tip
the new commit does not descend from is left alone and the push fails with Conflict.

Which branches a run may push to is decided before a dispatch is accepted (`check_push_branch`): a
name git accepts for a branch, given without `refs/`, and not one of `GitSettings.protected_branches`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from fnmatch import fnmatchcase

from outpost.errors import Conflict, InvalidInput, OutpostError, SandboxError, Unavailable
from outpost.workspaces.checkout import LOCAL_CONFIG, Baseline
from outpost.workspaces.git import Git, GitResult, HttpCredential, redact
from outpost.workspaces.refs import MAX_REF_CHARS, is_full_sha, ref_problem
from outpost.workspaces.remote_failures import FIELD as URL_FIELD
from outpost.workspaces.remote_failures import fetch_failure, last_words
from outpost.workspaces.remote_hosts import pinned_config
from outpost.workspaces.repo_url import RepoUrl, parse_repo_url
from outpost.workspaces.settings import GitSettings

FIELD = "push.branch"
AUTHOR_FIELD = "push.author"
PUSH_OPTIONS = ("--porcelain", "--no-verify", "--no-signed", "--no-follow-tags", "--recurse-submodules=no")
_HTTP_403 = "returned error: 403"


@dataclass(frozen=True, slots=True)
class PushResult:
    """What `push_changes` did. `commit` is the pushed commit, None (and `pushed` False) when the run
    changed nothing; `detail` says what happened in one sentence."""

    commit: str | None
    branch: str
    pushed: bool
    detail: str


def check_push_branch(branch: str, settings: GitSettings) -> str:
    """`branch`, when a run may push to it: a branch name git accepts (`git check-ref-format --branch`),
    not starting with `refs/` or `-`, and matching none of `settings.protected_branches`.

    Raises InvalidInput (field `push.branch`). Pure: no I/O.
    """
    problem = _branch_problem(branch)
    if problem is not None:
        raise InvalidInput(f"push branch {branch[:MAX_REF_CHARS]!r} refused: {problem}", field=FIELD)
    # Ignoring case: on a remote that keeps refs as files on a case-insensitive disk, `Main` is `main`.
    protected = next(
        (glob for glob in settings.protected_branches if fnmatchcase(branch.lower(), glob.lower())), None
    )
    if protected is not None:
        raise InvalidInput(
            f"branch {branch!r} is protected (it matches {protected!r}): push to a branch "
            "of its own, such as 'outpost/<topic>', and merge it from there",
            field=FIELD,
        )
    return branch


def _branch_problem(branch: str) -> str | None:
    """What `git check-ref-format --branch` refuses beyond `ref_problem`, or what `ref_problem` says."""
    parts = branch.split("/")
    checks = (
        (branch.startswith("refs/"), "give the branch's short name, without 'refs/'"),
        (branch == "HEAD", "'HEAD' is not a branch name"),
        (branch.startswith("/"), "a branch name must not start with '/'"),
        (any(part.endswith(".lock") for part in parts), "no part of a branch name may end with '.lock'"),
    )
    problem = ref_problem(branch)  # first: it also says why an empty name or one starting with '-' fails
    return problem or next((problem for refused, problem in checks if refused), None)


async def push_changes(
    git: Git,
    *,
    repo_url: str,
    credential: HttpCredential | None,
    baseline: Baseline,
    tree: str,
    branch: str,
    message: str,
    author: tuple[str, str],
) -> PushResult:
    """Commit `tree` (`Changes.tree`) on top of `baseline.commit` in the private git dir and push it to
    `branch` of `repo_url`, never forced. When `tree` is the baseline's own tree, nothing is committed
    and the remote is not contacted. `author` is (name, email), for author and committer alike.

    Raises InvalidInput (branch, URL or author refused; no repository; credential refused or not allowed
    to write; the remote refused the update), Conflict (the branch has commits the new one does not
    descend from), Unavailable (remote unreachable or too slow) and SandboxError (local git failed).
    """
    check_push_branch(branch, git.settings)
    repo = parse_repo_url(repo_url, git.settings)
    identity = _identity_config(author)
    if not is_full_sha(tree):
        raise ValueError(f"push_changes needs a full tree id, not {tree!r}")
    if tree == await _base_tree(git, baseline):
        detail = f"the run changed nothing since {baseline.commit[:12]}: nothing pushed to {branch!r}"
        return PushResult(None, branch, False, detail)
    commit = await _commit_tree(git, baseline, tree, message, identity)
    return await _push(git, repo, credential, baseline, commit, branch)


def _identity_config(author: tuple[str, str]) -> dict[str, str]:
    name, email = author
    if not name or not email or any(not part.isprintable() or {"<", ">"} & set(part) for part in author):
        raise InvalidInput(
            "the push author needs a name and an email, without '<', '>' or control characters",
            field=AUTHOR_FIELD,
        )
    return {"user.name": name, "user.email": email, "user.useConfigOnly": "true"}


async def _base_tree(git: Git, baseline: Baseline) -> str:
    result = await _local(git, baseline, ["rev-parse", "--verify", f"{baseline.commit}^{{tree}}"], {})
    return result.stdout.decode("ascii").strip()


async def _commit_tree(
    git: Git, baseline: Baseline, tree: str, message: str, identity: dict[str, str]
) -> str:
    # From a file rather than `-m`: a message of any size or content, and nothing of it in argv.
    message_file = baseline.git_dir / f"push-{uuid.uuid4().hex}.message"
    await asyncio.to_thread(message_file.write_text, message)
    try:
        args = ["commit-tree", "-p", baseline.commit, "-F", str(message_file), tree]
        result = await _local(git, baseline, args, identity)
    finally:
        message_file.unlink(missing_ok=True)
    return result.stdout.decode("ascii").strip()


async def _local(git: Git, baseline: Baseline, args: list[str], config: dict[str, str]) -> GitResult:
    """Run a local command in the private git dir; raises SandboxError unless it succeeds."""
    try:
        result = await git.run(
            args,
            git_dir=baseline.git_dir,
            config={**LOCAL_CONFIG, **config},
            timeout_s=git.settings.local_timeout_s,
        )
    except TimeoutError:
        raise SandboxError(f"git {args[0]} took longer than {git.settings.local_timeout_s:g} s") from None
    if not result.ok:
        raise SandboxError(f"cannot prepare the commit to push (git {args[0]}): {last_words(result)}")
    return result


async def _push(
    git: Git,
    repo: RepoUrl,
    credential: HttpCredential | None,
    baseline: Baseline,
    commit: str,
    branch: str,
) -> PushResult:
    pinned = await pinned_config(repo, git.settings)
    timeout_s = git.settings.fetch_timeout_s
    refspec = f"{commit}:refs/heads/{branch}"  # no leading '+': never forced
    try:
        result = await git.run(
            ["push", *PUSH_OPTIONS, "--end-of-options", repo.url, refspec],
            git_dir=baseline.git_dir,
            config=pinned,
            credential=credential,
            timeout_s=timeout_s,
        )
    except TimeoutError:
        raise Unavailable(f"pushing to {repo} took longer than {timeout_s:g} s; try again later") from None
    secrets = credential.secrets if credential else ()
    status = _ref_status(redact(result.stdout.decode("utf-8", "replace"), secrets), branch)
    if result.ok and status is not None:
        return PushResult(commit, branch, True, _pushed_detail(status[0], commit, branch, repo))
    raise _push_failure(result, repo, branch, status)


def _ref_status(porcelain: str, branch: str) -> tuple[str, str] | None:
    """The flag and summary `git push --porcelain` printed for `refs/heads/<branch>`, if it did."""
    for line in porcelain.splitlines():
        flag, _, rest = line.partition("\t")
        refs, _, summary = rest.partition("\t")
        if len(flag) == 1 and refs.endswith(f":refs/heads/{branch}"):
            return flag, summary
    return None


def _pushed_detail(flag: str, commit: str, branch: str, repo: RepoUrl) -> str:
    done = {"*": "created branch", "=": "branch already at"}.get(flag, "fast-forwarded branch")
    return f"{done} {branch!r} of {repo} to {commit[:12]}"


def _push_failure(
    result: GitResult, repo: RepoUrl, branch: str, status: tuple[str, str] | None
) -> OutpostError:
    """The error for a failed push: the branch's own status when git got that far, else why the remote
    could not be reached or refused the credential (the causes a fetch has, but for 403)."""
    if status is not None:
        summary = status[1]
        if summary.startswith("[rejected]"):
            return Conflict(
                f"branch {branch!r} of {repo} has commits this run does not build on "
                f"{summary.removeprefix('[rejected]').strip()}: push to another branch, or "
                f"start the run from {branch!r}"
            )
        if summary.startswith("[remote rejected]"):
            return InvalidInput(
                f"{repo} refused to update branch {branch!r} "
                f"{summary.removeprefix('[remote rejected]').strip()}",
                field=FIELD,
            )
    if _HTTP_403 in result.stderr.lower():
        return InvalidInput(
            f"{repo} denied the push (HTTP 403): the credential cannot write to it", field=URL_FIELD
        )
    # The author's problems (credential refused, no repository, redirect, certificate) read as for a
    # fetch; the size limit does not apply (a push writes no file that could reach it).
    failure = fetch_failure(result, repo.url, max_fetch_bytes=0)
    if isinstance(failure, InvalidInput):
        return failure
    return Unavailable(f"cannot push to {repo}: {last_words(result)}; try again later")
