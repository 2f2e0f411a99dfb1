"""Reads a run's output as it comes: each batch to the log, each line to the agent's parser, whose events
are recorded too; and, once the run's main process has exited, the rest of it."""

from __future__ import annotations

import asyncio

from outpost.agents.events import AgentEvent, Text
from outpost.sandbox.base import SandboxRun
from outpost.worker.line_joiner import LineJoiner
from outpost.worker.recorder import OutputRecorder
from outpost.worker.run_report import RunReport, event_data

# After the main process exits, how long stray children may keep its output pipes open without writing,
# and how long output may keep coming at most (a busy worker may still be reading what the run wrote).
OUTPUT_DRAIN_S = 0.5
OUTPUT_DRAIN_MAX_S = 10.0


async def record_output(run: SandboxRun, recorder: OutputRecorder, report: RunReport) -> None:
    """The log keeps the lines as the sandbox cut them; the parser reads them whole again."""
    joiner = LineJoiner()
    async for batch in run.output():
        recorder.add(batch)
        for text in joiner.lines(batch):
            record_agent_events(recorder, report.feed(batch.stream, text), text)
    for stream, text in joiner.finish():
        record_agent_events(recorder, report.feed(stream, text), text)


def record_agent_events(recorder: OutputRecorder, events: list[AgentEvent], line: str | None = None) -> None:
    """Record parsed events, except text that is the output line itself (a `shell` run's stdout, aider's
    prose): the line's own log event already holds it, and a copy would double every event write."""
    for event in events:
        if isinstance(event, Text) and event.text == line:
            continue
        data = event_data(event)
        if data is not None:
            recorder.add_event("agent", data)


async def drain_output(output: asyncio.Task[None], run: SandboxRun, recorder: OutputRecorder) -> None:
    """Let the output reader reach the end; kill stray children that keep the pipes open. Output still
    arriving is read on (up to a bound): under load the reader may trail the run by seconds."""
    deadline = asyncio.get_running_loop().time() + OUTPUT_DRAIN_MAX_S
    while True:
        seen = recorder.batches_seen
        done, _ = await asyncio.wait({output}, timeout=OUTPUT_DRAIN_S)
        if done:
            return
        if recorder.batches_seen == seen or asyncio.get_running_loop().time() > deadline:
            await run.kill()
            await output
            return
