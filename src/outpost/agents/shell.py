"""The `shell` agent: the task is a POSIX shell script, run as is; it needs no model and no gateway."""

from __future__ import annotations

from pathlib import Path

from outpost.agents.base import AgentCommand, AgentRun, Install
from outpost.agents.events import OutputParser
from outpost.agents.parsers.shell import ShellOutputParser
from outpost.domain.dispatch import AgentName

SHELL = Path("/bin/sh")


class ShellAgent:
    name = AgentName.SHELL
    install: Install | None = None  # nothing to install: the system shell

    def executable(self) -> Path:
        return SHELL

    def build(self, run: AgentRun) -> AgentCommand:
        return AgentCommand(argv=[run.executable, "-c", run.task], env=dict(run.env))

    def new_parser(self) -> OutputParser:
        return ShellOutputParser()
