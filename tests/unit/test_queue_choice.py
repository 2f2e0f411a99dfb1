"""Choosing the queue backend: `rows` on SQLite, `procrastinate` on PostgreSQL unless set otherwise;
`procrastinate` needs PostgreSQL, and then `outpost serve` runs no worker unless told to, while
`outpost worker` always runs one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from outpost.app import build_container
from outpost.cli.main import main
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


@pytest.mark.parametrize("url", ["postgresql://db.internal/outpost", "postgresql+psycopg://db/outpost"])
def test_on_postgresql_the_queue_is_procrastinate_and_the_server_serves_the_api_only(url: str) -> None:
    settings = Settings(database_url=url)
    assert (settings.worker.queue, settings.worker.enabled) == ("procrastinate", False)
    told = Settings(database_url=url, worker={"enabled": True})  # type: ignore[arg-type]
    assert (told.worker.queue, told.worker.enabled) == ("procrastinate", True)


def test_on_postgresql_the_rows_queue_can_still_be_chosen() -> None:
    settings = Settings(database_url="postgresql://db/outpost", worker={"queue": "rows"})  # type: ignore[arg-type]
    assert (settings.worker.queue, settings.worker.enabled) == ("rows", True)


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


def run_outpost(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`outpost ARGS` in this process, as its entry point runs it: (exit code, what it printed)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["outpost", *args])
        with pytest.raises(SystemExit) as exited:
            main()
    printed = capsys.readouterr()
    return int(exited.value.code or 0), printed.out + printed.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--slots", "0"], "--slots"),
        (["--slots", "many"], "--slots"),
        (["--slots", "5000"], "--slots"),
        (["--drain-timeout", "-1"], "--drain-timeout"),
        (["--drain-timeout", "soon"], "--drain-timeout"),
        (["--agents", "shell;rm -rf /"], "--agents"),
        (["--agents", ""], "--agents"),
    ],
)
def test_bad_worker_options_are_one_line_and_a_non_zero_exit(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    monkeypatch.setenv("OUTPOST_DATA_DIR", str(tmp_path))
    code, printed = run_outpost(["worker", *args], capsys)
    assert code != 0
    assert says in printed
    assert "Traceback" not in printed
    assert not (tmp_path / "outpost.db").exists()  # refused before anything was written


def test_a_worker_on_sqlite_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OUTPOST_DATA_DIR", str(tmp_path))
    code, printed = run_outpost(["worker", "--slots", "2"], capsys)
    assert code != 0
    assert printed.startswith("outpost: "), printed
    assert len(printed.strip().splitlines()) == 1, printed
    assert "PostgreSQL" in printed
