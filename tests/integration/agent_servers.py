"""A real `outpost serve` whose runs call the fake provider: the pinned agent CLIs from the project's
install dir, every provider's base URL pointed at the fake, one tenant to dispatch as."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.agent_installs import INSTALL_DIR
from tests.fakes.provider import FakeProvider
from tests.integration.helpers import TERMINAL
from tests.integration.processes import ServerProcess, wait_for_status_sync

REAL_KEY = "sk-served-real-key-7c41d2e8"
PROVIDERS = ("anthropic", "openai", "gemini", "xai", "deepseek")


def provider_env(fake: FakeProvider) -> dict[str, str]:
    """OUTPOST_* settings that send every provider's calls to `fake`, and find the installed CLIs."""
    env = {"OUTPOST_AGENTS__INSTALL_DIR": str(INSTALL_DIR)}
    for name in PROVIDERS:
        env[f"OUTPOST_PROVIDERS__{name.upper()}__BASE_URL"] = fake.base_url
        env[f"OUTPOST_PROVIDERS__{name.upper()}__API_KEY"] = REAL_KEY
    return env


@dataclass
class AgentServer:
    process: ServerProcess
    client: httpx.Client
    """Sends the tenant's key with every request."""

    def submit(self, agent: str, task: str, **fields: Any) -> str:
        response = self.client.post("/v1/dispatches", json={"agent": agent, "task": task, **fields})
        assert response.status_code == 202, response.text
        dispatch_id: str = response.json()["id"]
        return dispatch_id

    def finished(self, dispatch_id: str, timeout_s: float = 60) -> dict[str, Any]:
        return wait_for_status_sync(self.client, dispatch_id, TERMINAL, timeout_s)

    def events(self, dispatch_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        after = 0
        while True:
            page = self.client.get(
                f"/v1/dispatches/{dispatch_id}/logs", params={"after": after, "limit": 1000}
            )
            assert page.status_code == 200, page.text
            body = page.json()
            events.extend(body["items"])
            if body["next_after"] is None:
                return events
            after = body["next_after"]


@contextmanager
def agent_server(data_dir: Path, fake: FakeProvider, **env: str) -> Iterator[AgentServer]:
    """A started server with `env` on top of the fake's provider settings; stopped on exit."""
    process = ServerProcess(data_dir, env={**provider_env(fake), **env})
    process.start()
    try:
        key = process.create_tenant("agents")
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=process.url, headers=headers, timeout=30) as client:
            yield AgentServer(process, client)
    finally:
        process.stop()
