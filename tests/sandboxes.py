"""The sandbox test servers run on: the default backend (`bwrap`) wherever it can work.

Each server gets a uid range of its own, so that one server's janitor never kills another's runs. On a
developer machine without root or bubblewrap, servers fall back to the `process` backend (and say so in
the test report header); under `CI=true` bwrap must work.
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
from pathlib import Path

UID_BLOCK = 64


@functools.cache
def bwrap_problems() -> tuple[str, ...]:
    from outpost.sandbox.bwrap import BwrapSandbox  # noqa: PLC0415 - only when a server needs it
    from outpost.sandbox.cgroups import Limits  # noqa: PLC0415

    probe = BwrapSandbox(Path(tempfile.gettempdir()) / "outpost-probe", 1024, 700_000, 1, Limits(2**26, 8, 1))
    return tuple(probe.problems())


def require_bwrap() -> None:
    """For tests of the bwrap backend itself: skipped where it cannot work, failed under CI=true."""
    from tests.requirements import require  # noqa: PLC0415 - keeps this module free of pytest at import

    problems = bwrap_problems()
    require(f"bwrap cannot run here: {'; '.join(problems)}" if problems else None)


def backend() -> str:
    """`bwrap`, unless it cannot work on this (non-CI) machine."""
    if bwrap_problems() and os.environ.get("CI") != "true":
        return "process"
    return "bwrap"


def sandbox_settings() -> dict[str, object]:
    """Settings for one test server's sandbox: the default backend with a uid range of its own."""
    if backend() == "process":
        return {"backend": "process"}
    return {
        "backend": "bwrap",
        "uid_first": 700_000 + random.randrange(4000) * UID_BLOCK,
        "uid_count": UID_BLOCK,
    }


def sandbox_env() -> dict[str, str]:
    """The same, as OUTPOST_SANDBOX__* environment variables for a server process."""
    return {f"OUTPOST_SANDBOX__{name.upper()}": str(value) for name, value in sandbox_settings().items()}
