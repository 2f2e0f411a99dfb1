"""What `outpost agents` and `GET /health/ready` say about each agent CLI: its pin, the version installed,
whether it can run, and which of its model providers the server has a key or base URL for.

Reading it runs nothing: installed versions come from package metadata files and the executables are
only stat'ed and their first bytes read (`outpost.agents.install`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outpost.agents.base import executable_path
from outpost.agents.catalog import default_catalog
from outpost.agents.install import executable_state, installed_version
from outpost.agents.pins import ALL_INSTALLS
from outpost.agents.readiness import readiness
from outpost.domain.dispatch import AgentName
from outpost.settings import ProviderSettings

STATUS_MAX_AGE_S = 30.0
"""How stale the server's view of its agents may be: an install or removal shows within this time."""


@dataclass(frozen=True, slots=True)
class AgentStatus:
    agent: str
    package: str | None
    pin: str | None
    installed: str | None
    executable: str
    ready: bool
    reason: str | None
    """Why the agent is not ready; None when it is."""
    providers: tuple[str, ...]
    """The model providers the agent can use, in the catalog's order."""
    providers_configured: tuple[str, ...]
    """Those of `providers` the server has a key or a base URL for."""

    def as_dict(self) -> dict[str, Any]:
        """The `outpost agents --json` row."""
        return {
            "agent": self.agent, "package": self.package, "pin": self.pin, "installed": self.installed,
            "executable": self.executable, "ready": self.ready, "reason": self.reason,
            "providers": list(self.providers), "providers_configured": list(self.providers_configured),
        }  # fmt: skip


def configured_providers(providers: Mapping[str, ProviderSettings]) -> frozenset[str]:
    """The providers the server can forward to: those with a key or a base URL."""
    return frozenset(
        name
        for name, provider in providers.items()
        if provider.api_key is not None or provider.base_url is not None
    )


def agent_statuses(install_dir: Path, configured: frozenset[str]) -> list[AgentStatus]:
    """Every agent: the installable ones in pin order, then the rest (shell)."""
    others = [agent.value for agent in AgentName if agent not in ALL_INSTALLS]
    return [agent_status(agent, install_dir, configured) for agent in [*ALL_INSTALLS, *others]]


def agent_status(agent: str, install_dir: Path, configured: frozenset[str]) -> AgentStatus:
    install_dir = install_dir.resolve()
    providers = _providers(agent)
    known = [name for name in providers if name in configured]
    pinned = ALL_INSTALLS.get(agent)
    if pinned is None:  # shell: nothing to install, always ready
        return AgentStatus(agent, None, None, None, "/bin/sh", True, None, providers, tuple(known))
    path = executable_path(pinned, install_dir)
    installed = installed_version(pinned, install_dir)
    verdict = readiness(pinned, installed, executable_state(path))
    return AgentStatus(
        agent, pinned.package, pinned.version, installed, str(path), verdict.ready, verdict.reason,
        providers, tuple(known),
    )  # fmt: skip


def _providers(agent: str) -> tuple[str, ...]:
    """The model providers `agent` can use, in the catalog's order, without repeats."""
    catalog = default_catalog()
    names = [catalog.vendors[vendor].provider for vendor in catalog.agents.get(agent, [])]
    return tuple(dict.fromkeys(names))


class AgentStatusCache:
    """The agents' statuses as a server reports them: read again at most every `max_age_s`, so that a
    load balancer polling `/health/ready` costs no disk reads, while an install still shows soon."""

    def __init__(
        self,
        install_dir: Path,
        providers: Mapping[str, ProviderSettings],
        max_age_s: float = STATUS_MAX_AGE_S,
    ) -> None:
        self._install_dir = install_dir
        self._configured = configured_providers(providers)  # settings: fixed for the server's life
        self._max_age_s = max_age_s
        self._statuses: list[AgentStatus] = []
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def statuses(self) -> list[AgentStatus]:
        async with self._lock:  # concurrent probes wait for one read rather than each reading
            now = time.monotonic()
            if self._read_at is None or now - self._read_at >= self._max_age_s:
                # File reads and stats: off the event loop, which a slow disk must not stall.
                self._statuses = await asyncio.to_thread(agent_statuses, self._install_dir, self._configured)
                self._read_at = now
            return self._statuses
