"""`push` {`branch`}: a succeeded run's changes committed host-side and pushed to the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
    origin.commit({"app.py": b"v = 1\n"})
    return origin


async def pushed(
    server: Server, headers: dict[str, str], origin: Origin, task: str, branch: str
) -> dict[str, Any]:
    created = await submit(server.client, headers, task, repo={"url": origin.url}, push={"branch": branch})
    return await wait_for_status(server.client, headers, created["id"], TERMINAL)


async def push_event(server: Server, headers: dict[str, str], dispatch_id: str) -> dict[str, Any]:
    events = await all_events(server.client, headers, dispatch_id)
    data: dict[str, Any] = next(e["data"] for e in events if e["kind"] == "artifacts")["push"]
    return data


async def test_a_succeeded_run_is_pushed_as_one_commit_on_its_base(
    repo_server: Server, origin: Origin
) -> None:
    headers = await repo_server.new_tenant()
    base = git(origin.path, "rev-parse", "main").strip()
    done = await pushed(
        repo_server, headers, origin, "echo 'v = 2' > app.py\ngit commit -qam ignored || true", "outpost/fix"
    )
    assert done["status"] == "succeeded", done
    event = await push_event(repo_server, headers, done["id"])
    assert event["pushed"] is True
    tip = git(origin.path, "rev-parse", "refs/heads/outpost/fix").strip()
    assert tip == event["commit"]
    assert git(origin.path, "rev-parse", f"{tip}^").strip() == base
    assert git(origin.path, "show", f"{tip}:app.py") == "v = 2\n"
    assert (
        git(origin.path, "log", "-1", "--format=%an <%ae>|%s", tip).strip()
        == "Outpost <outpost@localhost>|echo 'v = 2' > app.py"
    )
    assert git(origin.path, "rev-parse", "main").strip() == base  # nothing else moved


async def test_protected_and_malformed_branches_are_refused_at_submit(
    repo_server: Server, origin: Origin
) -> None:
    headers = await repo_server.new_tenant()
    for branch in ("main", "release/2.0", "-f", "a..b", "refs/heads/x"):
        response = await repo_server.client.post(
            "/v1/dispatches", headers=headers,
            json={"agent": "shell", "task": "true", "repo": {"url": origin.url}, "push": {"branch": branch}},
        )  # fmt: skip
        body = assert_problem(response, 422)
        assert [error["field"] for error in body["errors"]] == ["push.branch"], body
    no_repo = await repo_server.client.post(
        "/v1/dispatches", headers=headers, json={"agent": "shell", "task": "true", "push": {"branch": "x"}}
    )
    assert_problem(no_repo, 422)


async def test_a_failed_run_is_not_pushed(repo_server: Server, origin: Origin) -> None:
    headers = await repo_server.new_tenant()
    done = await pushed(repo_server, headers, origin, "echo half > app.py; exit 1", "outpost/half")
    assert done["status"] == "failed"
    assert (await push_event(repo_server, headers, done["id"]))["pushed"] is False
    assert git(origin.path, "branch", "--list", "outpost/half").strip() == ""


async def test_a_branch_that_moved_on_fails_the_dispatch_and_keeps_the_patch(
    repo_server: Server, origin: Origin
) -> None:
    origin.commit({"other.txt": b"theirs\n"}, branch="outpost/busy")
    origin.commit({"app.py": b"v = 9\n"}, branch="main")
    headers = await repo_server.new_tenant()
    done = await pushed(repo_server, headers, origin, "echo mine > mine.txt", "outpost/busy")
    assert done["status"] == "failed"
    assert done["failure"]["reason"] == "workspace_error"
    assert "outpost/busy" in done["failure"]["detail"]
    names = {item["name"] for item in done["artifacts"]}
    assert "changes.patch" in names
