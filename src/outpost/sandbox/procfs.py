"""Finding and killing processes by a marker in their environment, through /proc (Linux).

A process that leaves its process group (setsid, double fork) still carries the environment it was
started with, so the marker finds it. A process that scrubs its own environment escapes this sweep; the
bwrap backend does not rely on it (its pid namespace dies with its init process).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

MARKER_VARIABLE = "OUTPOST_RUN"


def pids_with_marker(marker_prefix: str) -> list[int]:
    """Pids whose environment holds OUTPOST_RUN=<value starting with marker_prefix>."""
    needle = f"\0{MARKER_VARIABLE}={marker_prefix}".encode()
    found = []
    own_pid = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own_pid:
            continue
        try:
            environ = b"\0" + (entry / "environ").read_bytes()
        except OSError:
            continue  # gone already, or not ours to read
        if needle in environ:
            found.append(int(entry.name))
    return found


def kill_marked(marker_prefix: str, deadline_s: float = 5.0) -> int:
    """SIGKILL every marked process, again and again until none is left (they may fork meanwhile).

    Returns how many processes were killed. A killed process shows its environment for a moment while it
    exits; the sweep waits that moment out so that, on return, no marked process runs any more (a
    zombie's environment reads empty, so zombies never match).
    """
    killed: set[int] = set()
    stop_at = time.monotonic() + deadline_s
    while time.monotonic() < stop_at:
        marked = pids_with_marker(marker_prefix)
        if not marked:
            break
        for pid in marked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if killed.issuperset(marked):
            time.sleep(0.002)  # all of them are dying already: let the kernel finish
        killed.update(marked)
    return len(killed)


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# Fields after the command name in /proc/PID/stat (field N of proc(5) is at N - 3): state, ppid, pgrp,
# session, …, utime, stime, cutime, cstime (clock ticks), …, and the resident set size (pages).
_STAT_SESSION = 3
_STAT_CPU_TICKS = slice(11, 15)
_STAT_RSS = 21


def session_rss_bytes(session_id: int) -> int:
    """The resident memory of every process in session `session_id`, summed (pages shared between them
    count once per process). A process that left the session (setsid) is not counted."""
    return sum(int(fields[_STAT_RSS]) * _PAGE_BYTES for fields in _session_stats(session_id))


def session_cpu_usec(session_id: int) -> int:
    """CPU time of the processes in session `session_id` so far, in microseconds: each one's own, and
    that of the exited children it waited for (an exited process is counted by the one that reaped it,
    so none twice). What exited without a waiter in the session, or left it (setsid), is not counted."""
    ticks = sum(sum(int(tick) for tick in fields[_STAT_CPU_TICKS]) for fields in _session_stats(session_id))
    return ticks * 1_000_000 // _CLOCK_TICKS_PER_S


def _session_stats(session_id: int) -> Iterator[list[bytes]]:
    """The fields after the command name of each process in the session (a few milliseconds per
    thousand processes on the host)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > _STAT_RSS and int(fields[_STAT_SESSION]) == session_id:
            yield fields
