"""Conformance runs exercise the agent CLIs, not the store: one database (SQLite) is enough."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.provider import FakeProvider


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    """One fake provider per module; each test's server fixture resets it."""
    with FakeProvider() as provider:
        yield provider
