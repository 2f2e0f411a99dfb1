"""The mirror cache fetches real repositories (local, and over smart HTTP with Basic auth) into one bare
mirror per repository and scope, resolves refs in it, and explains every failure without leaking the
credential."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from outpost.errors import InvalidInput, OutpostError
from outpost.workspaces.git import Git
from outpost.workspaces.mirrors import MirrorCache
from outpost.workspaces.settings import GitSettings
from tests.git_http_server import GitHttpServer
from tests.git_repos import Origin, git

SECRET = "s3cret-pass"
HTTP_SETTINGS = GitSettings(allow_http=True, allow_private_network=True)


class RecordingGit(Git):
    """The real runner, remembering every argv it built."""

    def __init__(self, settings: GitSettings, home: Path) -> None:
        super().__init__(settings, home)
        self.argvs: list[list[str]] = []

    def command(
        self,
        args: Sequence[str],
        *,
        git_dir: Path | None = None,
        work_tree: Path | None = None,
        config: Mapping[str, str] | None = None,
    ) -> list[str]:
        argv = super().command(args, git_dir=git_dir, work_tree=work_tree, config=config)
        self.argvs.append(argv)
        return argv


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    return Origin(tmp_path / "served")


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[MirrorCache]:
    mirrors = MirrorCache(tmp_path / "mirrors", Git(GitSettings(allow_local=True), tmp_path / "home"))
    yield mirrors
    await mirrors.close()


async def test_branches_tags_and_commit_ids_resolve_to_their_commits(
    origin: Origin, cache: MirrorCache
) -> None:
    first = origin.commit({"a.txt": "one"})
    second = origin.commit({"a.txt": "two"})
    feature = origin.commit({"b.txt": "feature"}, branch="feature")
    origin.tag("v1", first)
    for ref, commit in [("main", second), ("feature", feature), ("v1", first), ("refs/tags/v1", first),
                        (first, first), (second[:10], second), (None, second), ("HEAD", second)]:  # fmt: skip
        resolved = await cache.resolve(origin.url, ref, None, scope="tenant-a")
        assert resolved.commit == commit, ref
    assert resolved.objects_path == resolved.mirror_path / "objects"


async def test_a_second_resolve_fetches_into_the_same_mirror(origin: Origin, cache: MirrorCache) -> None:
    first = origin.commit({"a.txt": "one"})
    resolved = await cache.resolve(origin.url, "main", None, scope="t")
    await cache.settle()
    packs = sorted((resolved.mirror_path / "objects" / "pack").glob("*.pack"))
    inodes = [resolved.mirror_path.stat().st_ino, *(pack.stat().st_ino for pack in packs)]
    assert resolved.commit == first
    assert packs
    second = origin.commit({"a.txt": "two"})
    again = await cache.resolve(origin.url, "main", None, scope="t")
    assert again.commit == second
    assert again.mirror_path == resolved.mirror_path
    assert [resolved.mirror_path.stat().st_ino, *(pack.stat().st_ino for pack in packs)] == inodes
    assert len(list((resolved.mirror_path / "objects" / "pack").glob("*.pack"))) == len(packs) + 1


async def test_a_known_commit_id_resolves_without_reaching_the_remote(
    origin: Origin, cache: MirrorCache, tmp_path: Path
) -> None:
    commit = origin.commit({"a.txt": "one"})
    await cache.resolve(origin.url, "main", None, scope="t")
    origin.path.rename(tmp_path / "gone.git")
    assert (await cache.resolve(origin.url, commit, None, scope="t")).commit == commit
    with pytest.raises(InvalidInput, match="no repository at"):
        await cache.resolve(origin.url, "main", None, scope="t")


async def test_a_failed_fetch_leaves_the_mirror_as_it_was(
    origin: Origin, cache: MirrorCache, tmp_path: Path
) -> None:
    commit = origin.commit({"a.txt": "one"})
    resolved = await cache.resolve(origin.url, "main", None, scope="t")
    origin.commit({"a.txt": "two"})
    (origin.path / "objects").rename(tmp_path / "objects-aside")  # the origin breaks mid-life
    with pytest.raises(OutpostError):
        await cache.resolve(origin.url, "main", None, scope="t")
    assert git(resolved.mirror_path, "rev-parse", "refs/heads/main").strip() == commit
    git(resolved.mirror_path, "fsck", "--no-dangling")


async def test_missing_refs_and_repositories_are_clear_errors(
    origin: Origin, cache: MirrorCache, tmp_path: Path
) -> None:
    origin.commit({"a.txt": "one"})
    with pytest.raises(InvalidInput, match="no branch, tag or commit named 'nope'") as missing:
        await cache.resolve(origin.url, "nope", None, scope="t")
    assert missing.value.field == "repo.ref"
    with pytest.raises(InvalidInput, match="no branch, tag or commit named '" + "0" * 40):
        await cache.resolve(origin.url, "0" * 40, None, scope="t")
    with pytest.raises(InvalidInput, match="starts with '-'"):
        await cache.resolve(origin.url, "--upload-pack=touch x", None, scope="t")
    with pytest.raises(InvalidInput, match="no repository at"):
        await cache.resolve(f"file://{tmp_path}/missing.git", "main", None, scope="t")
    empty = Origin(tmp_path / "empty")
    with pytest.raises(InvalidInput, match="no default branch"):
        await cache.resolve(empty.url, None, None, scope="t")


async def test_branches_deleted_on_the_remote_are_pruned(origin: Origin, cache: MirrorCache) -> None:
    origin.commit({"a.txt": "one"})
    origin.commit({"b.txt": "b"}, branch="gone")
    await cache.resolve(origin.url, "gone", None, scope="t")
    git(origin.path, "branch", "-D", "gone")
    with pytest.raises(InvalidInput, match="named 'gone'"):
        await cache.resolve(origin.url, "gone", None, scope="t")


async def test_each_scope_has_its_own_mirror(origin: Origin, cache: MirrorCache) -> None:
    origin.commit({"a.txt": "one"})
    a = await cache.resolve(origin.url, "main", None, scope="tenant-a")
    b = await cache.resolve(f"file://{origin.path}/", "main", None, scope="tenant-b")
    again = await cache.resolve(str(origin.path), "main", None, scope="tenant-a")
    assert a.mirror_path != b.mirror_path
    assert again.mirror_path == a.mirror_path


async def test_concurrent_resolves_of_one_mirror_from_two_caches_do_not_corrupt_it(
    origin: Origin, tmp_path: Path
) -> None:
    commits = {name: origin.commit({f"{name}.txt": name}, branch=name) for name in ("main", "b1", "b2", "b3")}
    caches = [MirrorCache(tmp_path / "mirrors", Git(GitSettings(allow_local=True), tmp_path / "home"))
              for _ in range(2)]  # fmt: skip  # two caches: the flock is all they share, as two processes
    resolves = [
        caches[i % 2].resolve(origin.url, name, None, scope="t") for i, name in enumerate(list(commits) * 3)
    ]
    resolved = await asyncio.gather(*resolves)
    for cache in caches:
        await cache.settle()
        await cache.close()
    assert [r.commit for r in resolved] == [commits[name] for name in commits] * 3
    assert len({r.mirror_path for r in resolved}) == 1
    assert sorted(p.name for p in (tmp_path / "mirrors").iterdir() if p.is_dir()) == [
        resolved[0].mirror_path.name
    ]
    git(resolved[0].mirror_path, "fsck", "--strict")


async def test_after_maintenance_the_mirror_is_one_kept_uncompressed_pack(
    origin: Origin, cache: MirrorCache
) -> None:
    origin.commit({"compressible.txt": "a" * 1_000_000})
    resolved = await cache.resolve(origin.url, "main", None, scope="t")
    await cache.settle()
    packs = list((resolved.mirror_path / "objects" / "pack").glob("*.pack"))
    assert len(packs) == 1
    assert packs[0].with_suffix(".keep").exists()
    assert packs[0].stat().st_size > 1_000_000  # zlib would make a million `a`s a few kilobytes


async def test_names_that_resolve_to_private_addresses_are_refused(tmp_path: Path) -> None:
    cache = MirrorCache(tmp_path / "mirrors", Git(GitSettings(), tmp_path / "home"))
    with pytest.raises(InvalidInput, match="non-public address"):
        await cache.resolve("https://localhost/owner/repo", "main", None, scope="t")
    assert not (tmp_path / "mirrors").exists() or not any((tmp_path / "mirrors").iterdir())


async def test_over_http_the_right_credential_fetches(origin: Origin, tmp_path: Path) -> None:
    commit = origin.commit({"a.txt": "one"})
    runner = RecordingGit(HTTP_SETTINGS, tmp_path / "home")
    cache = MirrorCache(tmp_path / "mirrors", runner)
    with GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}") as server:
        resolved = await cache.resolve(server.url("origin.git"), "main", f"alice:{SECRET}", scope="t")
    await cache.close()
    assert resolved.commit == commit
    assert runner.argvs
    assert not any(
        SECRET in arg or "YWxpY2" in arg for argv in runner.argvs for arg in argv
    )  # nor its base64


@pytest.mark.parametrize("credential", [f"alice:wrong-{SECRET}", None, f"wrong-{SECRET}"])
async def test_over_http_a_wrong_or_missing_credential_is_a_clear_error_that_hides_it(
    origin: Origin, tmp_path: Path, credential: str | None
) -> None:
    origin.commit({"a.txt": "one"})
    runner = RecordingGit(HTTP_SETTINGS, tmp_path / "home")
    cache = MirrorCache(tmp_path / "mirrors", runner)
    with GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}") as server:
        with pytest.raises(InvalidInput, match="refused the credential, or needs one") as refused:
            await cache.resolve(server.url("origin.git"), "main", credential, scope="t")
        with pytest.raises(InvalidInput, match="no repository at"):
            await cache.resolve(server.url("missing.git"), "main", f"alice:{SECRET}", scope="t")
    assert SECRET not in refused.value.detail
    assert "wrong" not in refused.value.detail
    assert not any(SECRET in arg for argv in runner.argvs for arg in argv)


async def test_over_http_redirects_are_refused_and_the_credential_goes_nowhere_else(
    origin: Origin, tmp_path: Path
) -> None:
    origin.commit({"a.txt": "one"})
    cache = MirrorCache(tmp_path / "mirrors", Git(HTTP_SETTINGS, tmp_path / "home"))
    with GitHttpServer(origin.path.parent) as elsewhere, GitHttpServer(origin.path.parent) as server:
        server.state.redirect_to = elsewhere.base_url
        with pytest.raises(InvalidInput, match="redirects elsewhere"):
            await cache.resolve(server.url("origin.git"), "main", f"alice:{SECRET}", scope="t")
    assert server.state.authorizations
    assert not elsewhere.state.authorizations


async def test_an_unreachable_server_is_unavailable(tmp_path: Path) -> None:
    with GitHttpServer(tmp_path) as server:
        url = server.url("origin.git")  # the server stops at the end of the block: nothing listens there
    cache = MirrorCache(tmp_path / "mirrors", Git(HTTP_SETTINGS, tmp_path / "home"))
    with pytest.raises(OutpostError, match=r"cannot fetch .* try again later"):
        await cache.resolve(url, "main", None, scope="t")


async def test_over_http_a_host_name_is_pinned_to_the_addresses_that_were_checked(
    origin: Origin, tmp_path: Path
) -> None:
    commit = origin.commit({"a.txt": "one"})
    runner = RecordingGit(HTTP_SETTINGS, tmp_path / "home")
    cache = MirrorCache(tmp_path / "mirrors", runner)
    with GitHttpServer(origin.path.parent) as server:
        resolved = await cache.resolve(f"http://localhost:{server.port}/origin.git", "main", None, scope="t")
    await cache.close()
    assert resolved.commit == commit
    fetch = next(argv for argv in runner.argvs if "fetch" in argv)
    pinned = [arg for arg in fetch if arg.startswith("http.curloptResolve=")]
    assert pinned
    assert pinned[0].startswith(f"http.curloptResolve=localhost:{server.port}:")
    assert "127.0.0.1" in pinned[0]


async def test_mirror_objects_are_readable_by_runs_whatever_the_umask(
    origin: Origin, cache: MirrorCache
) -> None:
    origin.commit({"a.txt": "one"})
    previous = os.umask(0o077)
    try:
        resolved = await cache.resolve(origin.url, "main", None, scope="t")
        await cache.settle()
    finally:
        os.umask(previous)
    for path in [resolved.objects_path, *resolved.objects_path.rglob("*")]:
        wanted = 0o005 if path.is_dir() else 0o004
        assert path.stat().st_mode & wanted == wanted, path
    assert resolved.mirror_path.parent.stat().st_mode & 0o777 == 0o700
