"""The fleet's health report as Prometheus gauges.

They are read from the store (through the cached report), not counted in this process, so every API
server reports the same numbers for the same fleet. Counters of settled dispatches (finished by status,
failures by reason, the duration histogram) and of cost are `LedgerMetrics`'.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from outpost.schemas.fleet import FleetHealth, FleetStatus, WorkerState
from outpost.services.fleet_health import waiting

_QUANTILES = (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"))


class FleetCollector:
    """Collects the gauges of one report (a collector for `generate_latest`)."""

    def __init__(self, report: FleetHealth) -> None:
        self._report = report

    def collect(self) -> Iterator[Metric]:
        yield from self._fleet()
        yield from self._workers()
        yield from self._queues()
        yield from self._last_hour()

    def _fleet(self) -> Iterator[Metric]:
        report = self._report
        status = GaugeMetricFamily(
            "outpost_fleet_status", "1 for the fleet's current status (see /health/fleet), 0 for the others.",
            labels=["status"],
        )  # fmt: skip
        for value in FleetStatus:
            status.add_metric([value.value], 1.0 if report.status is value else 0.0)
        yield status
        problems = GaugeMetricFamily(
            "outpost_fleet_problems", "Reasons the fleet is not healthy, by code.", labels=["code"]
        )
        codes = [reason.code for reason in report.reasons]
        for code in sorted(set(codes)):
            problems.add_metric([code], float(codes.count(code)))
        yield problems
        yield GaugeMetricFamily(
            "outpost_fleet_report_timestamp_seconds", "When the fleet figures were computed (Unix time).",
            value=report.as_of.timestamp(),
        )  # fmt: skip

    def _workers(self) -> Iterator[Metric]:
        workers = self._report.workers
        count = GaugeMetricFamily(
            "outpost_workers", "Workers by state (stopped ones within the last hour).", labels=["state"]
        )
        slots = GaugeMetricFamily("outpost_worker_slots", "Slots of beating workers.", labels=["state"])
        busy = GaugeMetricFamily(
            "outpost_worker_busy_slots",
            "Slots busy at the last heartbeat of beating workers.",
            labels=["state"],
        )
        for state in WorkerState:
            those = [worker for worker in workers if worker.state is state]
            count.add_metric([state.value], float(len(those)))
            if state in (WorkerState.LIVE, WorkerState.DRAINING):
                slots.add_metric([state.value], float(sum(worker.slots for worker in those)))
                busy.add_metric([state.value], float(sum(worker.busy for worker in those)))
        yield from (count, slots, busy)

    def _queues(self) -> Iterator[Metric]:
        agents = self._report.agents
        depth = GaugeMetricFamily(
            "outpost_queue_depth", "Queued dispatches, held ones included.", labels=["agent"]
        )
        held = GaugeMetricFamily(
            "outpost_queue_held",
            "Queued dispatches held back by a tenant cap or a provider quota.",
            labels=["agent"],
        )
        oldest = GaugeMetricFamily(
            "outpost_queue_oldest_age_seconds",
            "Age of the oldest dispatch waiting for a worker.",
            labels=["agent"],
        )
        running = GaugeMetricFamily(
            "outpost_dispatches_running", "Dispatches provisioning or running.", labels=["agent"]
        )
        for name, agent in agents.items():
            depth.add_metric([name], float(agent.queued))
            held.add_metric([name], float(agent.held))
            running.add_metric([name], float(agent.running))
            if waiting(agent) and agent.oldest_queued_age_s is not None:
                oldest.add_metric([name], agent.oldest_queued_age_s)
        yield from (depth, held, oldest, running)

    def _last_hour(self) -> Iterator[Metric]:
        agents = self._report.agents
        ended = GaugeMetricFamily(
            "outpost_dispatches_last_hour", "Dispatches that ended in the last hour, by outcome.",
            labels=["agent", "outcome"],
        )  # fmt: skip
        failures = GaugeMetricFamily(
            "outpost_dispatch_failures_last_hour", "Failed or timed-out dispatches, last hour, by reason.",
            labels=["agent", "reason"],
        )  # fmt: skip
        ratio = GaugeMetricFamily(
            "outpost_dispatch_success_ratio_last_hour", "Succeeded / (succeeded + failed), last hour.",
            labels=["agent"],
        )  # fmt: skip
        duration = GaugeMetricFamily(
            "outpost_dispatch_duration_last_hour_seconds",
            "Duration percentiles of the dispatches that ran to an outcome in the last hour.",
            labels=["agent", "quantile"],
        )  # fmt: skip
        for name, agent in agents.items():
            for outcome in ("succeeded", "failed", "cancelled"):
                ended.add_metric([name, outcome], float(getattr(agent, outcome)))
            for reason, count in agent.failures.items():
                failures.add_metric([name, reason], float(count))
            if agent.success_rate is not None:
                ratio.add_metric([name], agent.success_rate)
            if agent.duration_s is not None:
                for quantile, field in _QUANTILES:
                    duration.add_metric([name, quantile], getattr(agent.duration_s, field))
        yield from (ended, failures, ratio, duration)


def render_fleet(report: FleetHealth) -> bytes:
    """The report's gauges in Prometheus' text format (to append to the server's own counters)."""
    return generate_latest(FleetCollector(report))
