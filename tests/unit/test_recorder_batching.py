"""Adaptive batching: an idle recorder writes a line at once; lines that arrive while a write is under way
go together in the next write, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from outpost.sandbox.base import OutputBatch
from outpost.services.runs import NewEvent
from outpost.worker.recorder import MAX_BATCH_EVENTS, OutputRecorder


class _SlowRuns:
    """Each write waits until the test lets it finish."""

    def __init__(self) -> None:
        self.writes: list[list[str]] = []
        self.started = asyncio.Event()
        self.proceed = asyncio.Event()

    async def record(self, dispatch_id: str, events: Sequence[NewEvent]) -> bool:
        self.writes.append([str(event.data.get("line", event.kind)) for event in events])
        self.started.set()
        await self.proceed.wait()
        return True


def _line(text: str) -> OutputBatch:
    return OutputBatch("stdout", [text])


async def test_an_idle_recorder_writes_a_line_without_waiting() -> None:
    runs = _SlowRuns()
    runs.proceed.set()
    recorder = OutputRecorder(runs, "d", flush_s=0, max_bytes=10_000)  # type: ignore[arg-type]
    recorder.add(_line("first"))
    await asyncio.wait_for(runs.started.wait(), 1)  # no timer: the write starts on the next loop turn
    assert runs.writes == [["first"]]
    await recorder.close()


async def test_lines_arriving_during_a_write_go_together_in_the_next_one() -> None:
    runs = _SlowRuns()
    recorder = OutputRecorder(runs, "d", flush_s=0, max_bytes=10_000)  # type: ignore[arg-type]
    recorder.add(_line("a"))
    await runs.started.wait()
    for text in ("b", "c", "d"):
        recorder.add(_line(text))
    recorder.note("hello")
    runs.proceed.set()
    await recorder.close()
    assert runs.writes == [["a"], ["b", "c", "d", "notice"]]


async def test_a_backlog_is_written_in_batches_of_at_most_max_batch_events_in_order() -> None:
    runs = _SlowRuns()
    recorder = OutputRecorder(runs, "d", flush_s=0, max_bytes=10**9)  # type: ignore[arg-type]
    recorder.add(_line("0"))
    await runs.started.wait()
    recorder.add(OutputBatch("stdout", [str(n) for n in range(1, 2 * MAX_BATCH_EVENTS + 2)]))
    runs.proceed.set()
    await recorder.close()
    assert [len(write) for write in runs.writes] == [1, MAX_BATCH_EVENTS, MAX_BATCH_EVENTS, 1]
    assert [int(line) for write in runs.writes for line in write] == list(range(2 * MAX_BATCH_EVENTS + 2))


async def test_a_flush_delay_gathers_lines_but_close_does_not_wait_for_it() -> None:
    runs = _SlowRuns()
    runs.proceed.set()
    recorder = OutputRecorder(runs, "d", flush_s=30, max_bytes=10_000)  # type: ignore[arg-type]
    for text in ("a", "b"):
        recorder.add(_line(text))
    await asyncio.sleep(0)
    assert runs.writes == []
    await asyncio.wait_for(recorder.close(), 1)
    assert runs.writes == [["a", "b"]]
