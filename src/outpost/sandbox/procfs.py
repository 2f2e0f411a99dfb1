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
_STAT_SESSION = 3  # fields after the command name in /proc/PID/stat: state, ppid, pgrp, session, …
_STAT_RSS = 21  # … and the resident set size in pages (field 24 of proc(5))


def session_rss_bytes(session_id: int) -> int:
    """The resident memory of every process in session `session_id`, summed (pages shared between them
    count once per process). A process that left the session (setsid) is not counted."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if len(fields) > _STAT_RSS and int(fields[_STAT_SESSION]) == session_id:
            total += int(fields[_STAT_RSS]) * _PAGE_BYTES
    return total
