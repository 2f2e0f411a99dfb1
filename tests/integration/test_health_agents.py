"""`GET /health/ready` reports every agent CLI with the facts `outpost agents --json` gives, for
information only: a server whose agent CLIs are missing is still ready (it can run `shell`)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from outpost.agents.pins import ALL_INSTALLS, CLAUDE_INSTALL
from tests.agent_installs import INSTALL_DIR, require_installed
from tests.conftest import MakeServer
from tests.integration.processes import OUTPOST


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The report reads the install dir, not the store: one database (SQLite) is enough."""
    return f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}"


async def _ready_agents(make_server: MakeServer, **settings: Any) -> dict[str, dict[str, Any]]:
    server = await make_server(limits={"requests_per_s": 0}, **settings)
    response = await server.client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    agents: dict[str, dict[str, Any]] = body["agents"]
    return agents


async def test_an_installed_agent_is_ready_at_its_pin_as_the_cli_reports_it(make_server: MakeServer) -> None:
    require_installed("claude")
    agents = await _ready_agents(
        make_server, agents={"install_dir": INSTALL_DIR}, providers={"anthropic": {"api_key": "sk-test"}}
    )
    assert agents["claude"] == {
        "package": CLAUDE_INSTALL.package, "pin": CLAUDE_INSTALL.version,
        "installed": CLAUDE_INSTALL.version, "ready": True, "reason": None,
        "providers": ["anthropic"], "providers_configured": ["anthropic"],
    }  # fmt: skip
    env = {
        "OUTPOST_AGENTS__INSTALL_DIR": str(INSTALL_DIR),
        "OUTPOST_PROVIDERS__ANTHROPIC__API_KEY": "sk-test",
    }
    cli_rows = _cli_rows(env)
    assert agents == {row["agent"]: _without(row, "agent", "executable") for row in cli_rows}


async def test_missing_agents_are_reported_but_leave_the_server_ready(
    make_server: MakeServer, tmp_path: Path
) -> None:
    empty = tmp_path / "no-agents"
    empty.mkdir()
    agents = await _ready_agents(make_server, agents={"install_dir": empty})
    for name, pinned in ALL_INSTALLS.items():
        assert agents[name]["installed"] is None
        assert (agents[name]["pin"], agents[name]["ready"]) == (pinned.version, False)
        assert agents[name]["reason"] == "not installed"
        assert agents[name]["providers_configured"] == []
    assert agents["shell"] == {
        "package": None, "pin": None, "installed": None, "ready": True, "reason": None,
        "providers": [], "providers_configured": [],
    }  # fmt: skip


def _without(row: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in names}


def _cli_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    """`outpost agents --json` with no OUTPOST_* settings but `env`."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    done = subprocess.run(
        [OUTPOST, "agents", "--json"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


async def test_a_server_without_a_worker_is_ready_whatever_its_sandbox(make_server: MakeServer) -> None:
    """An API-only server runs nothing: a sandbox backend that could not run here must not make it unready."""
    server = await make_server(worker={"enabled": False})
    server.container.sandbox.problems = lambda: ["bubblewrap is missing"]  # type: ignore[method-assign]
    response = await server.client.get("/health/ready")
    assert response.status_code == 200, response.text
    assert "sandbox" not in response.json()["checks"]
