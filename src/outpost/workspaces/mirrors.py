"""The worker's cache of bare repository mirrors: fetched, never cloned again, shared by the worker
processes of one host.

One mirror per repository and scope, at `root/<32 hex digits of sha256(scope, normalized URL)>/`. The
scope (the tenant) is part of the name because a mirror fetched with one tenant's credential holds
history that another tenant must not read without a credential of its own: with a shared mirror, a
commit id would be enough. A mirror holds the remote's branches and tags (`refs/heads/*`,
`refs/tags/*`, pruned as the remote drops them) and, when asked for, its default branch
(`refs/outpost/head`).

One fetch at a time per mirror: an asyncio lock within the process and a `flock` on `root/<name>.lock`
across processes. A fetch that fails updates no ref (`--atomic`), so the mirror stays as it was. A
resolve that waited while another fetch ran skips its own when that fetch started after it asked.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from outpost.errors import InvalidInput, OutpostError, Unavailable
from outpost.workspaces.file_lock import file_lock
from outpost.workspaces.git import Git, HttpCredential
from outpost.workspaces.mirror_packs import UNCOMPRESSED, compact_mirror
from outpost.workspaces.refs import FIELD as REF_FIELD
from outpost.workspaces.refs import check_ref, is_full_sha
from outpost.workspaces.remote_failures import fetch_failure, last_words
from outpost.workspaces.remote_hosts import pinned_config
from outpost.workspaces.repo_url import RepoUrl, parse_repo_url

log = logging.getLogger(__name__)

DEFAULT_BRANCH_REF = "refs/outpost/head"
FETCHED_STAMP = "outpost-fetched"
REFSPECS = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
FETCH_OPTIONS = ("--no-progress", "--prune", "--no-tags", "--atomic", "--no-write-fetch-head",
                 "--no-recurse-submodules", "--no-auto-maintenance")  # fmt: skip
# Every fetch keeps what it receives as one pack (no loose objects), and writes no commit graph.
FETCH_CONFIG = {"fetch.unpackLimit": "1", "transfer.unpackLimit": "1", "fetch.writeCommitGraph": "false"}


@dataclass(frozen=True, slots=True)
class ResolvedRef:
    """A commit present in a mirror. Workspaces made from it read the mirror's `objects_path`."""

    mirror_path: Path
    commit: str

    @property
    def objects_path(self) -> Path:
        return self.mirror_path / "objects"


