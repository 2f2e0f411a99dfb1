"""The Grok agent: `@vibe-kit/grok-cli` (`grok -p`), as the agent CLI reference §5.1 runs it headless.

xAI's official Grok Build (§5.3) is not on npm or PyPI, so it cannot be installed here; its command is
kept ready in `grok_build_command` for the day it can. The Grok output parser reads both CLIs' output.
"""

from __future__ import annotations

from outpost.agents.base import AgentCommand, AgentRun
from outpost.agents.common import InstalledAgent, command_env, model_and_gateway
from outpost.agents.events import OutputParser
from outpost.agents.parsers.grok import GrokOutputParser
from outpost.agents.pins import GROK_INSTALL
from outpost.domain.dispatch import AgentName


class GrokAgent(InstalledAgent):
    PIN = GROK_INSTALL
    name = AgentName.GROK

    def build(self, run: AgentRun) -> AgentCommand:
        """Headless `-p` approves every tool by itself and prints its messages as JSON lines at the end.
        It sends no telemetry and has no updater, so the gateway is all it needs."""
        model, gateway = model_and_gateway(run, self.name)
        argv = [
            run.executable, "-p", run.task, "-d", run.workdir, "-m", model.model.id,
            "--max-tool-rounds", str(run.max_turns),
        ]  # fmt: skip
        env = command_env(run, {"GROK_API_KEY": gateway.token, "GROK_BASE_URL": gateway.url("xai", "/v1")})
        return AgentCommand(argv=argv, env=env)

    def new_parser(self) -> OutputParser:
        return GrokOutputParser()


def grok_build_command(run: AgentRun) -> AgentCommand:
    """The command for xAI's Grok Build (`grok`, Rust): unverified here (documentation and source only),
    not registered. Its `json` output is one result object, which the Grok parser reads."""
    model, gateway = model_and_gateway(run, AgentName.GROK)
    argv = [
        run.executable, "-p", run.task, "--output-format", "json",
        "--yolo",  # = --permission-mode bypassPermissions
        "--cwd", run.workdir, "-m", model.model.id, "--max-turns", str(run.max_turns),
        "--no-auto-update",
    ]  # fmt: skip
    env = command_env(run, {
        "XAI_API_KEY": gateway.token,
        "GROK_XAI_API_BASE_URL": gateway.url("xai", "/v1"),
        "GROK_DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    })  # fmt: skip
    return AgentCommand(argv=argv, env=env)
