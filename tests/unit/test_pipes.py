"""The pipe reader owns one descriptor and closes it once, on asyncio's loop and on uvloop's."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from outpost.sandbox.pipes import attach_pipe

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def _run(loop_name: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(scenario())


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_data_then_end_of_stream_and_the_descriptor_is_closed_once(loop_name: str) -> None:
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        caller_file = os.fdopen(read_end, "rb")
        reader, transport = attach_pipe(caller_file)
        assert caller_file.closed  # the caller's descriptor is gone at once: one owner left
        os.write(write_end, b"one\ntwo\n")
        os.close(write_end)
        assert await reader.read() == b"one\ntwo\n"
        assert transport.is_closing()  # closed itself at the end of the stream
        reused = os.open(os.devnull, os.O_RDONLY)  # likely the number the pipe had
        transport.close()  # idempotent: must not close `reused`
        del caller_file, reader, transport
        gc.collect()
        await asyncio.sleep(0.01)
        assert _is_open(reused)
        os.close(reused)

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_full_reader_pauses_the_pipe_and_gets_everything_once_it_reads(loop_name: str) -> None:
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        reader, transport = attach_pipe(os.fdopen(read_end, "rb"))
        os.set_blocking(write_end, False)
        chunk, written = b"x" * 65536, 0
        for _ in range(1000):  # until more than the reader buffers (2 x 1 MiB) before it pauses
            if written > 3 * 2**20 or not transport.is_reading():
                break
            try:
                written += os.write(write_end, chunk)
            except BlockingIOError:
                await asyncio.sleep(0.001)  # let the loop move the pipe's content into the reader
        assert not transport.is_reading()  # paused: the writer is now held back by the full pipe
        for _ in range(5):
            with contextlib.suppress(BlockingIOError):
                written += os.write(write_end, chunk)
            await asyncio.sleep(0.001)
        os.close(write_end)
        assert len(await reader.read()) == written

    _run(loop_name, scenario)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_closing_early_ends_the_stream_for_the_reader(loop_name: str) -> None:
    async def scenario() -> None:
        read_end, write_end = os.pipe()
        reader, transport = attach_pipe(os.fdopen(read_end, "rb"))
        os.write(write_end, b"partial")
        await asyncio.sleep(0.01)
        transport.close()
        assert await reader.read() == b"partial"
        os.close(write_end)

    _run(loop_name, scenario)
