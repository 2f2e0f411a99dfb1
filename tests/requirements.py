"""What a test needs from the machine (a service, root, a tool), in one place.

A developer's machine may lack it: the test is skipped there and says why. Under `CI=true` the project's
own scripts have installed everything, so a missing requirement is a failure, never a silent skip.
"""

from __future__ import annotations

import os

import pytest


def require(problem: str | None) -> None:
    """Do nothing when `problem` is None; otherwise fail under CI=true and skip elsewhere."""
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and a requirement is missing: {problem}")
    pytest.skip(problem)
