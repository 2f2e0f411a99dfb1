"""`outpost git-credentials` as a user runs it: real `outpost` processes against a real `outpost serve`."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.test_cli import (
    EXIT_USER_ERROR,
    Cli,
    served_cli_fixtures,
)

pytestmark = pytest.mark.slow

TOKEN = "ghp_cliTenantToken31ab"


server, admin_key, cli = served_cli_fixtures("git-credentials-cli")


def test_set_reads_the_token_from_stdin_and_no_command_prints_it(cli: Cli) -> None:
    result = cli("git-credentials", "set", "GitHub.com", stdin=TOKEN + "\n")
    assert result.code == 0, result
    assert result.stdout == "git credential for github.com set (username x-access-token)\n"
    bot = cli("git-credentials", "set", "git.example:8443", "--username", "ci-bot", stdin=TOKEN)
    assert bot.code == 0, bot
    listed = cli("git-credentials", "list", "--json")
    assert listed.code == 0, listed
    rows = httpx.Response(200, content=listed.stdout).json()["items"]
    assert [(row["host"], row["username"]) for row in rows] == [
        ("git.example:8443", "ci-bot"), ("github.com", "x-access-token"),
    ]  # fmt: skip
    table = cli("git-credentials", "list")
    assert "github.com" in table.stdout
    assert "ci-bot" in table.stdout
    for done in (result, bot, listed, table):
        assert TOKEN not in done.stdout + done.stderr


def test_delete_removes_the_credential_once(cli: Cli) -> None:
    assert cli("git-credentials", "set", "github.com", stdin=TOKEN).code == 0
    deleted = cli("git-credentials", "delete", "github.com:443")
    assert (deleted.code, deleted.stdout) == (0, "git credential for github.com deleted\n")
    assert httpx.Response(200, content=cli("git-credentials", "list", "--json").stdout).json() == {
        "items": []
    }
    cli("git-credentials", "delete", "github.com").assert_one_line_error(
        EXIT_USER_ERROR, "no git credential for github.com"
    )


def test_set_refuses_bad_input_in_one_line_without_echoing_the_token(cli: Cli) -> None:
    cli("git-credentials", "set", "github.com").assert_one_line_error(EXIT_USER_ERROR, "no token on stdin")
    cli("git-credentials", "set", "github.com", stdin="\n \n").assert_one_line_error(
        EXIT_USER_ERROR, "no token on stdin"
    )
    spaced = cli("git-credentials", "set", "github.com", stdin="ghp_two words")
    spaced.assert_one_line_error(EXIT_USER_ERROR, "token: must be printable ASCII without spaces")
    assert "ghp_two" not in spaced.stderr
    colon = cli("git-credentials", "set", "github.com", "--username", "a:b", stdin=TOKEN)
    colon.assert_one_line_error(EXIT_USER_ERROR, "username: must be printable ASCII without ':'")
    unicode_host = cli("git-credentials", "set", "gït.example", stdin=TOKEN)
    unicode_host.assert_one_line_error(EXIT_USER_ERROR, "host: must be an ASCII host name")
    for done in (spaced, colon, unicode_host):
        assert TOKEN not in done.stdout + done.stderr
    assert httpx.Response(200, content=cli("git-credentials", "list", "--json").stdout).json() == {
        "items": []
    }
