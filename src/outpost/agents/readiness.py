"""Whether an agent can run: a pure rule over what is installed, shared by `outpost agents` and the
server's readiness check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from outpost.agents.base import Install

ExecutableState = Literal["ok", "missing", "not_executable"]
"""What is at an agent's executable path: a program every uid can run, nothing, or something else (no
execute bit for others, or neither an ELF binary nor a `#!` script, such as a stub an install script was
meant to replace)."""


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str | None = None
    """Why the agent is not ready; None when it is."""


def readiness(install: Install | None, installed: str | None, executable: ExecutableState) -> Readiness:
    """Ready when the pinned version is installed and its executable can run. `install` is None for
    agents that need nothing installed (shell), which are always ready."""
    if install is None:
        return Readiness(ready=True)
    if installed is None:
        return Readiness(ready=False, reason="not installed")
    if installed != install.version:
        return Readiness(ready=False, reason=f"version {installed} differs from the pin {install.version}")
    if executable == "missing":
        return Readiness(ready=False, reason=f"executable {install.command} is missing")
    if executable == "not_executable":
        return Readiness(ready=False, reason=f"executable {install.command} is not executable")
    return Readiness(ready=True)
