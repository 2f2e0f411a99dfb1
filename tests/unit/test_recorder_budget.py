"""Parsed agent events share the output budget with log lines: an agent printing without end cannot grow
the event log without end, and the run is told once that output was dropped."""

from __future__ import annotations

from collections.abc import Sequence

from outpost.sandbox.base import OutputBatch
from outpost.services.runs import NewEvent
from outpost.worker.recorder import EVENT_OVERHEAD_BYTES, OutputRecorder


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
        recorder.add(OutputBatch("stdout", [f'{{"type":"assistant","n":{index}}}']))
        recorder.add_event("agent", {"type": "text", "text": f"message {index} " + "x" * 40})
    await recorder.close()
    kept = [e for e in runs.events if e.kind in ("log", "agent")]
    notices = [e for e in runs.events if e.kind == "notice"]
    assert 0 < len(kept) < 200
    assert len(notices) == 1
    assert "output limit reached" in str(notices[0].data["message"])


async def test_nothing_is_kept_after_the_notice_not_even_a_line_that_would_still_fit() -> None:
    runs = _Runs()
    recorder = OutputRecorder(runs, "d", flush_s=0.001, max_bytes=1024)  # type: ignore[arg-type]
    recorder.add(OutputBatch("stdout", ["a" * 900]))
    recorder.add(OutputBatch("stdout", ["b" * 100]))  # over the budget: the notice
    recorder.add(OutputBatch("stdout", ["c"]))  # would fit in what is left
    recorder.add_event("agent", {"type": "text", "text": "d"})
    await recorder.close()
    assert [event.kind for event in runs.events] == ["log", "notice"]


async def test_a_flood_of_tiny_lines_is_capped_by_rows_not_only_by_characters() -> None:
    runs = _Runs()
    recorder = OutputRecorder(runs, "d", flush_s=0.001, max_bytes=64 * 1024)  # type: ignore[arg-type]
    for _ in range(100):
        recorder.add(OutputBatch("stdout", ["y"] * 10_000))
    await recorder.close()
    kept = [event for event in runs.events if event.kind == "log"]
    assert len(kept) == 64 * 1024 // (1 + EVENT_OVERHEAD_BYTES)
    assert [event.kind for event in runs.events].count("notice") == 1


async def test_a_batch_is_kept_up_to_the_line_that_does_not_fit() -> None:
    runs = _Runs()
    recorder = OutputRecorder(runs, "d", flush_s=0.001, max_bytes=3 * (10 + EVENT_OVERHEAD_BYTES))  # type: ignore[arg-type]
    recorder.add(OutputBatch("stderr", ["0123456789", "abcdefghij", "ABCDEFGHIJ", "late"]))
    await recorder.close()
    assert [event.data.get("line") for event in runs.events if event.kind == "log"] == [
        "0123456789", "abcdefghij", "ABCDEFGHIJ",
    ]  # fmt: skip
    assert runs.events[-1].kind == "notice"
