"""`outpost artifacts ID --download DIR` with names that hold folders (`outputs/...`): real `outpost`
processes against a real `outpost serve`, and the name and folder checks against a hostile server."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from outpost.cli.artifacts import TEMP_PREFIX, check_artifact_path, save_artifact
from outpost.cli.client import ApiClient, ClientSettings
from outpost.errors import OutpostError
from outpost.schemas.artifacts import ArtifactRead
from tests.integration.test_cli import (
    EXIT_USER_ERROR,
    Cli,
    served_cli_fixtures,
)
from tests.integration.test_cli_artifacts import listed_artifacts, run_dispatch

pytestmark = pytest.mark.slow

TASK = (
    'mkdir -p "$OUTPOST_OUTPUTS_DIR/sub" && echo hi > "$OUTPOST_OUTPUTS_DIR/sub/r.txt" && '
    'echo top > "$OUTPOST_OUTPUTS_DIR/t.md"'
)


server, admin_key, cli = served_cli_fixtures("cli-outputs")


def saved_files(directory: Path) -> dict[str, bytes]:
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in directory.rglob("*")
        if path.is_file() and not path.is_symlink()
    }


def test_download_saves_outputs_in_folders_each_checked(cli: Cli, tmp_path: Path) -> None:
    dispatch_id = run_dispatch(cli, TASK)["id"]
    found = listed_artifacts(cli, dispatch_id)
    assert {"outputs/sub/r.txt", "outputs/t.md"} <= set(found)
    target = tmp_path / "dir"
    result = cli("artifacts", dispatch_id, "--download", str(target))
    assert result.code == 0, result
    saved = saved_files(target)
    assert set(saved) == set(found)  # no temporary file is left
    assert (saved["outputs/sub/r.txt"], saved["outputs/t.md"]) == (b"hi\n", b"top\n")
    for name, item in found.items():
        assert hashlib.sha256(saved[name]).hexdigest() == item["sha256"]
    assert str(target / "outputs" / "sub" / "r.txt") in result.stdout
    assert not [path for path in target.rglob(f"{TEMP_PREFIX}*")]


@pytest.mark.parametrize("planted", ["outputs", "outputs/sub"])
def test_a_symlinked_folder_in_dir_is_refused_before_anything_is_written(
    cli: Cli, tmp_path: Path, planted: str
) -> None:
    dispatch_id = run_dispatch(cli, TASK)["id"]
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    target = tmp_path / "dir"
    (target / planted).parent.mkdir(parents=True, exist_ok=True)
    (target / planted).symlink_to(outside)
    result = cli("artifacts", dispatch_id, "--download", str(target))
    result.assert_one_line_error(
        EXIT_USER_ERROR, f"refusing to save into {target / planted}: it is a symlink"
    )
    assert saved_files(outside) == {}
    assert saved_files(target) == {}  # not even the patch: nothing was written


def test_a_file_where_a_folder_belongs_is_refused(cli: Cli, tmp_path: Path) -> None:
    dispatch_id = run_dispatch(cli, TASK)["id"]
    target = tmp_path / "dir"
    target.mkdir()
    (target / "outputs").write_text("mine")
    result = cli("artifacts", dispatch_id, "--download", str(target))
    result.assert_one_line_error(EXIT_USER_ERROR, "it is not a folder")
    assert saved_files(target) == {"outputs": b"mine"}


@pytest.mark.parametrize(
    "name",
    [
        "/etc/passwd", "outputs/../../x", "outputs//x", "outputs/x/", "outputs/a\\b", "outputs/a\x00b",
        "outputs/.git/config", "outputs/..", "outputs/\u202etxt.exe", "outputs/new\nline",
        "outputs/" + "x" * 1100,
    ],
)  # fmt: skip
def test_a_name_that_is_not_a_relative_path_of_plain_names_is_refused(name: str) -> None:
    with pytest.raises(OutpostError, match="refusing to save an artifact named"):
        check_artifact_path(name)


def test_plain_relative_names_are_split_into_folders() -> None:
    assert check_artifact_path("outputs/a/b.txt") == ("outputs", "a", "b.txt")
    assert check_artifact_path("changes.patch") == ("changes.patch",)


def test_a_symlink_planted_after_the_check_is_still_not_followed(tmp_path: Path) -> None:
    body = b"from a hostile server\n"
    now = datetime.now(UTC)
    artifact = ArtifactRead(
        name="outputs/sub/r.txt", size_bytes=len(body), sha256=hashlib.sha256(body).hexdigest(),
        content_type="text/plain", created_at=now, expires_at=now, url_expires_at=now,
        download_url="http://outpost.test/v1/artifacts/a1/outputs/sub/r.txt?sig=x",
    )  # fmt: skip
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "dir"
    (target / "outputs").mkdir(parents=True)
    (target / "outputs" / "sub").symlink_to(outside)
    settings = ClientSettings(url="http://outpost.test", api_key="op_secret_key")
    with ApiClient(
        settings, transport=httpx.MockTransport(lambda _: httpx.Response(200, content=body))
    ) as api:
        with pytest.raises(OutpostError, match="it is a symlink"):
            save_artifact(api, artifact, target)
        (target / "outputs" / "sub").unlink()
        saved = save_artifact(api, artifact, target)
    assert list(outside.iterdir()) == []
    assert saved == target / "outputs" / "sub" / "r.txt"
    assert saved.read_bytes() == body
