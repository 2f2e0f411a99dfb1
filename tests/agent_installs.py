"""The pinned agent CLIs the project's scripts install, for tests that run them for real."""

from __future__ import annotations

from pathlib import Path

from outpost.agents.install import is_current
from outpost.agents.pins import ALL_INSTALLS
from tests.requirements import require

INSTALL_DIR = Path(__file__).resolve().parents[1] / ".tools" / "agents"


def require_installed(agent: str) -> None:
    """Skipped where `agent` is not installed at its pin; failed under CI=true."""
    problem = None if is_current(ALL_INSTALLS[agent], INSTALL_DIR) else f"{agent} is not installed"
    require(problem and f"{problem}: run scripts/bootstrap")
