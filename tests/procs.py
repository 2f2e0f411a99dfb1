"""Finding processes of a test's runs on the host, through /proc."""

from __future__ import annotations

from pathlib import Path


def pids_running(argument: str) -> list[int]:
    """Pids of processes with `argument` as one of their command-line arguments (tests give each run a
    unique one, e.g. a sleep duration, to find its processes whatever sandbox they are in)."""
    needle = argument.encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and needle in (entry / "cmdline").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def alive(pids: list[int]) -> list[int]:
    """The pids that are neither gone nor zombies (a zombie whose parent died belongs to the host's
    init, which reaps it on its own schedule)."""
    living = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            living.append(pid)
    return living
