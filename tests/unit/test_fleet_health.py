"""The fleet's status rules and figures, over reports built in memory (no store)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from outpost.db.repositories.fleet import FinishedRun, UnfinishedCount
from outpost.db.repositories.workers import WorkerRow
from outpost.schemas.fleet import FleetAgent, FleetStatus, FleetWorker, WorkerState
from outpost.services.fleet_health import assess
from outpost.services.fleet_recent import AgentOutcomes, RecentFinishes
from outpost.services.fleet_report import WINDOW, build_report, percentile
from outpost.services.fleet_settings import FleetSettings

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SETTINGS = FleetSettings()
RUN_IDS = itertools.count()


def worker(state: WorkerState = WorkerState.LIVE, **fields: Any) -> FleetWorker:
    values: dict[str, Any] = {
        "id": f"host-1-{state.value}", "host": "host", "pid": 1, "version": "0.1.0", "state": state,
        "slots": 4, "busy": 0, "agents": ["claude", "shell"], "started_at": NOW, "last_heartbeat_at": NOW,
        "heartbeat_age_s": 0.0, "stopped_at": None,
    }  # fmt: skip
    return FleetWorker(**{**values, **fields})


def agent(**fields: Any) -> FleetAgent:
    values: dict[str, Any] = {
        "queued": 0, "held": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0,
        "success_rate": None, "failures": {}, "duration_s": None, "oldest_queued_age_s": None,
    }  # fmt: skip
    return FleetAgent(**{**values, **fields})


def codes(workers: list[FleetWorker], agents: dict[str, FleetAgent]) -> tuple[FleetStatus, list[str]]:
    status, reasons = assess(workers, agents, SETTINGS)
    return status, [reason.code for reason in reasons]


def test_a_live_worker_with_nothing_wrong_is_healthy() -> None:
    agents = {"shell": agent(queued=1, oldest_queued_age_s=5.0, succeeded=30, success_rate=1.0)}
    assert codes([worker()], agents) == (FleetStatus.HEALTHY, [])


def test_no_worker_at_all_is_unhealthy_and_says_how_many_dispatches_are_stuck() -> None:
    status, reasons = assess([], {"shell": agent(queued=3, held=1)}, SETTINGS)
    assert status is FleetStatus.UNHEALTHY
    assert [reason.code for reason in reasons] == ["no_live_worker"]
    assert "(3 queued)" in reasons[0].detail
    assert codes([], {}) == (FleetStatus.UNHEALTHY, ["no_live_worker"])


def test_workers_that_are_all_silent_or_stopped_leave_the_fleet_unhealthy_and_are_named() -> None:
    silent = worker(WorkerState.SILENT, id="gone-7", host="box-3", heartbeat_age_s=95.0)
    status, reasons = assess([silent, worker(WorkerState.STOPPED)], {}, SETTINGS)
    assert status is FleetStatus.UNHEALTHY
    assert [reason.code for reason in reasons] == ["no_live_worker", "worker_silent"]
    assert "gone-7 on box-3" in reasons[1].detail


def test_a_silent_worker_beside_a_live_one_degrades_the_fleet() -> None:
    assert codes([worker(), worker(WorkerState.SILENT)], {}) == (FleetStatus.DEGRADED, ["worker_silent"])


def test_many_silent_workers_make_one_reason_naming_the_first_five() -> None:
    silent = [worker(WorkerState.SILENT, id=f"w{index}") for index in range(8)]
    _, reasons = assess([worker(), *silent], {}, SETTINGS)
    [reason] = reasons
    assert reason.detail.startswith("8 worker(s)")
    assert "w4" in reason.detail
    assert "w5" not in reason.detail
    assert "and 3 more" in reason.detail


@pytest.mark.parametrize(("age_s", "expected"), [(600.0, []), (600.5, ["queue_wait"])])
def test_a_dispatch_waiting_past_the_threshold_degrades_the_fleet(age_s: float, expected: list[str]) -> None:
    agents = {"claude": agent(queued=1, oldest_queued_age_s=age_s)}
    assert codes([worker()], agents)[1] == expected


@pytest.mark.parametrize(
    ("succeeded", "failed", "expected"),
    [(0, 19, []), (15, 5, ["low_success_rate"]), (16, 4, [])],
    ids=["too-few-samples", "75-percent", "exactly-the-threshold"],
)
def test_a_low_success_rate_degrades_the_fleet_only_over_enough_dispatches(
    succeeded: int, failed: int, expected: list[str]
) -> None:
    rate = succeeded / (succeeded + failed)
    agents = {"claude": agent(succeeded=succeeded, failed=failed, success_rate=rate)}
    assert codes([worker()], agents)[1] == expected


def test_waiting_dispatches_of_an_agent_no_live_worker_runs_degrade_the_fleet() -> None:
    agents = {"aider": agent(queued=2, oldest_queued_age_s=1.0)}
    status, reasons = assess([worker()], agents, SETTINGS)
    assert status is FleetStatus.DEGRADED
    assert [(reason.code, reason.detail) for reason in reasons] == [
        ("agent_unserved", "2 aider dispatch(es) wait, but no live worker runs aider")
    ]


def test_held_dispatches_wait_by_policy_and_need_no_worker_now() -> None:
    agents = {"aider": agent(queued=2, held=2)}
    busy = worker(busy=4)
    assert codes([busy], agents) == (FleetStatus.HEALTHY, [])


def test_a_queue_while_every_worker_drains_degrades_the_fleet_without_making_it_unhealthy() -> None:
    agents = {"shell": agent(queued=1, oldest_queued_age_s=1.0)}
    assert codes([worker(WorkerState.DRAINING)], agents) == (FleetStatus.DEGRADED, ["all_draining"])
    assert codes([worker(WorkerState.DRAINING)], {}) == (FleetStatus.HEALTHY, [])


def test_a_queue_while_every_live_slot_is_busy_degrades_the_fleet() -> None:
    agents = {"shell": agent(queued=1, oldest_queued_age_s=1.0)}
    full = [worker(id="a", busy=4), worker(id="b", slots=2, busy=2)]
    status, reasons = assess(full, agents, SETTINGS)
    assert (status, [reason.code for reason in reasons]) == (FleetStatus.DEGRADED, ["slots_full"])
    assert "all 6 slots of the 2 live worker(s)" in reasons[0].detail
    assert codes([worker(id="a", busy=4), worker(id="b", busy=3)], agents) == (FleetStatus.HEALTHY, [])


def row(
    worker_id: str, *, beat_s_ago: float = 1.0, stopped: bool = False, draining: bool = False
) -> WorkerRow:
    beat = NOW - timedelta(seconds=beat_s_ago)
    return WorkerRow(
        id=worker_id, host="box", pid=7, version="0.1.0", slots=2, busy=1, agents=["shell", "claude"],
        draining=draining, started_at=NOW - timedelta(hours=2), heartbeat_at=beat,
        stopped_at=beat if stopped else None,
    )  # fmt: skip


def test_each_worker_gets_its_state_from_its_heartbeat_and_exit() -> None:
    rows = [
        row("live"), row("drains", draining=True), row("quiet", beat_s_ago=31),
        row("edge", beat_s_ago=30), row("gone", beat_s_ago=31, stopped=True),
    ]  # fmt: skip
    report = build_report(NOW, rows, [], {}, SETTINGS)
    assert {w.id: w.state for w in report.workers} == {
        "live": "live", "drains": "draining", "quiet": "silent", "edge": "live", "gone": "stopped",
    }  # fmt: skip
    assert report.workers[2].heartbeat_age_s == 31.0
    assert report.workers[0].agents == ["claude", "shell"]
    assert report.capacity.model_dump() == {"workers": 2, "slots": 4, "busy": 2}
    assert (report.status, [reason.code for reason in report.reasons]) == ("degraded", ["worker_silent"])


def finished_run(
    status: str,
    reason: str | None = None,
    *,
    ran_s: float | None = None,
    agent: str = "claude",
    ago: timedelta = timedelta(minutes=1),
) -> FinishedRun:
    """A dispatch that finished `ago` before NOW, after running `ran_s` (None: it never started)."""
    finished = NOW - ago
    started = None if ran_s is None else finished - timedelta(seconds=ran_s)
    return FinishedRun(f"d{next(RUN_IDS)}", agent, status, reason, started, finished)


def counted(runs: list[FinishedRun]) -> Mapping[str, AgentOutcomes]:
    return RecentFinishes(WINDOW).merge(runs, NOW)


def test_agent_figures_count_the_queue_now_and_the_outcomes_of_the_window() -> None:
    unfinished = [
        UnfinishedCount("claude", "queued", False, 2, NOW - timedelta(seconds=90)),
        UnfinishedCount("claude", "queued", True, 3, NOW - timedelta(hours=3)),  # held: not "waiting"
        UnfinishedCount("claude", "provisioning", False, 1, NOW),
        UnfinishedCount("claude", "running", False, 4, NOW),
    ]
    finished = [
        *(finished_run("succeeded", ran_s=seconds) for seconds in range(1, 101)),
        finished_run("failed", "agent_error", ran_s=500),
        finished_run("timed_out", "timed_out", ran_s=600),
        finished_run("cancelled", ran_s=9000),  # cut short: not a duration of the agent's work
        finished_run("cancelled"),  # cancelled while queued
    ]
    report = build_report(NOW, [row("w")], unfinished, counted(finished), SETTINGS)
    claude = report.agents["claude"]
    assert (claude.queued, claude.held, claude.running) == (5, 3, 5)
    assert claude.oldest_queued_age_s == 90.0
    assert (claude.succeeded, claude.failed, claude.cancelled) == (100, 2, 2)
    assert claude.failures == {"agent_error": 1, "timed_out": 1}
    assert claude.success_rate == round(100 / 102, 4)
    # 1 to 100 s, 500 s and 600 s: ranks 50.5, 90.9 and 99.99 of 0 to 101.
    assert claude.duration_s is not None
    assert claude.duration_s.model_dump() == {"p50": 51.5, "p90": 91.9, "p99": 496.0}
    assert report.agents["shell"] == agent()  # a worker runs it: listed, with nothing to show


def test_percentiles_interpolate_between_closest_ranks() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.5
    assert percentile(values, 0.9) == pytest.approx(90.1)
    assert percentile(values, 0.99) == pytest.approx(99.01)
    assert percentile([7.0], 0.99) == 7.0


def test_a_duration_a_skewed_clock_made_negative_counts_as_zero() -> None:
    finished = [finished_run("succeeded", agent="shell", ran_s=-2)]
    report = build_report(NOW, [row("w")], [], counted(finished), SETTINGS)
    duration = report.agents["shell"].duration_s
    assert duration is not None
    assert duration.p99 == 0.0


def test_thresholds_come_from_the_settings() -> None:
    strict = FleetSettings(queue_wait_s=10, success_rate_min=0.99, success_rate_min_samples=1)
    agents = {"shell": agent(queued=1, oldest_queued_age_s=11.0, succeeded=9, failed=1, success_rate=0.9)}
    _, reasons = assess([worker()], agents, strict)
    assert [reason.code for reason in reasons] == ["queue_wait", "low_success_rate"]
    assert "threshold 10 s" in reasons[0].detail
    assert "(90%, threshold 99%)" in reasons[1].detail


def test_runs_read_again_are_counted_once_and_leave_the_figures_as_they_leave_the_window() -> None:
    recent = RecentFinishes(WINDOW)
    early = finished_run("failed", "oom", ran_s=30, ago=timedelta(minutes=59))
    late = finished_run("succeeded", ran_s=10, ago=timedelta(minutes=30))
    recent.merge([early, late], NOW)
    claude = recent.merge([late], NOW)["claude"]  # an overlapping read
    assert (claude.succeeded, claude.failed, claude.failures, claude.durations) == (
        1,
        1,
        {"oom": 1},
        [10.0, 30.0],
    )
    claude = recent.merge([], NOW + timedelta(minutes=2))["claude"]
    assert (claude.succeeded, claude.failed, claude.failures, claude.durations) == (1, 0, {}, [10.0])
    assert recent.merge([], NOW + timedelta(minutes=31)) == {}  # nothing left: the agent is gone too


def test_runs_of_one_agent_keep_their_durations_in_order_whatever_order_they_come_in() -> None:
    runs = [finished_run("succeeded", ran_s=seconds) for seconds in (40, 5, 25, 5)]
    runs.append(finished_run("cancelled", ran_s=99))
    assert counted(runs)["claude"].durations == [5.0, 5.0, 25.0, 40.0]
