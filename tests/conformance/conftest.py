"""Conformance runs exercise the agent CLIs, not the store: one database (SQLite) is enough."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}"
