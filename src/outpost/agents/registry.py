"""Which agents this server can run."""

from __future__ import annotations

from pathlib import Path

from outpost.agents.aider import AiderAgent
from outpost.agents.base import AgentAdapter
from outpost.agents.claude import ClaudeAgent
from outpost.agents.codex import CodexAgent
from outpost.agents.gemini import GeminiAgent
from outpost.agents.grok import GrokAgent
from outpost.agents.shell import ShellAgent
from outpost.domain.dispatch import AgentName
from outpost.errors import InvalidInput


class AgentRegistry:
    def __init__(self, adapters: list[AgentAdapter]) -> None:
        self._adapters = {adapter.name: adapter for adapter in adapters}

    def get(self, name: AgentName | str) -> AgentAdapter:
        """Raises InvalidInput for an agent this server cannot run."""
        self.check_available(name)
        return self._adapters[AgentName(name)]

    def check_available(self, name: AgentName | str) -> None:
        if name not in self._adapters:
            available = ", ".join(sorted(self._adapters))
            raise InvalidInput(
                f"agent {name!r} is not available on this server (available: {available})", "agent"
            )

    def names(self) -> list[AgentName]:
        """The agents this registry holds, sorted by name."""
        return sorted(self._adapters)


def default_registry(install_dir: Path) -> AgentRegistry:
    """Every agent Outpost knows, with the CLIs expected under `install_dir` (an absolute path: runs see
    it at the same place)."""
    return AgentRegistry([
        ShellAgent(),
        ClaudeAgent(install_dir),
        CodexAgent(install_dir),
        GeminiAgent(install_dir),
        AiderAgent(install_dir),
        GrokAgent(install_dir),
    ])  # fmt: skip
