"""The dispatches that finished within the fleet report's window, counted in memory between reports.

A busy fleet finishes thousands of dispatches an hour; reading and counting them all for every report
would cost tens of milliseconds (a row lookup each: the index on `finished_at` holds no other column).
So the first report reads the whole window, and each later one only what finished since the one before,
minus a margin; new dispatches are added to each agent's figures as they come, and taken out again as
they leave the window. A report then costs a few new rows, whatever the fleet's throughput.

The margin covers a dispatch whose `finished_at` was stamped before the previous read but committed after
it (a slow transaction), or stamped by a worker whose clock runs slightly behind. A terminal dispatch
never changes again: one read once is counted once (by id), whatever the overlap.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from outpost.db.repositories import fleet as repo
from outpost.db.repositories.fleet import FinishedRun
from outpost.db.store import Connection
from outpost.domain.dispatch import DispatchStatus, FailureReason

LATE_COMMIT_MARGIN = timedelta(seconds=60)

# Dispatches that ran to an outcome: their durations say how long the agent's work takes. Cancelled
# ones were cut short by their owner, and would drag the percentiles down.
_OUTCOMES = frozenset({DispatchStatus.SUCCEEDED, DispatchStatus.FAILED, DispatchStatus.TIMED_OUT})


@dataclass(slots=True)
class AgentOutcomes:
    """How one agent's dispatches that finished within the window ended."""

    succeeded: int = 0
    failed: int = 0
    """Failed or timed out."""
    cancelled: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    """`failed` by failure reason."""
    durations: list[float] = field(default_factory=list)
    """Seconds from start to end of those that ran to an outcome, in ascending order."""

    @property
    def empty(self) -> bool:
        return not (self.succeeded or self.failed or self.cancelled)

    def count(self, run: FinishedRun, step: int) -> None:
        """Add `run` (`step` 1) or take it out again (`step` -1)."""
        if run.status == DispatchStatus.SUCCEEDED:
            self.succeeded += step
        elif run.status == DispatchStatus.CANCELLED:
            self.cancelled += step
        else:
            self.failed += step
            self._count_failure(run.failure_reason or FailureReason.INTERNAL.value, step)
        duration_s = run_duration_s(run)
        if duration_s is None:
            return
        if step > 0:
            insort(self.durations, duration_s)
        else:  # the very value added: the same run gives the same float
            del self.durations[bisect_left(self.durations, duration_s)]

    def _count_failure(self, reason: str, step: int) -> None:
        self.failures[reason] += step
        if not self.failures[reason]:
            del self.failures[reason]


def run_duration_s(run: FinishedRun) -> float | None:
    """Start to end of a dispatch that ran to an outcome; None for others."""
    if run.started_at is None or run.status not in _OUTCOMES:
        return None
    # Start and end may be stamped by different machines: a skewed clock must not make it negative.
    return max(0.0, (run.finished_at - run.started_at).total_seconds())


class RecentFinishes:
    """Not safe for concurrent refreshes: the caller runs one at a time."""

    def __init__(self, window: timedelta, margin: timedelta = LATE_COMMIT_MARGIN) -> None:
        self._window = window
        self._margin = margin
        self._runs: dict[str, FinishedRun] = {}
        self._leaving: list[tuple[datetime, str]] = []
        """(finished_at, id) of every counted run: a heap, the first to leave the window on top."""
        self._agents: dict[str, AgentOutcomes] = {}
        self._read_at: datetime | None = None

    async def refresh(self, conn: Connection, now: datetime) -> Mapping[str, AgentOutcomes]:
        """Each agent's figures from `now - window` on, reading from `conn` what is new. The mapping is
        this object's own: read it before the next refresh."""
        start = now - self._window
        since = start if self._read_at is None else max(start, self._read_at - self._margin)
        self.merge(await repo.finished_since(conn, since), now)
        self._read_at = now
        return self._agents

    def merge(self, runs: Iterable[FinishedRun], now: datetime) -> Mapping[str, AgentOutcomes]:
        """Count the runs not counted yet, then drop those that finished before `now - window`."""
        for run in runs:
            if run.id not in self._runs:
                self._runs[run.id] = run
                heapq.heappush(self._leaving, (run.finished_at, run.id))
                self._agents.setdefault(run.agent, AgentOutcomes()).count(run, 1)
        start = now - self._window
        while self._leaving and self._leaving[0][0] < start:
            _, run_id = heapq.heappop(self._leaving)
            self._drop(self._runs.pop(run_id))
        return self._agents

    def _drop(self, run: FinishedRun) -> None:
        outcomes = self._agents[run.agent]
        outcomes.count(run, -1)
        if outcomes.empty:
            del self._agents[run.agent]
