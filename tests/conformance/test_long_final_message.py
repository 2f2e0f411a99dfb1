"""A final message longer than the sandbox's line limit reaches the dispatch's `result`: the log keeps
the cut pieces, and the parser reads the JSON line whole again."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.worker.run_report import FINAL_MESSAGE_CHARS
from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer, Server
from tests.fakes.provider import FakeProvider
from tests.integration.helpers import TERMINAL, all_events, wait_for_status
from tests.sandboxes import require_bwrap, sandbox_settings

PROVIDERS = ["anthropic", "openai", "gemini", "xai"]
MAX_LINE_BYTES = 4096
# Words, so that no CLI folds it; ~24 pieces of the line limit once the CLI wraps it in JSON.
LONG_MESSAGE = " ".join(f"word{n}" for n in range(12_000)) + " THE END."


@pytest.fixture
async def server(make_server: MakeServer, fake: FakeProvider, tmp_path: Path) -> Server:
    require_bwrap()
    fake.reset()
    fake.final_text = LONG_MESSAGE
    providers = {name: {"base_url": fake.base_url, "api_key": "sk-long"} for name in PROVIDERS}
    return await make_server(
        data_dir=tmp_path / "data", sandbox=sandbox_settings(), providers=providers,
        agents={"install_dir": INSTALL_DIR},
        limits={"requests_per_s": 0, "max_line_bytes": MAX_LINE_BYTES},
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["claude", "codex", "gemini", "grok"])
async def test_a_final_message_longer_than_a_log_line_is_the_result(server: Server, agent: str) -> None:
    require_installed(agent)
    headers = await server.new_tenant()
    body = {"agent": agent, "task": "Create the file FILE=/workspace/hello.txt", "timeout_s": 90}
    response = await server.client.post("/v1/dispatches", json=body, headers=headers)
    assert response.status_code == 202, response.text
    done = await wait_for_status(server.client, headers, response.json()["id"], TERMINAL, 100)
    assert done["status"] == "succeeded", done
    assert done["result"] is not None, "the long final message was lost"
    assert done["result"].endswith("THE END.")
    assert LONG_MESSAGE[-FINAL_MESSAGE_CHARS:].startswith(done["result"][:100])
    events = await all_events(server.client, headers, done["id"])
    assert max(len(e["data"]["line"].encode()) for e in events if e["kind"] == "log") <= MAX_LINE_BYTES
