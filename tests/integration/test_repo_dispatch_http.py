"""Dispatches on a private repository served over HTTP with Basic auth, with the tenant's credential."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MakeServer, Server
from tests.git_http_server import GitHttpServer
from tests.git_repos import Origin
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status

SECRET = "s3cr3t-token-for-the-repo"


@pytest.fixture
async def http_server(make_server: MakeServer) -> Server:
    git = {"allow_http": True, "allow_private_network": True}
    return await make_server(limits={"requests_per_s": 0}, git=git)


async def dispatch(server: Server, headers: dict[str, str], url: str) -> dict[str, object]:
    created = await submit(server.client, headers, "cat a.txt", repo={"url": url, "ref": "main"})
    return await wait_for_status(server.client, headers, created["id"], TERMINAL)


async def test_the_tenants_credential_fetches_and_never_shows(http_server: Server, tmp_path: Path) -> None:
    origin = Origin(tmp_path / "repos")
    origin.commit({"a.txt": b"private\n"})
    owner, other = await http_server.new_tenant(), await http_server.new_tenant()
    with GitHttpServer(origin.path.parent, credential=f"alice:{SECRET}") as git_server:
        host = f"127.0.0.1:{git_server.port}"
        stored = await http_server.client.put(
            f"/v1/git-credentials/{host}", json={"username": "alice", "token": SECRET}, headers=owner
        )
        assert stored.status_code == 200, stored.text
        done = await dispatch(http_server, owner, git_server.url("origin.git"))
        assert done["status"] == "succeeded", done
        lines = [
            e["data"]["line"]
            for e in await all_events(http_server.client, owner, done["id"])
            if e["kind"] == "log"
        ]
        assert lines == ["private"]

        refused = await dispatch(http_server, other, git_server.url("origin.git"))  # no credential of its own
        assert refused["status"] == "failed"
        assert refused["failure"]["reason"] == "workspace_error"
        assert "credential" in refused["failure"]["detail"]

        await http_server.client.put(
            f"/v1/git-credentials/{host}",
            json={"username": "alice", "token": f"wrong-{SECRET}"},
            headers=owner,
        )
        wrong = await dispatch(http_server, owner, git_server.url("origin.git"))
        assert wrong["failure"]["reason"] == "workspace_error"
        events = await all_events(http_server.client, owner, wrong["id"])
        assert SECRET not in str(wrong)
        assert SECRET not in str(events)
