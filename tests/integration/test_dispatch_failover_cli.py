"""`outpost dispatch --failover-*` as a user runs it: real `outpost` processes against a real `outpost
serve` whose worker is off, so that every dispatch stays queued as it was sent."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_cli import EXIT_USAGE, EXIT_USER_ERROR, Cli, served_cli_fixtures

pytestmark = pytest.mark.slow

server, admin_key, cli = served_cli_fixtures("failover-cli", {"OUTPOST_WORKER__ENABLED": "false"})
AIDER_ON_CLAUDE = ["--agent", "aider", "--model", "claude-sonnet-5-5"]


def sent(cli: Cli, *options: str) -> httpx.Response:
    """The dispatch `outpost dispatch ... --json` made, as the API shows it."""
    result = cli("dispatch", *options, "--json", "fix the tests")
    assert result.code == 0, result
    return httpx.Response(200, content=result.stdout)


def test_the_failover_options_become_the_requests_failover_in_their_order(cli: Cli) -> None:
    created = sent(
        cli, *AIDER_ON_CLAUDE, "--failover-model", "gpt-6-luna", "--failover-model", "grok-4.3",
        "--failover-tier", "fast", "--failover-tier", "flagship", "--failover-account",
    ).json()  # fmt: skip
    assert created["failover"] == {
        "models": ["gpt-6-luna", "grok-4.3"], "tiers": ["fast", "flagship"], "accounts": True,
    }  # fmt: skip
    with cli.api() as api:
        assert api.get(f"/v1/dispatches/{created['id']}").json()["failover"] == created["failover"]


def test_failover_account_alone_is_a_failover_and_no_option_sends_none(cli: Cli) -> None:
    alone = sent(cli, "--agent", "claude", "--failover-account").json()
    assert alone["failover"] == {"models": [], "tiers": [], "accounts": True}
    assert sent(cli, "--agent", "claude").json()["failover"] is None


REFUSED = [
    (["--agent", "shell", "--failover-account"], "failover.accounts: the shell agent runs no model"),
    ([*AIDER_ON_CLAUDE, "--failover-model", "claude-haiku-5-5"], "failover.models: claude-haiku-5-5 runs on"),
    ([*AIDER_ON_CLAUDE, "--failover-model", "no-such-model"], "failover.models: "),
    (["--agent", "claude", "--failover-tier", "fast"], "failover.tiers: the claude agent has no fast model"),
    ([*AIDER_ON_CLAUDE, "--failover-tier", "fast", "--failover-tier", "fast"], "failover.tiers: each entry"),
]


@pytest.mark.parametrize(("options", "message"), REFUSED)
def test_a_refused_failover_is_one_line_naming_the_field_and_nothing_is_queued(
    cli: Cli, options: list[str], message: str
) -> None:
    cli("dispatch", *options, "fix the tests").assert_one_line_error(EXIT_USER_ERROR, message)
    with cli.api() as api:
        assert api.get("/v1/dispatches").json()["items"] == []


def test_an_unknown_failover_tier_is_a_usage_error_naming_the_tiers(cli: Cli) -> None:
    result = cli("dispatch", *AIDER_ON_CLAUDE, "--failover-tier", "cheapest", "fix the tests")
    assert result.code == EXIT_USAGE, result
    assert "'cheapest' is not one of 'flagship', 'balanced', 'fast'" in result.stderr
    assert "Traceback" not in result.stderr
