"""Aider (`aider --message`), as the agent CLI reference §4 and §11 run it headless and offline.

Aider reaches every provider through litellm, which reads each provider's key and base URL from its own
environment variables (names checked against litellm's source: `XAI_API_BASE` for `xai/…` chat
completions, `DEEPSEEK_API_BASE` for `deepseek/…`, `GEMINI_API_BASE` with the API version included since
litellm appends only `/models/…`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from outpost.agents.base import AgentCommand, AgentRun, GatewayAccess, venv_dir
from outpost.agents.common import InstalledAgent, command_env, model_and_gateway
from outpost.agents.events import OutputParser
from outpost.agents.parsers.aider import AiderOutputParser
from outpost.agents.pins import AIDER_INSTALL
from outpost.domain.dispatch import AgentName

VENV_PYTHON = "python3.11"
"""The aider venv is built on the system Python (see `install.py`), 3.11 on the hosts Outpost supports; on
another one the price map is missing and placing it fails the run loudly rather than slowly."""
PRICE_MAP_CACHE = ".aider/caches/model_prices_and_context_window.json"
"""Aider downloads this from raw.githubusercontent.com at every start unless a copy younger than a day is
here; offline that costs 10-20 s of retries. The copy gets a fresh mtime when placed."""


@dataclass(frozen=True, slots=True)
class ProviderVars:
    """Where litellm looks for one provider's key and base URL, and what its base URL has after the
    host (the gateway's prefix replaces the host only)."""

    key: str
    bases: tuple[str, ...]
    suffix: str = ""


PROVIDERS: dict[str, ProviderVars] = {
    # litellm reads OPENAI_BASE_URL before OPENAI_API_BASE: both are set so neither can point elsewhere.
    "openai": ProviderVars("OPENAI_API_KEY", ("OPENAI_API_BASE", "OPENAI_BASE_URL"), "/v1"),
    # litellm reads ANTHROPIC_API_BASE first, then ANTHROPIC_BASE_URL, and appends /v1/messages.
    "anthropic": ProviderVars("ANTHROPIC_API_KEY", ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_BASE")),
    "gemini": ProviderVars("GEMINI_API_KEY", ("GEMINI_API_BASE",), "/v1beta"),
    "xai": ProviderVars("XAI_API_KEY", ("XAI_API_BASE",), "/v1"),
    "deepseek": ProviderVars("DEEPSEEK_API_KEY", ("DEEPSEEK_API_BASE",), "/v1"),
}


def provider_env(provider: str, gateway: GatewayAccess) -> dict[str, str]:
    """The token as `provider`'s key and the gateway as its base URL. Raises ValueError for a provider
    litellm is not set up for here (the catalog names only these)."""
    names = PROVIDERS.get(provider)
    if names is None:
        raise ValueError(f"aider cannot reach provider {provider!r} through the gateway")
    base = gateway.url(provider, names.suffix)
    return {names.key: gateway.token, **dict.fromkeys(names.bases, base)}


def price_map(install_dir: Path) -> Path:
    """litellm's bundled price map inside the aider venv: the seed for aider's download cache."""
    site_packages = venv_dir(install_dir, AIDER_INSTALL) / "lib" / VENV_PYTHON / "site-packages"
    return site_packages / "litellm" / "model_prices_and_context_window_backup.json"


class AiderAgent(InstalledAgent):
    PIN = AIDER_INSTALL
    name = AgentName.AIDER

    def build(self, run: AgentRun) -> AgentCommand:
        """Aider works in the process's cwd (`run.workdir`); it has no turn cap (one request per message,
        plus at most three reflections on lint or test failures)."""
        model, gateway = model_and_gateway(run, self.name)
        argv = [
            run.executable, "--message", run.task,
            "--model", f"{model.provider}/{model.model.id}",  # litellm's naming: the prefix picks the API
            "--yes-always",
            "--no-git",  # the workspace's history is Outpost's to report, not aider's to commit to
            "--no-check-update", "--analytics-disable", "--no-show-release-notes", "--no-show-model-warnings",
            "--no-pretty",
            # Streamed, aider counts the reply's tokens by re-tokenising it itself; unstreamed, it reports
            # the provider's own completion_tokens, so its "Tokens:" line agrees with the gateway's meter.
            "--no-stream",
        ]  # fmt: skip
        # The bundled price map, not a download from GitHub.
        own = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", **provider_env(model.provider, gateway)}
        env = command_env(run, own)
        return AgentCommand(argv=argv, env=env, home_files={PRICE_MAP_CACHE: price_map(self.install_dir)})

    def new_parser(self) -> OutputParser:
        return AiderOutputParser()
