"""Parsed agent events share the output budget with log lines: an agent printing without end cannot grow
the event log without end, and the run is told once that output was dropped."""

from __future__ import annotations

from collections.abc import Sequence

from outpost.sandbox.base import OutputLine
from outpost.services.runs import NewEvent
from outpost.worker.recorder import OutputRecorder


class _Runs:
    def __init__(self) -> None:
        self.events: list[NewEvent] = []

    async def record(self, dispatch_id: str, events: Sequence[NewEvent]) -> bool:
        self.events.extend(events)
        return True


async def test_agent_events_stop_at_the_budget_with_one_notice() -> None:
    runs = _Runs()
    recorder = OutputRecorder(runs, "d", flush_s=0.001, max_bytes=10_000)  # type: ignore[arg-type]
    for index in range(5_000):
        recorder.add(OutputLine("stdout", f'{{"type":"assistant","n":{index}}}'))
        recorder.add_event("agent", {"type": "text", "text": f"message {index} " + "x" * 40})
    await recorder.close()
    kept = [e for e in runs.events if e.kind in ("log", "agent")]
    notices = [e for e in runs.events if e.kind == "notice"]
    assert 0 < len(kept) < 200
    assert len(notices) == 1
    assert "output limit reached" in str(notices[0].data["message"])
