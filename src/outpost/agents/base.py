"""The agent adapter seam: one adapter per agent CLI, pure (it builds a command and parses output; the
worker does every read, write and launch)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from outpost.agents.catalog import ModelChoice
from outpost.agents.events import OutputParser
from outpost.domain.dispatch import AgentName

Registry = Literal["npm", "pypi"]
HomeFile = bytes | Path
"""A file for the run's home directory: its content, or a host file to copy."""


@dataclass(frozen=True, slots=True)
class Install:
    """Where an agent CLI comes from, pinned: `outpost agents install` installs exactly this version."""

    registry: Registry
    package: str
    version: str
    command: str
    """The executable the package installs (in the install's bin directory)."""

    @property
    def spec(self) -> str:
        return (
            f"{self.package}@{self.version}" if self.registry == "npm" else f"{self.package}=={self.version}"
        )


@dataclass(frozen=True, slots=True)
class GatewayAccess:
    """How a run reaches the model gateway: a base URL inside its sandbox and its one-dispatch token,
    which the CLI sends where it would send a provider key."""

    base_url: str
    token: str

    def url(self, provider: str, suffix: str = "") -> str:
        """The base URL a CLI uses for `provider` (e.g. `…/openai/v1` for a CLI that wants the `/v1`)."""
        return f"{self.base_url}/{provider}{suffix}"


@dataclass(frozen=True, slots=True)
class AgentRun:
    """Everything an adapter needs to build one run's command. Paths are as the run sees them."""

    task: str
    model: ModelChoice | None
    executable: str
    """The CLI's absolute path (for `shell`, the shell)."""
    workdir: str
    home: str
    gateway: GatewayAccess | None
    max_turns: int = 50
    env: Mapping[str, str] = field(default_factory=dict)
    """The dispatch's own (non-secret) variables; the adapter's own settings win over them."""


@dataclass(frozen=True, slots=True)
class AgentCommand:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    home_files: dict[str, HomeFile] = field(default_factory=dict)
    """Files to place in the run's home before it starts, by path relative to the home."""


class AgentAdapter(Protocol):
    name: AgentName

    @property
    def install(self) -> Install | None:
        """The pinned package; None for agents that need nothing installed (shell)."""

    def executable(self) -> Path:
        """Where the CLI lives (under the install dir the adapter was made for)."""

    def build(self, run: AgentRun) -> AgentCommand:
        """The argv, environment and home files that run `run.task` headless, offline but for the
        gateway, with telemetry and auto-update off. Never a provider key: only `run.gateway.token`."""

    def new_parser(self) -> OutputParser:
        """A fresh parser for one run's output lines."""


def npm_prefix(install_dir: Path) -> Path:
    """One npm prefix holds every npm-installed CLI."""
    return install_dir / "npm"


def venv_dir(install_dir: Path, install: Install) -> Path:
    """Each PyPI-installed CLI gets its own virtual environment (their dependencies clash)."""
    return install_dir / "venvs" / install.package


def executable_path(install: Install, install_dir: Path) -> Path:
    """Where `install`'s command lives under `install_dir`."""
    if install.registry == "npm":
        return npm_prefix(install_dir) / "node_modules" / ".bin" / install.command
    return venv_dir(install_dir, install) / "bin" / install.command
