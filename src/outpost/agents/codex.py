"""OpenAI Codex CLI (`codex exec`), as the agent CLI reference §2 and §11 run it headless and offline."""

from __future__ import annotations

import json

from outpost.agents.base import AgentCommand, AgentRun, GatewayAccess
from outpost.agents.common import InstalledAgent, command_env, model_and_gateway
from outpost.agents.events import OutputParser
from outpost.agents.parsers.codex import CodexOutputParser
from outpost.agents.pins import CODEX_INSTALL
from outpost.domain.dispatch import AgentName

PROVIDER = "outpost"
CONFIG_NOTE = b"# Outpost passes every setting with -c; this file only makes CODEX_HOME exist.\n"
"""Codex refuses to start when CODEX_HOME names a directory that does not exist, so the run's home gets
this file (and with it the directory)."""


def toml_string(value: str) -> str:
    """`value` as a TOML basic string. Codex parses each `-c` value as TOML and only falls back to the raw
    text when that fails; quoting makes a string a string whatever it looks like. (A JSON string is a
    valid TOML basic string: the same quotes and escapes.)"""
    return json.dumps(value)


def provider_overrides(gateway: GatewayAccess) -> list[str]:
    """`-c` pairs that define a custom provider pointing at the gateway: Codex no longer honours
    OPENAI_BASE_URL, and its built-in provider tries a WebSocket first and ignores OPENAI_API_KEY."""
    settings = {
        "model_provider": toml_string(PROVIDER),
        f"model_providers.{PROVIDER}.name": toml_string(PROVIDER),
        f"model_providers.{PROVIDER}.base_url": toml_string(gateway.url("openai", "/v1")),  # + /responses
        f"model_providers.{PROVIDER}.env_key": toml_string("OPENAI_API_KEY"),
        f"model_providers.{PROVIDER}.wire_api": toml_string("responses"),
        # A refused token or a dead gateway should end the run in seconds, not after minutes of retries.
        f"model_providers.{PROVIDER}.request_max_retries": "1",
        f"model_providers.{PROVIDER}.stream_max_retries": "1",
        "analytics.enabled": "false",  # else OTLP metrics to ab.chatgpt.com
        "check_for_update_on_startup": "false",
    }
    return [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]


class CodexAgent(InstalledAgent):
    PIN = CODEX_INSTALL
    name = AgentName.CODEX

    def build(self, run: AgentRun) -> AgentCommand:
        """Codex has no turn cap; the dispatch timeout bounds it. Its stdin must be closed (a pipe would
        be read and appended to the prompt)."""
        model, gateway = model_and_gateway(run, self.name)
        argv = [
            run.executable, "exec", "--json",
            "-m", model.model.id,
            "--dangerously-bypass-approvals-and-sandbox",  # the bubblewrap sandbox is the boundary
            "-C", run.workdir, "--skip-git-repo-check",
            *provider_overrides(gateway),
            "--disable", "plugins",  # else plugin sync with github.com and chatgpt.com
            "--disable", "unbounded_connection_retries",  # else a refused connection retries forever
            run.task,
        ]  # fmt: skip
        env = command_env(run, {"OPENAI_API_KEY": gateway.token, "CODEX_HOME": f"{run.home}/.codex"})
        return AgentCommand(argv=argv, env=env, home_files={".codex/config.toml": CONFIG_NOTE})

    def new_parser(self) -> OutputParser:
        return CodexOutputParser()
