"""What every model-driven adapter does alike: know its pinned install, insist on a model and the
gateway, and layer its own environment over the dispatch's."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from outpost.agents.base import AgentRun, GatewayAccess, Install, executable_path
from outpost.agents.catalog import ModelChoice
from outpost.domain.dispatch import AgentName


def model_and_gateway(run: AgentRun, agent: AgentName) -> tuple[ModelChoice, GatewayAccess]:
    """The run's model and gateway. Raises ValueError when either is missing: the worker resolves both
    before it builds a command, so a gap here is a bug, not bad input."""
    if run.model is None:
        raise ValueError(f"a {agent} run needs a model")
    if run.gateway is None:
        raise ValueError(f"a {agent} run needs the model gateway")
    return run.model, run.gateway


def command_env(run: AgentRun, own: Mapping[str, str]) -> dict[str, str]:
    """The dispatch's variables with the adapter's own on top, so that a dispatch can never replace the
    gateway token, a base URL or an offline switch."""
    return {**run.env, **own}


class InstalledAgent:
    """An adapter whose CLI `outpost agents install` puts under `install_dir` (at `PIN`)."""

    PIN: ClassVar[Install]

    def __init__(self, install_dir: Path) -> None:
        self.install_dir = install_dir

    @property
    def install(self) -> Install | None:
        return self.PIN

    def executable(self) -> Path:
        return executable_path(self.PIN, self.install_dir)
