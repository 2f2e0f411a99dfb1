"""Rotating a provider key or git credential with the CLI, as a user does: real `outpost` processes
against a real `outpost serve`; no command prints a secret."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_cli import EXIT_USER_ERROR, Cli, served_cli_fixtures

pytestmark = pytest.mark.slow

OLD_KEY, NEW_KEY = "sk-cli-old-key-1a2b3c4d", "sk-cli-new-key-5e6f7a8b"
OLD_TOKEN, NEW_TOKEN = "ghp_cliOldToken1a2b3c", "ghp_cliNewToken4d5e6f"

server, admin_key, cli = served_cli_fixtures(
    "secret-rotation-cli", {"OUTPOST_PROVIDERS__OPENAI__BASE_URL": "http://127.0.0.1:9/openai"}
)


def versions(cli: Cli, *args: str) -> list[tuple[int, bool]]:
    listed = cli(*args, "--json")
    assert listed.code == 0, listed
    return [
        (item["version"], item["in_force"])
        for item in httpx.Response(200, content=listed.stdout).json()["items"]
    ]


def test_a_provider_key_is_rotated_with_an_overlap_and_the_old_one_retired(cli: Cli) -> None:
    done = [cli("providers", "set", "openai", "--api-key-stdin", stdin=OLD_KEY)]
    done.append(cli("providers", "set", "openai", "--api-key-stdin", "--keep-previous", stdin=NEW_KEY))
    assert (
        done[-1].stdout
        == "provider openai: calls go to http://127.0.0.1:9/openai with your key (version 2)\n"
    )
    assert versions(cli, "providers", "versions", "openai") == [(2, True), (1, False)]
    done.append(cli("providers", "versions", "openai"))
    assert "IN FORCE" in done[-1].stdout
    done.append(cli("providers", "retire", "openai", "1"))
    assert done[-1].stdout == "provider openai: key version 1 retired; version 2 is in force\n"
    done.append(cli("providers", "retire", "openai", "2"))
    assert (
        done[-1].stdout == "provider openai: key version 2 retired; the server's key applies again, if any\n"
    )
    cli("providers", "retire", "openai", "2").assert_one_line_error(EXIT_USER_ERROR, "no live key version 2")
    for result in done:
        assert result.code == 0, result
        assert OLD_KEY not in result.stdout + result.stderr
        assert NEW_KEY not in result.stdout + result.stderr


def test_keep_previous_needs_a_new_key_and_versions_are_numbers(cli: Cli) -> None:
    cli("providers", "set", "openai", "--keep-previous").assert_one_line_error(
        EXIT_USER_ERROR, "--keep-previous goes with --api-key-stdin"
    )
    refused = cli("providers", "retire", "openai", "0")
    assert refused.code == 2  # a usage error, from the argument's range
    assert "0 is not in the range" in refused.stderr


def test_a_git_credential_is_rotated_and_the_rotation_taken_back(cli: Cli) -> None:
    assert cli("git-credentials", "set", "github.com", stdin=OLD_TOKEN).code == 0
    kept = cli(
        "git-credentials", "set", "github.com", "--username", "bot", "--keep-previous", stdin=NEW_TOKEN
    )
    assert kept.code == 0, kept
    assert versions(cli, "git-credentials", "versions", "GitHub.com") == [(2, True), (1, False)]
    undone = cli("git-credentials", "retire", "github.com", "2")
    assert (undone.code, undone.stdout) == (0, "git credential for github.com: version 2 retired\n")
    listed = httpx.Response(200, content=cli("git-credentials", "list", "--json").stdout).json()["items"]
    assert [(row["host"], row["username"]) for row in listed] == [("github.com", "x-access-token")]
    cli("git-credentials", "versions", "gitlab.com").assert_one_line_error(
        EXIT_USER_ERROR, "no git credential for gitlab.com"
    )
    for result in (kept, undone):
        assert OLD_TOKEN not in result.stdout + result.stderr
        assert NEW_TOKEN not in result.stdout + result.stderr
