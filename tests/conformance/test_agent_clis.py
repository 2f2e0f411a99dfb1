"""The REAL agent CLIs, pinned and installed by the project's scripts, run in the bwrap sandbox through the
model gateway against the fake provider: the file lands in the workspace, the final message, usage and
cost reach the dispatch, provider errors become precise reasons, and no other host is tried."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from outpost.agents.catalog import cost_micro_usd, default_catalog, resolve_model
from outpost.agents.events import Usage
from outpost.domain.dispatch import Tier
from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.integration.helpers import TERMINAL, all_events, settled_cost_usd, wait_for_status
from tests.sandboxes import require_bwrap, sandbox_settings

REAL_KEY = "sk-conformance-real-key-5f1e0c9a"
TASK = "Create the file FILE=/workspace/hello.txt"
CONTENT = "hello from fake llm\n"
AGENTS = ["claude", "codex", "gemini", "aider", "grok"]
PROVIDERS = ["anthropic", "openai", "gemini", "xai", "deepseek"]
RUN_TIMEOUT_S = 90


@dataclass
class Rig:
    server: Server
    fake: FakeProvider
    headers: dict[str, str]
    final_files: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per dispatch: the workspace's files as the run left them (read just before it is removed)."""

    async def final_workspace(self, dispatch_id: str) -> dict[str, str]:
        """The workspace is read as the worker removes it, just after the dispatch ended."""
        for _ in range(250):
            if dispatch_id in self.final_files:
                return self.final_files[dispatch_id]
            await asyncio.sleep(0.02)
        raise AssertionError(f"the workspace of {dispatch_id} was never removed")

    async def run(self, agent: str, **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        body = {"agent": agent, "task": TASK, "timeout_s": RUN_TIMEOUT_S, **fields}
        response = await self.server.client.post("/v1/dispatches", json=body, headers=self.headers)
        assert response.status_code == 202, response.text
        created = response.json()
        done = await wait_for_status(
            self.server.client, self.headers, created["id"], TERMINAL, timeout_s=RUN_TIMEOUT_S + 10
        )
        return done, await all_events(self.server.client, self.headers, created["id"])


@pytest.fixture
async def rig(make_server: MakeServer, fake: FakeProvider, tmp_path: Path) -> Rig:
    require_bwrap()
    fake.reset()
    providers = {name: {"base_url": fake.base_url, "api_key": REAL_KEY} for name in PROVIDERS}
    server = await make_server(
        data_dir=tmp_path / "data", sandbox=sandbox_settings(), providers=providers,
        agents={"install_dir": INSTALL_DIR}, limits={"requests_per_s": 0},
    )  # fmt: skip
    rig = Rig(server, fake, await server.new_tenant())
    _keep_final_workspaces(rig)
    return rig


def _keep_final_workspaces(rig: Rig) -> None:
    """Read each workspace as the worker removes it: the files the agent really wrote."""
    sandbox = rig.server.container.sandbox
    remove = sandbox.remove_workspace

    def read(workdir: Path) -> dict[str, str]:
        return {p.name: p.read_text(errors="replace") for p in workdir.iterdir() if p.is_file()}

    async def reading_first(workdir: Path) -> None:
        rig.final_files[workdir.name] = await asyncio.to_thread(read, workdir)
        await remove(workdir)

    sandbox.remove_workspace = reading_first  # type: ignore[method-assign]


@pytest.mark.slow
@pytest.mark.parametrize("agent", AGENTS)
async def test_the_cli_writes_the_file_and_its_usage_and_cost_reach_the_dispatch(
    rig: Rig, agent: str
) -> None:
    require_installed(agent)
    done, events = await rig.run(agent)
    assert done["status"] == "succeeded", (done, _log_tail(events))
    assert (await rig.final_workspace(done["id"])).get("hello.txt") == CONTENT
    if agent != "aider":  # aider's final message is its prose around the edit, not the script's text
        assert "DONE: wrote the file." in (done["result"] or "")
    metered = [event["data"] for event in events if event["kind"] == "usage"]
    assert metered, "the gateway metered no call"
    assert len(metered) == len([r for r in rig.fake.requests if r.body and not _is_side_call(r.path)])
    total = Usage(**{name: sum(m[name] for m in metered) for name in done["usage"]})
    assert done["usage"] == _usage_dict(total)
    assert done["usage"]["input_tokens"] > 0
    assert done["usage"]["output_tokens"] > 0
    choice = resolve_model(default_catalog(), agent, Tier.BALANCED, None)
    assert choice is not None
    assert done["model"] == choice.model.id
    assert done["cost_usd"] == pytest.approx(settled_cost_usd(events), abs=3e-6)
    assert done["cost_usd"] >= cost_micro_usd(Usage(), choice.model) / 1e6
    assert all(request.api_key == REAL_KEY for request in rig.fake.requests)
    assert [event for event in events if event["kind"] == "egress"] == [], "the CLI tried another host"


def _usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
        "cache_read_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens,
    }  # fmt: skip


