"""Dispatches on a git repository: checkout before the run, artifacts after it, signed downloads."""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.db.repositories.dispatches import get_dispatch
from outpost.worker.run_results import RunResults
from outpost.workspaces.git import Git
from tests.conftest import MakeServer, Server
from tests.git_repos import Origin, git
from tests.integration.api_checks import assert_problem
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status


@pytest.fixture
async def repo_server(make_server: MakeServer) -> Server:
    return await make_server(limits={"requests_per_s": 0}, git={"allow_local": True})


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    origin = Origin(tmp_path / "origin")
    origin.commit({"README.md": b"hello\n", "src/app.py": b"print('v1')\n", "old.txt": b"bye\n"})
    return origin


async def run_on_repo(
    server: Server, headers: dict[str, str], task: str, origin: Origin, **fields: Any
) -> dict[str, Any]:
    created = await submit(server.client, headers, task, repo={"url": origin.url, "ref": "main"}, **fields)
    return await wait_for_status(server.client, headers, created["id"], TERMINAL)


async def artifacts_of(
    server: Server, headers: dict[str, str], dispatch_id: str
) -> dict[str, dict[str, Any]]:
    response = await server.client.get(f"/v1/dispatches/{dispatch_id}/artifacts", headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


def refused(response: httpx.Response, field: str) -> dict[str, Any]:
    body = assert_problem(response, 422)
    assert [error["field"] for error in body["errors"]] == [field], body
    return body


async def download(client: httpx.AsyncClient, url: str, **headers: str) -> httpx.Response:
    return await client.get(url, headers=headers)  # no API key: the signature is the authorization


async def test_the_run_sees_the_checkout_and_its_changes_come_back_as_a_patch(
    repo_server: Server, origin: Origin, tmp_path: Path
) -> None:
    headers = await repo_server.new_tenant()
    task = (
        "cat README.md; git log --format=%H -1; echo 'print(2)' > src/app.py; rm old.txt; "
        "printf 'a\\0b' > blob.bin; echo made > new.txt; echo done"
    )
    done = await run_on_repo(repo_server, headers, task, origin)
    assert done["status"] == "succeeded", done
    head = git(origin.work, "rev-parse", "HEAD").strip()
    assert done["base_commit"] == head
    assert done["repo"] == {"url": origin.url, "ref": "main"}
    lines = [
        e["data"]["line"]
        for e in await all_events(repo_server.client, headers, done["id"])
        if e["kind"] == "log"
    ]
    assert lines[:2] == ["hello", head]  # the agent's own git reads the mirror's objects

    found = await artifacts_of(repo_server, headers, done["id"])
    assert set(found) == {"changes.patch", "changed-files.json", "final-message.md", "events.jsonl"}
    listing = json.loads(
        (await download(repo_server.client, found["changed-files.json"]["download_url"])).content
    )
    assert listing["base_commit"] == head
    assert {(f["path"], f["kind"]) for f in listing["files"]} == {
        ("src/app.py", "modified"),
        ("old.txt", "deleted"),
        ("blob.bin", "added"),
        ("new.txt", "added"),
    }
    patch = await download(repo_server.client, found["changes.patch"]["download_url"])
    assert patch.status_code == 200
    assert hashlib.sha256(patch.content).hexdigest() == found["changes.patch"]["sha256"]
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin.path), str(clone))
    (tmp_path / "p").write_bytes(patch.content)
    git(clone, "apply", "--binary", str(tmp_path / "p"))
    assert (clone / "blob.bin").read_bytes() == b"a\0b"
    assert (clone / "src/app.py").read_text() == "print(2)\n"
    assert not (clone / "old.txt").exists()

    events = (await download(repo_server.client, found["events.jsonl"]["download_url"])).text.splitlines()
    kinds = [json.loads(line)["kind"] for line in events]
    assert kinds[0] == "status"
    assert "log" in kinds
    message = await download(repo_server.client, found["final-message.md"]["download_url"])
    assert message.text.endswith("done")


