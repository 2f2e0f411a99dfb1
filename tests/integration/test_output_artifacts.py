"""Files a run leaves in `$OUTPOST_OUTPUTS_DIR` come back as artifacts `outputs/<path>`: real server, real
sandbox, real `shell` runs, downloads by signed link."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import MakeServer, Server
from tests.git_repos import Origin
from tests.integration.api_checks import assert_problem
from tests.integration.helpers import TERMINAL, all_events, submit, wait_for_status
from tests.sandboxes import backend

OUT = '"$OUTPOST_OUTPUTS_DIR"'


@pytest.fixture
async def out_server(make_server: MakeServer) -> Server:
    return await make_server(
        limits={"requests_per_s": 0}, git={"allow_local": True}, workspaces={"quota_bytes": 64 * 1024**2}
    )


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    origin = Origin(tmp_path / "origin")
    origin.commit({"README.md": b"hello\n"})
    return origin


async def run(server: Server, headers: dict[str, str], task: str, **fields: Any) -> dict[str, Any]:
    created = await submit(server.client, headers, task, **fields)
    done = await wait_for_status(server.client, headers, created["id"], TERMINAL, timeout_s=60)
    assert done["status"] == "succeeded", done
    return done


async def artifacts_of(
    server: Server, headers: dict[str, str], dispatch_id: str
) -> dict[str, dict[str, Any]]:
    response = await server.client.get(f"/v1/dispatches/{dispatch_id}/artifacts", headers=headers)
    assert response.status_code == 200, response.text
    return {item["name"]: item for item in response.json()["items"]}


async def outputs_of(server: Server, headers: dict[str, str], dispatch_id: str) -> dict[str, bytes]:
    """Every `outputs/...` artifact's content, downloaded by its signed link and checked."""
    found = {}
    for name, item in (await artifacts_of(server, headers, dispatch_id)).items():
        if name.startswith("outputs/"):
            response = await server.client.get(item["download_url"])
            assert response.status_code == 200, response.text
            assert hashlib.sha256(response.content).hexdigest() == item["sha256"]
            found[name] = response.content
    return found


async def kept_event(server: Server, headers: dict[str, str], dispatch_id: str) -> dict[str, Any]:
    events = await all_events(server.client, headers, dispatch_id)
    [kept] = [event["data"] for event in events if event["kind"] == "artifacts"]
    data: dict[str, Any] = kept
    return data


async def log_lines(server: Server, headers: dict[str, str], dispatch_id: str) -> list[str]:
    return [
        e["data"]["line"] for e in await all_events(server.client, headers, dispatch_id) if e["kind"] == "log"
    ]


async def test_outputs_come_back_with_their_bytes_and_stay_out_of_the_patch(
    out_server: Server, origin: Origin
) -> None:
    headers = await out_server.new_tenant()
    task = (
        f"echo {OUT}; mkdir -p {OUT}/sub && echo hi > {OUT}/sub/r.txt; "
        f"printf '{{\"a\": 1}}' > {OUT}/report.json; seq 1 300000 > {OUT}/numbers.txt; "
        "echo change > changed.txt; git status --porcelain"
    )
    done = await run(out_server, headers, task, repo={"url": origin.url, "ref": "main"})
    lines = await log_lines(out_server, headers, done["id"])
    expected_dir = "/workspace/.outpost/outputs" if backend() == "bwrap" else None
    assert lines[0] == expected_dir or (expected_dir is None and lines[0].endswith("/.outpost/outputs"))
    assert lines[1:] == ["?? changed.txt"]  # the agent's own git leaves its outputs alone too

    numbers = "".join(f"{n}\n" for n in range(1, 300001)).encode()
    assert await outputs_of(out_server, headers, done["id"]) == {
        "outputs/numbers.txt": numbers, "outputs/report.json": b'{"a": 1}', "outputs/sub/r.txt": b"hi\n",
    }  # fmt: skip
    found = await artifacts_of(out_server, headers, done["id"])
    assert found["outputs/report.json"]["content_type"] == "application/json"
    patch = (await out_server.client.get(found["changes.patch"]["download_url"])).text
    assert "b/changed.txt" in patch
    assert ".outpost" not in patch
    listing = json.loads((await out_server.client.get(found["changed-files.json"]["download_url"])).content)
    assert [entry["path"] for entry in listing["files"]] == ["changed.txt"]
    assert (await kept_event(out_server, headers, done["id"])).get("warnings") is None


async def test_a_name_with_slashes_downloads_by_its_signed_link_in_either_spelling(
    out_server: Server,
) -> None:
    headers = await out_server.new_tenant()
    done = await run(out_server, headers, f"mkdir -p {OUT}/a/b && seq 1 1000 > {OUT}/a/b/n.txt")
    item = (await artifacts_of(out_server, headers, done["id"]))["outputs/a/b/n.txt"]
    url = item["download_url"]
    assert "/v1/artifacts/" in url
    assert "/outputs/a/b/n.txt?" in url
    whole = await out_server.client.get(url)
    assert whole.headers["content-disposition"] == "attachment; filename=\"n.txt\"; filename*=UTF-8''n.txt"
    assert whole.headers["x-content-type-options"] == "nosniff"
    escaped = await out_server.client.get(url.replace("/outputs/a/b/n.txt", "/outputs%2Fa%2Fb%2Fn.txt"))
    assert escaped.content == whole.content
    part = await out_server.client.get(url, headers={"Range": "bytes=0-9"})
    assert (part.status_code, part.content) == (206, whole.content[:10])
    for altered in ("/outputs/a/b/m.txt", "/outputs/a/n.txt", "/outputs/a/b/n.txt/x"):
        assert_problem(await out_server.client.get(url.replace("/outputs/a/b/n.txt", altered)), 403)


