"""The shell agent's command and result."""

from __future__ import annotations

from outpost.agents.base import AgentRequest
from outpost.agents.shell import RESULT_TAIL_CHARS, ShellAgent
from outpost.domain.dispatch import Tier


def test_the_task_runs_as_a_shell_script_with_the_dispatch_env() -> None:
    command = ShellAgent().build_command(
        AgentRequest(task="echo $X", tier=Tier.FAST, model=None, env={"X": "1"})
    )
    assert command.argv == ["/bin/sh", "-c", "echo $X"]
    assert command.env == {"X": "1"}


def test_the_result_is_the_tail_of_stdout_only() -> None:
    summary = ShellAgent().new_summary()
    summary.feed("stdout", "first")
    summary.feed("stderr", "noise")
    summary.feed("stdout", "last")
    assert summary.result() == "first\nlast"


def test_the_result_is_bounded() -> None:
    summary = ShellAgent().new_summary()
    for i in range(10_000):
        summary.feed("stdout", f"line {i}")
    result = summary.result()
    assert result is not None
    assert len(result) <= RESULT_TAIL_CHARS
    assert result.endswith("line 9999")


def test_no_output_means_no_result() -> None:
    assert ShellAgent().new_summary().result() is None
