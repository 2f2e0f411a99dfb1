"""`outpost agents` as a user runs it, against the real install dir (.tools/agents, filled by
scripts/bootstrap): every pinned CLI is reported installed at its pin and ready."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from outpost.agents.pins import ALL_INSTALLS
from tests.integration.processes import OUTPOST
from tests.requirements import require

REPO = Path(__file__).resolve().parents[2]
EXIT_USER_ERROR = 1


def _outpost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `outpost` from the repository root with no OUTPOST_* settings but `env`."""
    base = {name: value for name, value in os.environ.items() if not name.startswith("OUTPOST_")}
    return subprocess.run(
        [OUTPOST, *args],
        check=False,
        cwd=REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _rows(*args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    done = _outpost(*args, env=env)
    assert done.returncode == 0, done.stderr
    return {row["agent"]: row for row in json.loads(done.stdout)}


@pytest.fixture
def real_rows() -> dict[str, dict[str, Any]]:
    """`outpost agents --json` on the real install dir; fails under CI=true (skips elsewhere) when a CLI
    is not installed at all."""
    rows = _rows("agents", "--json")
    absent = [name for name in ALL_INSTALLS if rows[name]["installed"] is None]
    require(f"agent CLIs not installed in .tools/agents: {absent}; run scripts/bootstrap" if absent else None)
    return rows


def test_every_pinned_agent_is_installed_at_its_pin_and_ready(real_rows: dict[str, dict[str, Any]]) -> None:
    rows = real_rows
    for name, pinned in ALL_INSTALLS.items():
        row = rows[name]
        assert (row["package"], row["pin"], row["installed"]) == (
            pinned.package,
            pinned.version,
            pinned.version,
        )
        assert row["ready"], f"{name}: {row['reason']}"
        assert Path(row["executable"]).is_absolute()
    assert rows["shell"]["ready"]
    assert rows["shell"]["package"] is None


def test_list_shows_which_providers_are_configured(tmp_path: Path) -> None:
    env = {
        "OUTPOST_AGENTS__INSTALL_DIR": str(tmp_path / "agents"),
        "OUTPOST_PROVIDERS__ANTHROPIC__API_KEY": "sk-test",
        "OUTPOST_PROVIDERS__XAI__BASE_URL": "http://127.0.0.1:9",
    }
    rows = _rows("agents", "list", "--json", env=env)
    assert rows["claude"]["providers_configured"] == ["anthropic"]
    assert rows["codex"]["providers_configured"] == []
    assert rows["aider"]["providers_configured"] == ["anthropic", "xai"]
    assert rows["gemini"]["ready"] is False
    assert rows["gemini"]["reason"] == "not installed"
    table = _outpost("agents", env=env).stdout
    for name in [*ALL_INSTALLS, "shell"]:
        assert name in table
    assert "missing" in table
    assert "no: not installed" in table


def test_installing_an_unknown_agent_fails_in_one_line(tmp_path: Path) -> None:
    install_dir = tmp_path / "agents"
    done = _outpost(
        "agents", "install", "claude", "nope", env={"OUTPOST_AGENTS__INSTALL_DIR": str(install_dir)}
    )
    assert done.returncode == EXIT_USER_ERROR
    assert done.stderr.splitlines() == [
        "outpost: unknown agent 'nope' (known: aider, claude, codex, gemini, grok, shell)"
    ]
    assert done.stdout == ""
    assert not install_dir.exists()  # nothing was installed before the names were checked


def test_installing_what_is_installed_only_checks(real_rows: dict[str, dict[str, Any]]) -> None:
    if not all(real_rows[name]["ready"] for name in ALL_INSTALLS):
        pytest.fail("an agent is not ready: this would install it (see the test above)")
    done = _outpost("agents", "install")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{name}: {pinned.spec} already installed" for name, pinned in ALL_INSTALLS.items()
    ]
