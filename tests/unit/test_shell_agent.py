"""The shell agent's command and output."""

from __future__ import annotations

from pathlib import Path

from outpost.agents.base import AgentRun
from outpost.agents.events import RawText, Text
from outpost.agents.shell import ShellAgent


def shell_run(task: str, env: dict[str, str]) -> AgentRun:
    return AgentRun(
        task=task,
        model=None,
        executable="/bin/sh",
        workdir="/workspace",
        home="/home/run",
        gateway=None,
        env=env,
    )


def test_the_task_runs_as_a_shell_script_with_the_dispatch_env() -> None:
    command = ShellAgent().build(shell_run("echo $X", {"X": "1"}))
    assert command.argv == ["/bin/sh", "-c", "echo $X"]
    assert command.env == {"X": "1"}
    assert command.home_files == {}


def test_the_shell_needs_nothing_installed() -> None:
    agent = ShellAgent()
    assert agent.install is None
    assert agent.executable() == Path("/bin/sh")


def test_stdout_lines_are_text_and_stderr_stays_raw() -> None:
    parser = ShellAgent().new_parser()
    assert parser.feed("stdout", "first") == [Text("first")]
    assert parser.feed("stderr", "noise") == [RawText("stderr", "noise")]
    assert parser.feed("stdout", "last") == [Text("last")]
    assert parser.finish() == []


def test_each_run_gets_its_own_parser() -> None:
    agent = ShellAgent()
    assert agent.new_parser() is not agent.new_parser()
