"""The server's view of its agent CLIs is read from disk once and kept for a while: a probe polling
`/health/ready` costs no file reads, and an install shows once the view is older than its max age."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from outpost.agents.base import executable_path, npm_prefix
from outpost.agents.pins import CLAUDE_INSTALL
from outpost.agents.status import AgentStatusCache
from outpost.settings import ProviderSettings


def _install_claude(install_dir: Path) -> None:
    """What `npm install` leaves: the package manifest at the pin, and a runnable bin."""
    package = npm_prefix(install_dir) / "node_modules" / CLAUDE_INSTALL.package
    package.mkdir(parents=True)
    (package / "package.json").write_text(json.dumps({"version": CLAUDE_INSTALL.version}))
    program = executable_path(CLAUDE_INSTALL, install_dir)
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)


async def _claude(cache: AgentStatusCache) -> tuple[bool, str | None]:
    status = next(status for status in await cache.statuses() if status.agent == "claude")
    return status.ready, status.installed


async def test_statuses_are_read_once_within_their_max_age(tmp_path: Path) -> None:
    cache = AgentStatusCache(tmp_path, {}, max_age_s=3600)
    assert await _claude(cache) == (False, None)
    _install_claude(tmp_path)
    assert await _claude(cache) == (False, None)


async def test_statuses_older_than_their_max_age_are_read_again(tmp_path: Path) -> None:
    cache = AgentStatusCache(tmp_path, {}, max_age_s=0)
    assert await _claude(cache) == (False, None)
    _install_claude(tmp_path)
    assert await _claude(cache) == (True, CLAUDE_INSTALL.version)


async def test_a_provider_counts_as_configured_with_a_key_or_a_base_url(tmp_path: Path) -> None:
    providers = {
        "anthropic": ProviderSettings(base_url="http://127.0.0.1:9"),
        "openai": ProviderSettings(),
        "gemini": ProviderSettings(api_key=SecretStr("k")),
    }
    statuses = {status.agent: status for status in await AgentStatusCache(tmp_path, providers).statuses()}
    assert statuses["claude"].providers_configured == ("anthropic",)
    assert statuses["codex"].providers_configured == ()
    assert statuses["aider"].providers_configured == ("anthropic", "gemini")
