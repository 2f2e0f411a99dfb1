"""Claude Code (`claude -p`), as the agent CLI reference §1 and §11 run it headless and offline."""

from __future__ import annotations

from outpost.agents.base import AgentCommand, AgentRun
from outpost.agents.common import InstalledAgent, command_env, model_and_gateway
from outpost.agents.events import OutputParser
from outpost.agents.parsers.claude import ClaudeOutputParser
from outpost.agents.pins import CLAUDE_INSTALL
from outpost.domain.dispatch import AgentName

MAX_RETRIES = "2"
"""Claude Code retries even a refused key with backoff, ten times by default (minutes of a dead run)."""


class ClaudeAgent(InstalledAgent):
    PIN = CLAUDE_INSTALL
    name = AgentName.CLAUDE

    def build(self, run: AgentRun) -> AgentCommand:
        """Claude Code has no working-directory flag: it works in the process's cwd (`run.workdir`)."""
        model, gateway = model_and_gateway(run, self.name)
        argv = [
            run.executable, "-p", run.task,
            "--output-format", "stream-json", "--verbose",  # stream-json requires --verbose in -p mode
            "--model", model.model.id,
            "--dangerously-skip-permissions",
            "--max-turns", str(run.max_turns),
        ]  # fmt: skip
        env = command_env(run, {
            "ANTHROPIC_BASE_URL": gateway.url("anthropic"),  # the CLI appends /v1/messages
            "ANTHROPIC_API_KEY": gateway.token,
            # Alone this silences every other host (updates, telemetry, error reports); the three below
            # say the same explicitly, in case a release narrows what it implies.
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            # Sandboxes may run as root, where --dangerously-skip-permissions is refused without it.
            "IS_SANDBOX": "1",
            "CLAUDE_CODE_MAX_RETRIES": MAX_RETRIES,
            "CLAUDE_CONFIG_DIR": f"{run.home}/.claude",
        })  # fmt: skip
        return AgentCommand(argv=argv, env=env)

    def new_parser(self) -> OutputParser:
        return ClaudeOutputParser()
