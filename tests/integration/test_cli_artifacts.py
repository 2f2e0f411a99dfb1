"""`outpost artifacts`, `outpost workspaces` and the git options of `outpost dispatch`, as a user runs them:
real `outpost` processes against a real `outpost serve`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from outpost.cli.artifacts import check_file_name, save_artifact
from outpost.cli.client import ApiClient, ClientSettings
from outpost.errors import OutpostError
from outpost.schemas.artifacts import ArtifactRead
from tests.git_repos import Origin
from tests.integration.helpers import TERMINAL
from tests.integration.processes import ServerProcess, wait_for_status_sync
from tests.integration.test_cli import (
    EXIT_USAGE,
    EXIT_USER_ERROR,
    Cli,
    served_cli_fixtures,
)

pytestmark = pytest.mark.slow

RUN_ARTIFACTS = {"changes.patch", "changed-files.json", "events.jsonl"}


# Local repositories (file://) are refused by default; the repo tests use one.
server, admin_key, cli = served_cli_fixtures("cli-artifacts", {"OUTPOST_GIT__ALLOW_LOCAL": "true"})


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    origin = Origin(tmp_path / "origin")
    origin.commit({"README.md": b"hello\n"})
    return origin


def run_dispatch(cli: Cli, *options: str) -> dict[str, Any]:
    """`outpost dispatch --wait --json` with `options`; the dispatch as it ended (it must succeed)."""
    result = cli("dispatch", "--agent", "shell", "--wait", "--json", *options)
    assert result.code == 0, result
    body: dict[str, Any] = json.loads(result.stdout)
    return body


def listed_artifacts(cli: Cli, dispatch_id: str) -> dict[str, dict[str, Any]]:
    result = cli("artifacts", dispatch_id, "--json")
    assert result.code == 0, result
    return {item["name"]: item for item in json.loads(result.stdout)["items"]}


def test_artifacts_lists_what_a_run_without_a_repository_left(cli: Cli) -> None:
    dispatch_id = run_dispatch(cli, "echo hi > f.txt")["id"]
    found = listed_artifacts(cli, dispatch_id)
    assert set(found) >= RUN_ARTIFACTS
    table = cli("artifacts", dispatch_id)
    assert table.code == 0, table
    patch_row = next(line for line in table.stdout.splitlines() if line.startswith("changes.patch"))
    assert found["changes.patch"]["sha256"][:12] in patch_row
    shown = cli("status", dispatch_id)
    assert "artifacts" in shown.stdout
    assert "changes.patch" in shown.stdout


def test_download_saves_every_artifact_checked_into_a_new_directory(cli: Cli, tmp_path: Path) -> None:
    dispatch_id = run_dispatch(cli, "echo hi > f.txt")["id"]
    found = listed_artifacts(cli, dispatch_id)
    target = tmp_path / "new" / "dir"
    result = cli("artifacts", dispatch_id, "--download", str(target))
    assert result.code == 0, result
    assert sorted(path.name for path in target.iterdir()) == sorted(found)  # no temporary file is left
    for name, item in found.items():
        assert hashlib.sha256((target / name).read_bytes()).hexdigest() == item["sha256"]
        assert str(target / name) in result.stdout
    assert "b/f.txt" in (target / "changes.patch").read_text()


def test_download_replaces_a_symlink_at_the_destination_and_never_writes_through_it(
    cli: Cli, tmp_path: Path
) -> None:
    dispatch_id = run_dispatch(cli, "echo hi > f.txt")["id"]
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me\n")
    target = tmp_path / "artifacts"
    target.mkdir()
    (target / "changes.patch").symlink_to(outside)
    result = cli("artifacts", dispatch_id, "--download", str(target))
    assert result.code == 0, result
    assert not (target / "changes.patch").is_symlink()
    assert "b/f.txt" in (target / "changes.patch").read_text()
    assert outside.read_text() == "keep me\n"


def test_a_download_that_does_not_match_its_checksum_is_deleted_and_refused_in_one_line(
    cli: Cli, server: ServerProcess, tmp_path: Path
) -> None:
    dispatch_id = run_dispatch(cli, "echo hi > f.txt")["id"]
    stored = _stored_object(server.data_dir, dispatch_id, "changes.patch")
    original = stored.read_bytes()
    assert b"+hi" in original
    stored.write_bytes(original.replace(b"+hi", b"+ho"))  # same size: only the checksum can tell
    target = tmp_path / "artifacts"
    result = cli("artifacts", dispatch_id, "--download", str(target))
    result.assert_one_line_error(EXIT_USER_ERROR, "changes.patch: its SHA-256 is")
    assert not (target / "changes.patch").exists()
    assert not [path for path in target.iterdir() if path.name.startswith(".")]


def _stored_object(data_dir: Path, dispatch_id: str, name: str) -> Path:
    """The file the filesystem object store keeps an artifact in (its bytes, then a trailer)."""
    [path] = data_dir.glob(f"artifacts/objects/tenants/*/dispatches/{dispatch_id}/{name}")
    return path


def test_artifacts_of_an_unknown_dispatch_get_a_one_line_error(cli: Cli, tmp_path: Path) -> None:
    missing = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
    cli("artifacts", missing).assert_one_line_error(EXIT_USER_ERROR, "no dispatch")
    downloaded = cli("artifacts", missing, "--download", str(tmp_path / "d"))
    downloaded.assert_one_line_error(EXIT_USER_ERROR, "no dispatch")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(("options", "message"), [(["--ref", "main"], "--ref"), (["--push", "f"], "--push")])
def test_git_options_without_repo_are_a_usage_error_before_anything_is_sent(
    cli: Cli, options: list[str], message: str
) -> None:
    result = cli("dispatch", "--agent", "shell", *options, "echo hi")
    assert result.code == EXIT_USAGE, result
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        f"Error: {message} needs --repo"
    ]
    with cli.api() as api:
        assert api.get("/v1/dispatches").json()["items"] == []


def test_dispatch_sends_repo_ref_and_push_and_status_shows_them(cli: Cli, origin: Origin) -> None:
    head = origin.commit({"src/app.py": b"print(1)\n"})
    submitted = cli(
        "dispatch", "--agent", "shell", "--repo", origin.url, "--ref", "main", "--push", "ci/x", "ls"
    )
    assert submitted.code == 0, submitted
    dispatch_id = submitted.stdout.strip()
    with cli.api() as api:
        ended = wait_for_status_sync(api, dispatch_id, TERMINAL)
    assert (ended["repo"], ended["push"]) == ({"url": origin.url, "ref": "main"}, {"branch": "ci/x"})
    shown = cli("status", dispatch_id)
    assert shown.code == 0, shown
    rows = dict(line.rstrip().split(maxsplit=1) for line in shown.stdout.splitlines() if line[:1].strip())
    assert (rows["repo"], rows["ref"]) == (origin.url, "main")
    assert head in shown.stdout


def test_workspaces_list_on_a_new_tenant_shows_only_the_quota_line(cli: Cli) -> None:
    result = cli("workspaces", "list")
    assert result.code == 0, result
    assert result.stdout.startswith("used 0 B of ")
    as_json = json.loads(cli("workspaces", "list", "--json").stdout)
    assert (as_json["items"], as_json["used_bytes"]) == ([], 0)


def test_a_workspace_in_use_is_not_deleted_and_the_error_names_the_dispatch(cli: Cli) -> None:
    submitted = cli("dispatch", "--agent", "shell", "--workspace", "scratch", "echo started; sleep 30")
    assert submitted.code == 0, submitted
    dispatch_id = submitted.stdout.strip()
    with cli.api() as api:
        wait_for_status_sync(api, dispatch_id, {"running"})
        [workspace] = json.loads(cli("workspaces", "list", "--json").stdout)["items"]
        assert (workspace["name"], workspace["in_use_by"]) == ("scratch", dispatch_id)
        busy = cli("workspaces", "delete", workspace["id"])
        busy.assert_one_line_error(EXIT_USER_ERROR, f"in use by dispatch {dispatch_id}")
        assert cli("cancel", dispatch_id).code == 0
        wait_for_status_sync(api, dispatch_id, TERMINAL)
    deleted = cli("workspaces", "delete", workspace["id"])
    assert deleted.code == 0, deleted
    cli("workspaces", "delete", workspace["id"]).assert_one_line_error(EXIT_USER_ERROR, "no workspace")


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", ".hidden", "..", "", "a\x00b", "a..b", "x\x1b[2J"])
def test_a_name_that_is_not_a_plain_file_name_is_refused(name: str) -> None:
    with pytest.raises(OutpostError, match="not a plain file name"):
        check_file_name(name)


def test_a_download_sends_no_api_key_even_to_the_same_host(tmp_path: Path) -> None:
    body = b"patch bytes\n"
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body)

    now = datetime.now(UTC)
    artifact = ArtifactRead(
        name="changes.patch", size_bytes=len(body), sha256=hashlib.sha256(body).hexdigest(),
        content_type="text/x-diff", created_at=now, expires_at=now, url_expires_at=now,
        download_url="http://outpost.test/v1/artifacts/a1/changes.patch?sig=x",
    )  # fmt: skip
    settings = ClientSettings(url="http://outpost.test", api_key="op_secret_key")
    with ApiClient(settings, transport=httpx.MockTransport(answer)) as api:
        saved = save_artifact(api, artifact, tmp_path)
    assert saved.read_bytes() == body
    assert [request.url.host for request in seen] == ["outpost.test"]
    assert "authorization" not in seen[0].headers