async def test_downloads_serve_ranges_and_refuse_altered_links(repo_server: Server, origin: Origin) -> None:
    headers = await repo_server.new_tenant()
    done = await run_on_repo(repo_server, headers, "seq 1 2000 > numbers.txt", origin)
    item = (await artifacts_of(repo_server, headers, done["id"]))["changes.patch"]
    url, size = item["download_url"], item["size_bytes"]
    whole = (await download(repo_server.client, url)).content
    assert len(whole) == size

    part = await download(repo_server.client, url, Range="bytes=10-99")
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 10-99/{size}"
    assert part.content == whole[10:100]
    tail = await download(repo_server.client, url, Range="bytes=-20")
    assert tail.content == whole[-20:]
    beyond = await download(repo_server.client, url, Range=f"bytes={size}-")
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    stale = await download(repo_server.client, url, Range="bytes=0-9", **{"If-Range": '"other"'})
    assert stale.status_code == 200
    assert stale.content == whole

    signature = url.rsplit("signature=", 1)[1]
    altered = [
        url.replace(signature, ("A" if signature[0] != "A" else "B") + signature[1:]),
        url.replace("expires=", "expires=1"),
        url.replace("changes.patch", "events.jsonl"),
        url.split("?")[0],
    ]
    for bad in altered:
        assert_problem(await download(repo_server.client, bad), 403)


async def test_an_expired_link_is_refused(repo_server: Server, origin: Origin) -> None:
    headers = await repo_server.new_tenant()
    done = await run_on_repo(repo_server, headers, "echo x > x", origin)
    item = (await artifacts_of(repo_server, headers, done["id"]))["changes.patch"]
    path = item["download_url"].split("?")[0].removeprefix("http://outpost.test")
    signer = repo_server.container.url_signer
    past = signer.expiry() - signer.ttl_s - 1
    response = await download(repo_server.client, f"{path}?{signer.sign(path, past)}")
    assert_problem(response, 403)
    assert "expired" in response.json()["detail"]


async def test_artifacts_are_kept_when_the_run_fails_or_times_out(
    repo_server: Server, origin: Origin
) -> None:
    headers = await repo_server.new_tenant()
    failed = await run_on_repo(repo_server, headers, "echo partial > work.txt; exit 3", origin)
    assert failed["status"] == "failed"
    timed_out = await run_on_repo(repo_server, headers, "echo slow > slow.txt; sleep 30", origin, timeout_s=1)
    assert timed_out["status"] == "timed_out"
    for done, name in ((failed, "work.txt"), (timed_out, "slow.txt")):
        found = await artifacts_of(repo_server, headers, done["id"])
        patch = (await download(repo_server.client, found["changes.patch"]["download_url"])).text
        assert f"b/{name}" in patch


async def test_artifacts_are_kept_when_the_run_is_cancelled(repo_server: Server, origin: Origin) -> None:
    headers = await repo_server.new_tenant()
    created = await submit(
        repo_server.client, headers, "echo started > s.txt; echo go; sleep 60", repo={"url": origin.url}
    )
    await wait_for_status(repo_server.client, headers, created["id"], {"running"})
    for _ in range(200):
        logs = await all_events(repo_server.client, headers, created["id"])
        if any(e["kind"] == "log" and e["data"]["line"] == "go" for e in logs):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the run never printed its marker")
    response = await repo_server.client.post(f"/v1/dispatches/{created['id']}/cancel", headers=headers)
    assert response.json()["status"] == "cancelled"
    found = await artifacts_of(repo_server, headers, created["id"])
    assert "b/s.txt" in (await download(repo_server.client, found["changes.patch"]["download_url"])).text


