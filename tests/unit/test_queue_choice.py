"""Choosing the queue backend: `rows` stays the default; `procrastinate` needs PostgreSQL, and then
`outpost serve` runs no worker unless told to, while `outpost worker` always runs one."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpost.app import build_container
from outpost.cli.worker import fleet_settings
from outpost.domain.dispatch import AgentName
from outpost.errors import InvalidInput
from outpost.settings import Settings
from outpost.worker.queue.inprocess import InProcessWorker


def test_the_embedded_queue_stays_the_default_and_runs_its_worker_in_the_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert (settings.worker.queue, settings.worker.enabled) == ("rows", True)
    assert isinstance(build_container(settings).worker, InProcessWorker)


def test_with_procrastinate_the_server_runs_a_worker_only_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_WORKER__QUEUE", "procrastinate")
    assert Settings().worker.enabled is False
    monkeypatch.setenv("OUTPOST_WORKER__ENABLED", "true")
    assert Settings().worker.enabled is True


def test_procrastinate_on_sqlite_is_refused_with_what_to_set(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, worker={"queue": "procrastinate"})  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match=r"needs PostgreSQL: set OUTPOST_DATABASE_URL"):
        build_container(settings)


def test_the_worker_command_runs_a_procrastinate_worker_with_its_options(tmp_path: Path) -> None:
    chosen = fleet_settings(
        Settings(data_dir=tmp_path), slots=3, agents="shell, codex", drain_timeout_s=12.5
    ).worker
    assert (chosen.queue, chosen.enabled, chosen.slots, chosen.drain_timeout_s) == (
        "procrastinate",
        True,
        3,
        12.5,
    )
    assert chosen.agents == [AgentName.SHELL, AgentName.CODEX]
    untouched = fleet_settings(
        Settings(data_dir=tmp_path), slots=None, agents=None, drain_timeout_s=None
    ).worker
    assert (untouched.slots, untouched.agents, untouched.drain_timeout_s) == (8, None, 300.0)


@pytest.mark.parametrize("agents", ["shell,cursor", " , "])
def test_the_worker_command_refuses_agents_it_does_not_know(tmp_path: Path, agents: str) -> None:
    with pytest.raises(InvalidInput, match="--agents"):
        fleet_settings(Settings(data_dir=tmp_path), slots=None, agents=agents, drain_timeout_s=None)
