"""`outpost usage` as a user runs it: real `outpost` processes against a real `outpost serve`."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from tests.integration.test_cli import EXIT_USAGE, EXIT_USER_ERROR, Cli, served_cli_fixtures

pytestmark = pytest.mark.slow

BURN_CPU = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"

server, admin_key, cli = served_cli_fixtures("usage-cli")


def test_usage_shows_a_table_by_agent_with_a_total_after_a_dispatch(cli: Cli) -> None:
    assert cli("dispatch", "--agent", "shell", "--wait", BURN_CPU).code == 0
    result = cli("usage")
    assert result.code == 0, result
    header, *rows = [line for line in result.stdout.splitlines() if line.strip() and line[0] != "─"]
    assert header.split()[:3] == ["AGENT", "TOKENS", "IN"]
    assert rows[0].split()[0] == "shell"
    assert rows[-1].split()[0] == "TOTAL"
    assert "prices " in result.stderr


def test_usage_json_by_day_holds_todays_compute(cli: Cli) -> None:
    assert cli("dispatch", "--agent", "shell", "--wait", BURN_CPU).code == 0
    result = cli("usage", "--json", "--group-by", "day")
    assert result.code == 0, result
    report = json.loads(result.stdout)
    today = datetime.now(UTC).date().isoformat()
    assert [group["key"] for group in report["groups"]] == [today]
    assert report["total"]["vcpu_seconds"] > 0
    assert report["total"]["cost_usd"] == report["groups"][0]["cost_usd"]
    future = json.loads(cli("usage", "--json", "--since", "2999-01-01").stdout)
    assert future["groups"] == []


def test_usage_refuses_bad_input_in_one_line(cli: Cli) -> None:
    cli("usage", "--group-by", "tenant").assert_one_line_error(EXIT_USER_ERROR, "only an admin key")
    cli("usage", "--since", "2026-11-03", "--until", "2026-11-02").assert_one_line_error(
        EXIT_USER_ERROR, "is before since"
    )
    for args in (["--group-by", "week"], ["--since", "2026-13-01"], ["--until", "soon"]):
        assert cli("usage", *args).code == EXIT_USAGE


def test_an_admin_sees_usage_by_tenant(cli: Cli, admin_key: str) -> None:
    assert cli("dispatch", "--agent", "shell", "--wait", BURN_CPU).code == 0
    result = cli("usage", "--group-by", "tenant", "--json", key=admin_key)
    assert result.code == 0, result
    groups = json.loads(result.stdout)["groups"]
    assert groups
    assert all(group["name"] for group in groups)