@pytest.mark.parametrize(
    "plant",
    [
        "rm -rf .outpost && ln -s /etc .outpost",
        f"rm -rf {OUT} && ln -s /etc {OUT}",
        "rm -rf .outpost && ln -s {data_dir} .outpost",
        f"ln -s /etc/passwd {OUT}/passwd && ln -s /etc {OUT}/etc && echo mine > {OUT}/mine.txt",
    ],
)
async def test_planted_symlinks_yield_nothing_from_outside_and_a_warning(
    out_server: Server, plant: str
) -> None:
    headers = await out_server.new_tenant()
    task = plant.replace("{data_dir}", str(out_server.container.settings.data_dir))
    done = await run(out_server, headers, task)
    outputs = await outputs_of(out_server, headers, done["id"])
    assert set(outputs) <= {"outputs/mine.txt"}
    assert set(outputs) == ({"outputs/mine.txt"} if "mine" in plant else set())
    warnings = (await kept_event(out_server, headers, done["id"]))["warnings"]
    assert any("symlink" in warning for warning in warnings), warnings
    everything = b"".join(
        [(await out_server.client.get(item["download_url"])).content
         for item in (await artifacts_of(out_server, headers, done["id"])).values()]
    )  # fmt: skip
    assert b"root:x:0:0" not in everything


async def test_a_fifo_does_not_hang_and_hostile_names_are_kept_or_left_out_with_a_warning(
    out_server: Server,
) -> None:
    headers = await out_server.new_tenant()
    longest, too_long = "l" * (255 - len("outputs/")), "t" * 250
    task = (
        f"cd {OUT} && mkfifo pipe && printf n > \"$(printf 'new\\nline')\" && printf q > 'a\"b;c.txt' && "
        f"printf u > \"$(printf 'bad\\377')\" && printf d > '..x' && printf e > 'é ü.txt' && "
        f"printf L > {longest} && printf T > {too_long} && printf s > '...'"
    )
    done = await run(out_server, headers, task, timeout_s=30)
    outputs = await outputs_of(out_server, headers, done["id"])
    assert outputs == {
        'outputs/a"b;c.txt': b"q", "outputs/..x": b"d", "outputs/é ü.txt": b"e", f"outputs/{longest}": b"L",
    }  # fmt: skip
    warnings = "\n".join((await kept_event(out_server, headers, done["id"]))["warnings"])
    for shown in ("outputs/new\\nline", "outputs/bad\\xff", "longer than 255", "outputs/...:", "pipe"):
        assert shown in warnings, warnings
    found = await artifacts_of(out_server, headers, done["id"])
    for name, disposition in [
        ('outputs/a"b;c.txt', "attachment; filename=\"a_b_c.txt\"; filename*=UTF-8''a%22b%3Bc.txt"),
        ("outputs/é ü.txt", "attachment; filename=\"___.txt\"; filename*=UTF-8''%C3%A9%20%C3%BC.txt"),
    ]:
        assert f"/{quote(name, safe='/')}?" in found[name]["download_url"]
        response = await out_server.client.get(found[name]["download_url"])
        assert response.headers["content-disposition"] == disposition


async def test_outputs_past_the_caps_are_left_out_with_a_warning(make_server: MakeServer) -> None:
    server = await make_server(
        limits={"requests_per_s": 0},
        retention={"outputs_max_files": 3, "outputs_max_file_bytes": 1000, "outputs_max_total_bytes": 10_000},
    )
    headers = await server.new_tenant()
    task = f"head -c 1001 /dev/zero > {OUT}/a-big; for n in 1 2 3 4 5; do echo $n > {OUT}/f$n; done"
    done = await run(server, headers, task)
    assert await outputs_of(server, headers, done["id"]) == {
        f"outputs/f{n}": f"{n}\n".encode() for n in (1, 2, 3)
    }
    warnings = (await kept_event(server, headers, done["id"]))["warnings"]
    assert warnings == [
        "outputs/: over 3 files; the rest were left out",
        "outputs/a-big: larger than the 1000 bytes a file may have; left out",
    ]


async def test_a_persistent_workspace_reports_each_runs_outputs_once(
    out_server: Server, tmp_path: Path
) -> None:
    headers = await out_server.new_tenant()
    workspace = {"mode": "persistent", "name": "reports"}
    first = await run(
        out_server, headers, f"echo one > {OUT}/one.txt; echo kept > notes.txt", workspace=workspace
    )
    assert set(await outputs_of(out_server, headers, first["id"])) == {"outputs/one.txt"}
    second = await run(
        out_server, headers, f"ls -A {OUT}; cat notes.txt; echo two > {OUT}/two.txt", workspace=workspace
    )
    assert await log_lines(out_server, headers, second["id"]) == ["kept"]  # run 1's outputs are gone
    assert await outputs_of(out_server, headers, second["id"]) == {"outputs/two.txt": b"two\n"}

    canary = tmp_path / "canary"
    (canary / "outputs").mkdir(parents=True)
    (canary / "outputs" / "keep.txt").write_text("keep")
    await run(out_server, headers, f"rm -rf .outpost && ln -s {canary} .outpost", workspace=workspace)
    third = await run(out_server, headers, f"echo three > {OUT}/three.txt", workspace=workspace)
    assert await outputs_of(out_server, headers, third["id"]) == {"outputs/three.txt": b"three\n"}
    assert (
        canary / "outputs" / "keep.txt"
    ).read_text() == "keep"  # the planted link was removed, not followed
