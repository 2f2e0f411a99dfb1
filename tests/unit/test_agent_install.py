"""Installed versions read from files, executables checked, readiness rules, and `install` driven by a fake
npm (the real installers run in tests/integration/test_agents_cli.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from outpost.agents.base import Install, executable_path, npm_prefix, venv_dir
from outpost.agents.install import InstallFailed, executable_state, install, installed_version, is_current
from outpost.agents.pins import ALL_INSTALLS
from outpost.agents.readiness import readiness

TOOL = Install(registry="npm", package="@acme/tool", version="1.2.3", command="tool")
PYTOOL = Install(registry="pypi", package="Py.Tool_Kit", version="0.4.0", command="pytool")

FAKE_NPM = """#!/bin/sh
# Stands in for `npm install --prefix P FLAGS... SPEC`: installs SPEC (or $FAKE_VERSION) with a `tool` bin.
echo "$@" >> "$FAKE_LOG"
if [ -n "$FAKE_FAIL" ]; then
  echo "npm error 404 Not Found - $FAKE_FAIL" >&2
  echo "npm error A complete log of this run can be found in: /tmp/x.log" >&2
  exit 1
fi
prefix=$3
for spec; do :; done
package=${spec%@*}
version=${FAKE_VERSION:-${spec##*@}}
mkdir -p "$prefix/node_modules/$package" "$prefix/node_modules/.bin"
printf '{"name": "%s", "version": "%s"}' "$package" "$version" > "$prefix/node_modules/$package/package.json"
printf '#!/bin/sh\\necho %s\\n' "$version" > "$prefix/node_modules/$package/cli.js"
chmod 700 "$prefix/node_modules/$package/cli.js"
ln -sf "../$package/cli.js" "$prefix/node_modules/.bin/tool"
"""


def _npm_package(install_dir: Path, install: Install, manifest: str) -> Path:
    package_dir = npm_prefix(install_dir) / "node_modules" / install.package
    package_dir.mkdir(parents=True)
    (package_dir / "package.json").write_text(manifest)
    return package_dir


def _dist_info(install_dir: Path, install: Install, dir_name: str, python: str = "python3.11") -> None:
    (venv_dir(install_dir, install) / "lib" / python / "site-packages" / dir_name).mkdir(parents=True)


def _program(path: Path, content: bytes, mode: int = 0o755) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_npm_version_comes_from_the_package_manifest(tmp_path: Path) -> None:
    _npm_package(tmp_path, TOOL, json.dumps({"name": TOOL.package, "version": "1.2.3"}))
    assert installed_version(TOOL, tmp_path) == "1.2.3"


@pytest.mark.parametrize("manifest", [None, "{not json", '{"name": "x"}', '{"version": 3}', "[]"])
def test_npm_version_is_none_without_a_readable_version(tmp_path: Path, manifest: str | None) -> None:
    if manifest is not None:
        _npm_package(tmp_path, TOOL, manifest)
    assert installed_version(TOOL, tmp_path) is None


@pytest.mark.parametrize("dir_name", ["py_tool_kit-0.4.0.dist-info", "Py.Tool_Kit-0.4.0.dist-info"])
def test_pypi_version_comes_from_the_dist_info_name(tmp_path: Path, dir_name: str) -> None:
    _dist_info(tmp_path, PYTOOL, "py_tool-9.9.dist-info")  # a different distribution
    _dist_info(tmp_path, PYTOOL, dir_name)
    assert installed_version(PYTOOL, tmp_path) == "0.4.0"


def test_pypi_version_is_none_when_the_distribution_is_absent(tmp_path: Path) -> None:
    assert installed_version(PYTOOL, tmp_path) is None
    _dist_info(tmp_path, PYTOOL, "py_tool_kit_extra-1.0.dist-info")
    _dist_info(tmp_path, PYTOOL, "py_tool_kit-0.4.0.egg-info")
    assert installed_version(PYTOOL, tmp_path) is None


@pytest.mark.parametrize(
    ("content", "mode", "state"),
    [
        (b"\x7fELF\x02\x01", 0o755, "ok"),
        (b"#!/usr/bin/env node\n", 0o755, "ok"),
        (b"#!/bin/sh\n", 0o750, "not_executable"),  # other uids (the runs) cannot execute it
        (b"#!/bin/sh\n", 0o711, "not_executable"),  # nor read the script
        (b'echo "Error: claude native binary not installed." >&2\nexit 1\n', 0o755, "not_executable"),
        (b"", 0o755, "not_executable"),
    ],
)
def test_executable_state(tmp_path: Path, content: bytes, mode: int, state: str) -> None:
    assert executable_state(_program(tmp_path / "tool", content, mode)) == state


def test_missing_and_dangling_executables_are_missing(tmp_path: Path) -> None:
    assert executable_state(tmp_path / "absent") == "missing"
    (tmp_path / "dangling").symlink_to(tmp_path / "absent")
    assert executable_state(tmp_path / "dangling") == "missing"
    (tmp_path / "dir").mkdir()
    assert executable_state(tmp_path / "dir") == "not_executable"


def test_readiness_rules() -> None:
    assert readiness(None, None, "missing").ready  # shell: nothing to install
    assert readiness(TOOL, None, "missing").reason == "not installed"
    assert readiness(TOOL, "1.2.2", "ok").reason == "version 1.2.2 differs from the pin 1.2.3"
    assert readiness(TOOL, "1.2.3", "missing").reason == "executable tool is missing"
    assert readiness(TOOL, "1.2.3", "not_executable").reason == "executable tool is not executable"
    ready = readiness(TOOL, "1.2.3", "ok")
    assert ready.ready
    assert ready.reason is None


def test_every_pin_is_exact() -> None:
    assert set(ALL_INSTALLS) == {"claude", "codex", "gemini", "grok", "aider"}
    for pinned in ALL_INSTALLS.values():
        assert all(part.isdigit() for part in pinned.version.split(".")), pinned


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake `npm` first on PATH; returns the log it appends its arguments to."""
    _program(tmp_path / "bin" / "npm", FAKE_NPM.encode())
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "npm.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    return log


def test_install_runs_npm_once_and_opens_the_tree_to_every_uid(tmp_path: Path, fake_npm: Path) -> None:
    install_dir = tmp_path / "agents"
    install(TOOL, install_dir)
    install(TOOL, install_dir)  # already at the pin: npm is not run again
    calls = fake_npm.read_text().splitlines()
    assert len(calls) == 1
    prefix = npm_prefix(install_dir.resolve())
    assert calls[0].split() == [
        "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-update-notifier",
        "--save-exact", "@acme/tool@1.2.3",
    ]  # fmt: skip
    assert is_current(TOOL, install_dir)
    program = executable_path(TOOL, install_dir).resolve()
    assert stat.S_IMODE(program.stat().st_mode) == 0o755


def test_a_failed_npm_raises_its_last_error_line(
    tmp_path: Path, fake_npm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "@acme/tool@1.2.3")
    with pytest.raises(InstallFailed) as raised:
        install(TOOL, tmp_path / "agents")
    assert (
        raised.value.detail
        == "installing @acme/tool@1.2.3 failed: npm error 404 Not Found - @acme/tool@1.2.3"
    )


def test_an_install_that_leaves_another_version_fails(
    tmp_path: Path, fake_npm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_VERSION", "1.1.0")  # as npm does when engines rule the pin out of a range
    with pytest.raises(InstallFailed, match=r"left version 1\.1\.0 installed"):
        install(TOOL, tmp_path / "agents")


def test_install_approves_the_install_script_that_places_a_native_binary(
    tmp_path: Path, fake_npm: Path
) -> None:
    claude = ALL_INSTALLS["claude"]
    prefix = npm_prefix(tmp_path)
    prefix.mkdir(parents=True)
    old = {"allowScripts": {f"{claude.package}@2.0.0": True, "other@1.0.0": False}}
    (prefix / "package.json").write_text(json.dumps(old))
    with pytest.raises(InstallFailed):  # the fake installs a `tool` bin, not `claude`
        install(claude, tmp_path)
    manifest = json.loads((prefix / "package.json").read_text())
    assert manifest["allowScripts"] == {claude.spec: True, "other@1.0.0": False}
