"""Real captured outputs of the agent CLIs, for the output parsers' tests."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agent-outputs"