class MirrorCache:
    """Bare mirrors under `root` (created on first use). Call `close()` at shutdown."""

    def __init__(self, root: Path, git: Git) -> None:
        self._root = root
        self._git = git
        self._locks: dict[Path, asyncio.Lock] = {}
        self._maintenance: set[asyncio.Task[None]] = set()

    def mirror_path(self, repo: RepoUrl, scope: str) -> Path:
        """Where the mirror of `repo` for `scope` lives (whether or not it exists yet)."""
        key = hashlib.sha256(f"{scope}\0{repo.url}".encode()).hexdigest()[:32]
        return self._root / key

    async def resolve(self, url: str, ref: str | None, credential: str | None, *, scope: str) -> ResolvedRef:
        """The commit `ref` names in the repository at `url`, fetched into the scope's mirror first.

        `ref` is a branch, a tag, or a full or abbreviated commit id; None (or `HEAD`) is the remote's
        default branch. A full commit id the mirror already has is resolved without a fetch. `url` is
        untrusted (see `repo_url`); `credential` is `username:password` or a token (see HttpCredential);
        `scope` says whose mirror to use (the tenant: see the module docstring).
        Raises InvalidInput (refused URL or ref, no such repository or ref, credential refused),
        Unavailable (remote unreachable or too slow; another fetch holding the mirror too long) and
        PayloadTooLarge (repository over the fetch limit).
        """
        if not scope:
            raise ValueError("a mirror needs a scope (the tenant)")
        repo = parse_repo_url(url, self._git.settings)
        wanted = None if ref in {None, "HEAD"} else ref
        if wanted is not None:
            check_ref(wanted)
        secret = HttpCredential.parse(credential) if credential is not None else None
        mirror = self.mirror_path(repo, scope)
        if wanted is not None and is_full_sha(wanted) and await self._has_commit(mirror, wanted):
            return ResolvedRef(mirror, wanted)
        await self._fetch(mirror, repo, secret, with_head=wanted is None)
        return ResolvedRef(mirror, await self._rev_parse(mirror, repo, wanted))

    async def settle(self) -> None:
        """Wait for the background maintenance started so far (tests and benchmarks use it)."""
        while self._maintenance:
            await asyncio.gather(*self._maintenance, return_exceptions=True)

    async def close(self) -> None:
        """Stop background maintenance (a stopped repack leaves the mirror as it was)."""
        for task in self._maintenance:
            task.cancel()
        await asyncio.gather(*self._maintenance, return_exceptions=True)

    async def _has_commit(self, mirror: Path, commit: str) -> bool:
        if not (mirror / "HEAD").exists():
            return False
        result = await self._git.run(["cat-file", "-e", f"{commit}^{{commit}}"], git_dir=mirror,
                                     timeout_s=self._git.settings.local_timeout_s)  # fmt: skip
        return result.ok

    async def _fetch(
        self, mirror: Path, repo: RepoUrl, credential: HttpCredential | None, *, with_head: bool
    ) -> None:
        asked_at = time.time()
        pinned = await pinned_config(repo, self._git.settings)
        timeout_s = self._git.settings.fetch_timeout_s
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        async with self._locks.setdefault(mirror, asyncio.Lock()):
            try:
                async with file_lock(mirror.with_name(f"{mirror.name}.lock"), timeout_s=timeout_s):
                    if not _fetched_since(mirror, asked_at, with_head):
                        await self._fetch_locked(mirror, repo, credential, pinned, with_head)
            except TimeoutError:
                raise Unavailable(
                    f"fetching {repo} took longer than {timeout_s:g} s; try again later"
                ) from None
        self._schedule_maintenance(mirror)

    async def _fetch_locked(
        self,
        mirror: Path,
        repo: RepoUrl,
        credential: HttpCredential | None,
        pinned: dict[str, str],
        with_head: bool,
    ) -> None:
        if not (mirror / "HEAD").exists():
            await self._create(mirror, repo)
        started = time.time()
        refspecs = [*REFSPECS, *([f"+HEAD:{DEFAULT_BRANCH_REF}"] if with_head else [])]
        config = {
            **FETCH_CONFIG,
            **pinned,
            **(UNCOMPRESSED if self._git.settings.uncompressed_mirrors else {}),
        }
        result = await self._git.run(
            ["fetch", *FETCH_OPTIONS, "--end-of-options", repo.url, *refspecs],
            git_dir=mirror, config=config, credential=credential,
            timeout_s=self._git.settings.fetch_timeout_s, max_file_bytes=self._git.settings.max_fetch_bytes,
        )  # fmt: skip
        if not result.ok:
            if with_head and "couldn't find remote ref head" in result.stderr.lower():
                raise InvalidInput(
                    f"{repo} has no default branch (is it empty?); name a ref", field=REF_FIELD
                )
            raise fetch_failure(result, repo.url, self._git.settings.max_fetch_bytes)
        (mirror / FETCHED_STAMP).write_text(f"{started} {'head' if with_head else 'refs'}\n")

    async def _create(self, mirror: Path, repo: RepoUrl) -> None:
        """An empty bare repository, made aside and renamed into place, so that a half-made mirror is
        never found. Its objects are readable by every uid whatever the worker's umask (`--shared`):
        runs read them, as their own uid, through a read-only mount; the cache root is the worker's
        alone (0700), so nobody else on the host reaches them."""
        staging = self._root / f"{mirror.name}.new-{uuid.uuid4().hex[:8]}"
        args = ["init", "--bare", "--quiet", "--template=", "--shared=0644", str(staging)]
        result = await self._git.run(args, timeout_s=self._git.settings.local_timeout_s)
        if not result.ok:
            raise Unavailable(f"cannot create a mirror of {repo}: {last_words(result)}")
        (staging / "outpost-url").write_text(f"{repo.url}\n")  # for people looking at the cache
        staging.rename(mirror)

    async def _rev_parse(self, mirror: Path, repo: RepoUrl, ref: str | None) -> str:
        name = ref or DEFAULT_BRANCH_REF
        result = await self._git.run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}"],
            git_dir=mirror, timeout_s=self._git.settings.local_timeout_s,
        )  # fmt: skip
        commit = result.stdout.decode("ascii", "replace").strip()
        if not result.ok or not is_full_sha(commit):
            raise InvalidInput(f"{repo} has no branch, tag or commit named {name!r}", field=REF_FIELD)
        return commit

    def _schedule_maintenance(self, mirror: Path) -> None:
        task = asyncio.get_running_loop().create_task(self._maintain(mirror))
        self._maintenance.add(task)
        task.add_done_callback(self._maintenance.discard)

    async def _maintain(self, mirror: Path) -> None:
        try:
            await compact_mirror(self._git, mirror, mirror.with_name(f"{mirror.name}.maintain.lock"))
        except (OSError, OutpostError):
            log.exception("maintenance of mirror %s failed", mirror.name)


def _fetched_since(mirror: Path, asked_at: float, with_head: bool) -> bool:
    """Whether a fetch that started after `asked_at` (and fetched the default branch, when wanted)
    completed: its result is as fresh as one this caller would make."""
    try:
        started, what = (mirror / FETCHED_STAMP).read_text().split()
        return float(started) >= asked_at and (what == "head" or not with_head)
    except (OSError, ValueError):
        return False
