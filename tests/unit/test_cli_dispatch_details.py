"""`outpost status`'s details: which key a dispatch runs on once it failed over to the server's."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console

from outpost.cli.display import dispatch_details
from outpost.domain.dispatch import AgentName, DispatchStatus, Tier
from outpost.schemas.dispatches import DispatchRead, Usage


def details(**fields: object) -> str:
    dispatch = DispatchRead(
        id="01DISPATCH", status=DispatchStatus.RUNNING, agent=AgentName.CODEX, task="fix it",
        model="gpt-6.1-sol", tier=Tier.BALANCED, attempt=1, timeout_s=60, labels={},
        created_at=datetime(2026, 1, 2, tzinfo=UTC), started_at=None, finished_at=None, exit_code=None,
        result=None, failure=None, usage=Usage(), cost_usd=0, cli_cost_usd=None, max_cost_usd=None,
        limits=None, egress_allow=[], **fields,
    )  # fmt: skip
    console = Console(width=200, record=True, file=None, force_terminal=False)
    with console.capture() as captured:
        console.print(dispatch_details(dispatch))
    return captured.get()


def test_a_dispatch_on_the_servers_key_says_so_and_one_on_its_own_key_shows_no_key_line() -> None:
    moved = details(failover_account="server")
    assert "key" in moved.split()
    assert "the server's (failed over from yours)" in moved
    assert "key" not in details().split()
