"""The model-driven agent adapters: exact commands, the gateway token as the only credential, offline
switches on, and a dispatch's environment unable to override any of it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from outpost.agents.aider import AiderAgent
from outpost.agents.base import AgentAdapter, AgentCommand, AgentRun, GatewayAccess
from outpost.agents.catalog import ModelChoice, default_catalog, resolve_model
from outpost.agents.claude import ClaudeAgent
from outpost.agents.codex import CodexAgent
from outpost.agents.gemini import GeminiAgent
from outpost.agents.grok import GrokAgent, grok_build_command
from outpost.agents.parsers.aider import AiderOutputParser
from outpost.agents.parsers.claude import ClaudeOutputParser
from outpost.agents.parsers.codex import CodexOutputParser
from outpost.agents.parsers.gemini import GeminiOutputParser
from outpost.agents.parsers.grok import GrokOutputParser
from outpost.agents.registry import default_registry
from outpost.domain.dispatch import AgentName, Tier
from outpost.errors import InvalidInput

INSTALL_DIR = Path("/srv/outpost/agents")
GATEWAY = GatewayAccess(base_url="http://127.0.0.1:8089", token="opgw_testtoken")
TOKEN = GATEWAY.token
SENTINEL = "dispatch-sentinel-5c1e"
DISPATCH_ENV = {"MY_SETTING": SENTINEL, "OUTPOST_TRACE_ID": "trace-7"}
HIJACK = "sk-dispatch-hijack"
CREDENTIAL_NAME = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD)$")
ADAPTERS: dict[AgentName, type[ClaudeAgent | CodexAgent | GeminiAgent | AiderAgent | GrokAgent]] = {
    AgentName.CLAUDE: ClaudeAgent,
    AgentName.CODEX: CodexAgent,
    AgentName.GEMINI: GeminiAgent,
    AgentName.AIDER: AiderAgent,
    AgentName.GROK: GrokAgent,
}


def choice(agent: str, model: str | None = None) -> ModelChoice:
    resolved = resolve_model(default_catalog(), agent, Tier.BALANCED if model is None else None, model)
    assert resolved is not None
    return resolved


def run_for(agent: str, model: str | None = None, env: dict[str, str] | None = None) -> AgentRun:
    return AgentRun(
        task="fix the failing test", model=choice(agent, model), executable=f"/opt/bin/{agent}",
        workdir="/workspace", home="/home/run", gateway=GATEWAY, max_turns=7,
        env=DISPATCH_ENV if env is None else env,
    )  # fmt: skip


def build(agent: AgentName, run: AgentRun | None = None) -> AgentCommand:
    return ADAPTERS[agent](INSTALL_DIR).build(run or run_for(agent))


def test_claude_runs_print_mode_with_stream_json_against_the_gateway() -> None:
    command = build(AgentName.CLAUDE)
    assert command.argv == [
        "/opt/bin/claude", "-p", "fix the failing test", "--output-format", "stream-json", "--verbose",
        "--model", "claude-sonnet-5-5", "--dangerously-skip-permissions", "--max-turns", "7",
    ]  # fmt: skip
    assert command.env == DISPATCH_ENV | {
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8089/anthropic",
        "ANTHROPIC_API_KEY": TOKEN,
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "IS_SANDBOX": "1",
        "CLAUDE_CODE_MAX_RETRIES": "2",
        "CLAUDE_CONFIG_DIR": "/home/run/.claude",
    }
    assert command.home_files == {}


def test_codex_uses_a_custom_provider_at_the_gateway_with_analytics_and_plugins_off() -> None:
    command = build(AgentName.CODEX)
    provider = "model_providers.outpost"
    assert command.argv == [
        "/opt/bin/codex", "exec", "--json", "-m", "gpt-6.1-sol", "--dangerously-bypass-approvals-and-sandbox",
        "-C", "/workspace", "--skip-git-repo-check",
        "-c", 'model_provider="outpost"',
        "-c", f'{provider}.name="outpost"',
        "-c", f'{provider}.base_url="http://127.0.0.1:8089/openai/v1"',
        "-c", f'{provider}.env_key="OPENAI_API_KEY"',
        "-c", f'{provider}.wire_api="responses"',
        "-c", f"{provider}.request_max_retries=1",
        "-c", f"{provider}.stream_max_retries=1",
        "-c", "analytics.enabled=false",
        "-c", "check_for_update_on_startup=false",
        "--disable", "plugins", "--disable", "unbounded_connection_retries",
        "fix the failing test",
    ]  # fmt: skip
    assert command.env == DISPATCH_ENV | {"OPENAI_API_KEY": TOKEN, "CODEX_HOME": "/home/run/.codex"}
    assert list(command.home_files) == [".codex/config.toml"]  # Codex exits when CODEX_HOME is missing


def test_gemini_pins_api_key_auth_and_caps_turns_in_its_settings() -> None:
    command = build(AgentName.GEMINI)
    assert command.argv == [
        "/opt/bin/gemini", "-p", "fix the failing test", "-o", "stream-json", "-m", "gemini-3.5-flash",
        "--yolo", "--skip-trust",
    ]  # fmt: skip
    assert command.env == DISPATCH_ENV | {
        "GEMINI_API_KEY": TOKEN,
        "GOOGLE_GEMINI_BASE_URL": "http://127.0.0.1:8089/gemini",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GEMINI_TELEMETRY_ENABLED": "false",
    }
    settings = command.home_files[".gemini/settings.json"]
    assert isinstance(settings, bytes)
    assert json.loads(settings) == {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
        "model": {"maxSessionTurns": 7},
    }


def test_aider_sends_one_unstreamed_message_and_seeds_the_price_map_from_its_venv() -> None:
    command = build(AgentName.AIDER)
    assert command.argv == [
        "/opt/bin/aider", "--message", "fix the failing test", "--model", "anthropic/claude-sonnet-5-5",
        "--yes-always", "--no-git", "--no-check-update", "--analytics-disable", "--no-show-release-notes",
        "--no-show-model-warnings", "--no-pretty", "--no-stream",
    ]  # fmt: skip
    assert command.env == DISPATCH_ENV | {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "ANTHROPIC_API_KEY": TOKEN,
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:8089/anthropic",
        "ANTHROPIC_API_BASE": "http://127.0.0.1:8089/anthropic",
    }
    site_packages = INSTALL_DIR / "venvs/aider-chat/lib/python3.11/site-packages"
    assert command.home_files == {
        ".aider/caches/model_prices_and_context_window.json": site_packages
        / "litellm/model_prices_and_context_window_backup.json"
    }


@pytest.mark.parametrize(
    ("model", "litellm_model", "provider_env"),
    [
        ("gpt-6.1-sol", "openai/gpt-6.1-sol", {
            "OPENAI_API_KEY": TOKEN,
            "OPENAI_API_BASE": "http://127.0.0.1:8089/openai/v1",
            "OPENAI_BASE_URL": "http://127.0.0.1:8089/openai/v1",
        }),
        ("gemini-3.5-flash", "gemini/gemini-3.5-flash", {
            "GEMINI_API_KEY": TOKEN, "GEMINI_API_BASE": "http://127.0.0.1:8089/gemini/v1beta",
        }),
        ("grok-4.3", "xai/grok-4.3", {"XAI_API_KEY": TOKEN, "XAI_API_BASE": "http://127.0.0.1:8089/xai/v1"}),
        ("deepseek-flash", "deepseek/deepseek-flash", {
            "DEEPSEEK_API_KEY": TOKEN, "DEEPSEEK_API_BASE": "http://127.0.0.1:8089/deepseek/v1",
        }),
    ],
)  # fmt: skip
def test_aider_reaches_each_provider_through_litellm_variables(
    model: str, litellm_model: str, provider_env: dict[str, str]
) -> None:
    command = build(AgentName.AIDER, run_for("aider", model))
    assert command.argv[command.argv.index("--model") + 1] == litellm_model
    assert command.env == DISPATCH_ENV | {"LITELLM_LOCAL_MODEL_COST_MAP": "True"} | provider_env


def test_grok_runs_headless_in_the_workdir_with_a_tool_round_cap() -> None:
    command = build(AgentName.GROK)
    assert command.argv == [
        "/opt/bin/grok", "-p", "fix the failing test", "-d", "/workspace", "-m", "grok-4.3",
        "--max-tool-rounds", "7",
    ]  # fmt: skip
    assert command.env == DISPATCH_ENV | {
        "GROK_API_KEY": TOKEN,
        "GROK_BASE_URL": "http://127.0.0.1:8089/xai/v1",
    }
    assert command.home_files == {}


def test_grok_build_is_ready_with_json_output_and_updates_off() -> None:
    command = grok_build_command(run_for("grok"))
    assert command.argv == [
        "/opt/bin/grok", "-p", "fix the failing test", "--output-format", "json", "--yolo",
        "--cwd", "/workspace", "-m", "grok-4.3", "--max-turns", "7", "--no-auto-update",
    ]  # fmt: skip
    assert command.env == DISPATCH_ENV | {
        "XAI_API_KEY": TOKEN,
        "GROK_XAI_API_BASE_URL": "http://127.0.0.1:8089/xai/v1",
        "GROK_DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }


@pytest.mark.parametrize("agent", list(ADAPTERS))
def test_a_dispatch_env_cannot_replace_the_token_base_urls_or_switches(agent: AgentName) -> None:
    own = build(agent, run_for(agent, env={})).env
    hostile = {name: HIJACK for name in own} | DISPATCH_ENV
    command = build(agent, run_for(agent, env=hostile))
    assert command.env == hostile | own
    assert HIJACK not in command.env.values()
    assert not any(HIJACK in item for item in command.argv)


@pytest.mark.parametrize("agent", list(ADAPTERS))
def test_the_gateway_token_is_the_only_credential_and_stays_out_of_argv_and_files(agent: AgentName) -> None:
    command = build(agent)
    credentials = {name: value for name, value in command.env.items() if CREDENTIAL_NAME.search(name)}
    assert credentials
    assert set(credentials.values()) == {TOKEN}
    assert command.env["MY_SETTING"] == SENTINEL  # the dispatch's own variables pass as given
    assert command.env["OUTPOST_TRACE_ID"] == "trace-7"
    assert not any(TOKEN in item or SENTINEL in item for item in command.argv)
    for content in command.home_files.values():
        assert not isinstance(content, bytes) or (
            TOKEN.encode() not in content and SENTINEL.encode() not in content
        )


@pytest.mark.parametrize("agent", list(ADAPTERS))
def test_a_run_without_a_model_or_the_gateway_is_refused(agent: AgentName) -> None:
    run = run_for(agent)
    for broken in (
        AgentRun(run.task, None, run.executable, run.workdir, run.home, run.gateway),
        AgentRun(run.task, run.model, run.executable, run.workdir, run.home, None),
    ):
        with pytest.raises(ValueError, match=str(agent)):
            build(agent, broken)


@pytest.mark.parametrize(
    ("agent", "parser"),
    [
        (AgentName.CLAUDE, ClaudeOutputParser), (AgentName.CODEX, CodexOutputParser),
        (AgentName.GEMINI, GeminiOutputParser), (AgentName.AIDER, AiderOutputParser),
        (AgentName.GROK, GrokOutputParser),
    ],
)  # fmt: skip
def test_each_adapter_makes_a_fresh_parser_of_its_own_kind(agent: AgentName, parser: type) -> None:
    adapter = ADAPTERS[agent](INSTALL_DIR)
    first, second = adapter.new_parser(), adapter.new_parser()
    assert isinstance(first, parser)
    assert first is not second


def test_executables_live_under_the_install_dir() -> None:
    registry = default_registry(INSTALL_DIR)
    paths = {name: registry.get(name).executable() for name in registry.names()}
    assert paths == {
        AgentName.AIDER: INSTALL_DIR / "venvs/aider-chat/bin/aider",
        AgentName.CLAUDE: INSTALL_DIR / "npm/node_modules/.bin/claude",
        AgentName.CODEX: INSTALL_DIR / "npm/node_modules/.bin/codex",
        AgentName.GEMINI: INSTALL_DIR / "npm/node_modules/.bin/gemini",
        AgentName.GROK: INSTALL_DIR / "npm/node_modules/.bin/grok",
        AgentName.SHELL: Path("/bin/sh"),
    }


def test_the_default_registry_holds_every_agent_and_refuses_others() -> None:
    registry = default_registry(INSTALL_DIR)
    assert registry.names() == sorted(AgentName)
    adapter: AgentAdapter = registry.get("codex")
    assert adapter.name == AgentName.CODEX
    with pytest.raises(InvalidInput, match="not available"):
        registry.check_available("opencode")
