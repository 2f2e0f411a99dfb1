"""Gemini CLI (`gemini -p`), as the agent CLI reference §3 and §11 run it headless and offline."""

from __future__ import annotations

import json
from typing import Any

from outpost.agents.base import AgentCommand, AgentRun, HomeFile
from outpost.agents.common import InstalledAgent, command_env, model_and_gateway
from outpost.agents.events import OutputParser
from outpost.agents.parsers.gemini import GeminiOutputParser
from outpost.agents.pins import GEMINI_INSTALL
from outpost.domain.dispatch import AgentName

SETTINGS_FILE = ".gemini/settings.json"


def settings(max_turns: int) -> dict[str, Any]:
    """The user settings that keep the CLI offline but for the gateway, and cap its turns (it has no
    turn flag; reaching the cap exits 53)."""
    return {
        # With a base URL set and no auth type, 0.61 guesses "gateway" and refuses to run headless (exit
        # 41); gemini-api-key still honours GOOGLE_GEMINI_BASE_URL.
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},  # else Clearcut at play.googleapis.com
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "model": {"maxSessionTurns": max_turns},
    }


class GeminiAgent(InstalledAgent):
    PIN = GEMINI_INSTALL
    name = AgentName.GEMINI

    def build(self, run: AgentRun) -> AgentCommand:
        """Gemini CLI works in the process's cwd (`run.workdir`) and appends stdin to the prompt, so its
        stdin must be closed."""
        model, gateway = model_and_gateway(run, self.name)
        # An explicit model also skips the `auto` router's extra classification call per request.
        argv = [
            run.executable, "-p", run.task, "-o", "stream-json", "-m", model.model.id,
            "--yolo", "--skip-trust",
        ]  # fmt: skip
        env = command_env(run, {
            "GEMINI_API_KEY": gateway.token,
            "GOOGLE_GEMINI_BASE_URL": gateway.url("gemini"),  # the SDK appends /v1beta/models/…
            # An untrusted folder silently downgrades --yolo to prompting; --skip-trust says it too.
            "GEMINI_CLI_TRUST_WORKSPACE": "true",
            "GEMINI_TELEMETRY_ENABLED": "false",
        })  # fmt: skip
        home_files: dict[str, HomeFile] = {SETTINGS_FILE: json.dumps(settings(run.max_turns)).encode()}
        return AgentCommand(argv=argv, env=env, home_files=home_files)

    def new_parser(self) -> OutputParser:
        return GeminiOutputParser()