async def test_a_dispatch_without_a_repository_has_its_files_as_a_patch(server: Server) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "mkdir d; echo hi > d/f.txt")
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL)
    assert done["status"] == "succeeded"
    assert done["base_commit"] is None
    found = await artifacts_of(server, headers, done["id"])
    patch = (await download(server.client, found["changes.patch"]["download_url"])).text
    assert "b/d/f.txt" in patch
    assert "+hi" in patch


async def test_a_missing_ref_or_repository_fails_the_dispatch_clearly(
    repo_server: Server, origin: Origin
) -> None:
    headers = await repo_server.new_tenant()
    no_ref = await submit(repo_server.client, headers, "true", repo={"url": origin.url, "ref": "nope"})
    done = await wait_for_status(repo_server.client, headers, no_ref["id"], TERMINAL)
    assert done["status"] == "failed"
    assert done["failure"]["reason"] == "workspace_error"
    assert "nope" in done["failure"]["detail"]
    missing = await submit(repo_server.client, headers, "true", repo={"url": f"{origin.url}-missing"})
    done = await wait_for_status(repo_server.client, headers, missing["id"], TERMINAL)
    assert done["failure"]["reason"] == "workspace_error"


@pytest.mark.parametrize(
    ("repo", "field"),
    [
        ({"url": "ext::sh -c touch% /tmp/pwned"}, "repo.url"),
        ({"url": "--upload-pack=touch /tmp/pwned"}, "repo.url"),
        ({"url": "https://user:secret@example.com/r.git"}, "repo.url"),
        ({"url": "https://example.com/r.git", "ref": "main~1"}, "repo.ref"),
        ({"url": "https://example.com/r.git", "ref": "-x"}, "repo.ref"),
    ],
)
async def test_hostile_repositories_and_refs_are_refused_at_submit(
    server: Server, repo: dict[str, str], field: str
) -> None:
    headers = await server.new_tenant()
    response = await server.client.post(
        "/v1/dispatches", json={"agent": "shell", "task": "true", "repo": repo}, headers=headers
    )
    problem = refused(response, field)
    assert "secret" not in json.dumps(problem)


async def test_local_repositories_are_refused_unless_allowed(server: Server, origin: Origin) -> None:
    headers = await server.new_tenant()
    response = await server.client.post(
        "/v1/dispatches",
        json={"agent": "shell", "task": "true", "repo": {"url": origin.url}},
        headers=headers,
    )
    assert "local repositories" in refused(response, "repo.url")["detail"]


async def test_another_tenant_cannot_list_the_artifacts(repo_server: Server, origin: Origin) -> None:
    owner, other = await repo_server.new_tenant(), await repo_server.new_tenant()
    done = await run_on_repo(repo_server, owner, "echo x > x", origin)
    response = await repo_server.client.get(f"/v1/dispatches/{done['id']}/artifacts", headers=other)
    assert_problem(response, 404)


async def test_a_later_attempt_replaces_the_artifacts_of_an_earlier_one(
    server: Server, tmp_path: Path
) -> None:
    headers = await server.new_tenant()
    created = await submit(server.client, headers, "echo first > f.txt; echo first")
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL)
    container = server.container
    async with container.store.read() as conn:
        row = await get_dispatch(conn, done["id"])
    assert row is not None
    git = Git(container.settings.git, tmp_path / "git-home")
    results = RunResults(container.store, container.objects, git, 30, container.disk_guard)
    (tmp_path / "scratch").mkdir()
    # What a second attempt (after a lost worker) that never got its workspace ready would store.
    await results.keep(replace(row, attempt=2), None, "second", tmp_path / "scratch")
    found = await artifacts_of(server, headers, done["id"])
    assert set(found) == {"final-message.md", "events.jsonl"}
    assert (await download(server.client, found["final-message.md"]["download_url"])).text == "second"
    prefix = f"tenants/{row.tenant_id}/dispatches/{row.id}/"
    assert {info.key.removeprefix(prefix) for info in await container.objects.list(prefix)} == set(found)
