"""Settings come from OUTPOST_* variables, nested with __."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from outpost.db.store import dialect_of, normalize_database_url
from outpost.settings import Settings


def test_nested_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_WORKER__SLOTS", "16")
    monkeypatch.setenv("OUTPOST_LIMITS__REQUESTS_PER_S", "0")
    monkeypatch.setenv("OUTPOST_PROVIDERS__ANTHROPIC__BASE_URL", "http://127.0.0.1:9999")
    settings = Settings()
    assert settings.worker.slots == 16
    assert settings.limits.requests_per_s == 0
    assert settings.providers["anthropic"].base_url == "http://127.0.0.1:9999"


def test_the_default_database_is_sqlite_inside_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path / 'outpost.db'}"


def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTPOST_WORKER__SLOTS", "0")
    with pytest.raises(ValidationError, match="slots"):
        Settings()


def test_plain_database_urls_get_the_async_driver() -> None:
    assert normalize_database_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert dialect_of("postgresql+psycopg://u@h/db") == "postgresql"
    with pytest.raises(ValueError, match="mysql"):
        dialect_of("mysql://u@h/db")


@pytest.mark.parametrize("entry", ["169.254.169.254", "0x7f.1", "*", "ok.test:70000", "[::1]"])
def test_a_bad_global_egress_entry_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    monkeypatch.setenv("OUTPOST_SANDBOX__EGRESS_ALLOW", json.dumps([entry]))
    with pytest.raises(ValidationError, match="egress_allow"):
        Settings()


@pytest.mark.parametrize("value", ["-1", "65", "two", "1.5"])
def test_a_bad_number_of_parked_launchers_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OUTPOST_SANDBOX__PARKED_LAUNCHERS", value)
    with pytest.raises(ValidationError, match="parked_launchers"):
        Settings()


def test_parked_launchers_default_to_two_and_zero_turns_them_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().sandbox.parked_launchers == 2
    monkeypatch.setenv("OUTPOST_SANDBOX__PARKED_LAUNCHERS", "0")
    assert Settings().sandbox.parked_launchers == 0