def _is_side_call(path: str) -> bool:
    return path.endswith(("/models", ":countTokens", "/count_tokens"))


def _log_tail(events: list[dict[str, Any]]) -> list[str]:
    return [str(event["data"].get("line")) for event in events if event["kind"] == "log"][-30:]


@pytest.mark.slow
@pytest.mark.parametrize(("status", "reason"), [(401, "auth"), (429, "quota"), (500, "provider_error")])
@pytest.mark.parametrize("agent", AGENTS)
async def test_provider_errors_end_the_dispatch_with_a_precise_reason(
    rig: Rig, agent: str, status: int, reason: str
) -> None:
    require_installed(agent)
    rig.fake.fail_next(status, retry_after_s=1 if status == 429 else None, count=1000)
    done, events = await rig.run(agent)
    assert done["status"] == "failed", (done, _log_tail(events))
    assert done["failure"]["reason"] == reason, (done, _log_tail(events))
    assert str(status) in done["failure"]["detail"]
    assert [event for event in events if event["kind"] == "egress"] == []


def _sandbox_processes(uid_first: int, uid_count: int) -> list[Path]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        uid_line = next((line for line in status.splitlines() if line.startswith("Uid:")), None)
        if uid_line is not None and uid_first <= int(uid_line.split()[1]) < uid_first + uid_count:
            found.append(entry)
    return found


def _what_the_sandbox_holds(rig: Rig) -> str:
    """Every sandbox process's environment and argv, and every file staged for the runs (home files,
    scratch, workspace), as one text."""
    box = rig.server.container.settings.sandbox
    texts = []
    for proc in _sandbox_processes(box.uid_first, box.uid_count):
        for name in ("environ", "cmdline"):
            try:
                texts.append((proc / name).read_bytes().decode(errors="replace"))
            except OSError:
                continue
    for directory, subdirs, files in os.walk(box.run_dir):
        if "ro" in subdirs and "scratch" in subdirs:
            subdirs.remove("ro")  # a run's binds of the CLIs' install dir: the same for every run
        for name in files:
            with contextlib.suppress(OSError):  # a finished run's files go away meanwhile
                texts.append(Path(directory, name).read_bytes().decode(errors="replace"))
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.parametrize("agent", AGENTS)
async def test_no_provider_key_reaches_the_sandbox_or_any_output(
    rig: Rig, agent: str, caplog: pytest.LogCaptureFixture
) -> None:
    require_installed(agent)
    rig.fake.first_byte_delay_s = 2.0
    rig.fake.set_mode("slow_first_byte")  # the CLI waits on its first call while the sandbox is searched
    submitted = asyncio.create_task(rig.run(agent))
    while not rig.fake.requests:  # noqa: ASYNC110 - the fake records requests from its own thread
        await asyncio.sleep(0.05)
    held = await asyncio.to_thread(_what_the_sandbox_holds, rig)
    done, events = await submitted
    assert "opgw_" in held, "the search did not see the run's environment"
    assert REAL_KEY not in held
    dispatch = (await rig.server.client.get(f"/v1/dispatches/{done['id']}", headers=rig.headers)).text
    listing = (await rig.server.client.get("/v1/dispatches", headers=rig.headers)).text
    for text in (repr(events), dispatch, listing, caplog.text):
        assert REAL_KEY not in text
    assert done["status"] == "succeeded", (done, _log_tail(events))
