"""Installs the pinned agent CLIs under the install dir: npm packages into one shared prefix, each PyPI
package into a virtual environment of its own built on the system Python.

Runs see the install dir read-only at the same path, besides /usr, and run as other uids: so every path
is absolute, every interpreter lives in /usr, and the whole tree is readable by everyone.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from outpost.agents.base import Install, executable_path, npm_prefix, venv_dir
from outpost.agents.pins import NPM_INSTALL_SCRIPTS
from outpost.agents.readiness import ExecutableState
from outpost.errors import OutpostError

SYSTEM_PYTHON = Path("/usr/bin/python3")
"""The interpreter of the PyPI CLIs' environments: runs see /usr, not a pyenv or the project's venv."""
INSTALL_TIMEOUT_S = 1800
ELF_MAGIC = b"\x7fELF"


class InstallFailed(OutpostError):
    """An agent CLI could not be installed; the detail ends with the installer's last error line."""


def installed_version(install: Install, install_dir: Path) -> str | None:
    """The version of `install`'s package under `install_dir`, read from its metadata files (nothing is
    run); None when it is not installed."""
    if install.registry == "npm":
        return _npm_version(npm_prefix(install_dir) / "node_modules" / install.package / "package.json")
    return _dist_info_version(venv_dir(install_dir, install), install.package)


def executable_state(path: Path) -> ExecutableState:
    """Whether `path` is a program every uid can run: executable and readable by others, and an ELF
    binary or a `#!` script (a shell stub left by an install script that never ran is neither)."""
    try:
        mode = path.stat().st_mode
        with path.open("rb") as file:
            head = file.read(4)
    except FileNotFoundError:  # also a dangling symlink
        return "missing"
    except OSError:
        return "not_executable"
    runnable_by_all = stat.S_ISREG(mode) and mode & stat.S_IXOTH and mode & stat.S_IROTH
    if not runnable_by_all or not head.startswith((ELF_MAGIC, b"#!")):
        return "not_executable"
    return "ok"


def is_current(install: Install, install_dir: Path) -> bool:
    """True when the pinned version is installed and its executable can run."""
    return (
        installed_version(install, install_dir) == install.version
        and executable_state(executable_path(install, install_dir)) == "ok"
    )


def install(install: Install, install_dir: Path) -> None:
    """Install exactly `install.spec` under `install_dir`, unless it is already there. Raises
    InstallFailed with the installer's last error line."""
    install_dir = install_dir.resolve()  # absolute, so shebangs and bin links hold at the runs' path
    install_dir.mkdir(parents=True, exist_ok=True)
    with _locked(install_dir):
        if is_current(install, install_dir):
            return
        if install.registry == "npm":
            _install_npm(install, install_dir)
        else:
            _install_pypi(install, install_dir)
        _open_to_all(install_dir)
        _check_installed(install, install_dir)


def _npm_version(manifest: Path) -> str | None:
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, str) else None


def _dist_info_version(venv: Path, package: str) -> str | None:
    """The version in the name of `package`'s `<name>-<version>.dist-info` directory in the venv."""
    wanted = _normalized(package)
    for site_packages in sorted(venv.glob("lib/python3.*/site-packages")):
        for info in site_packages.glob("*.dist-info"):
            name, dash, version = info.name.removesuffix(".dist-info").partition("-")
            if dash and _normalized(name) == wanted:
                return version
    return None


def _normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them: `Aider.Chat` and `aider_chat` are `aider-chat`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _install_npm(install: Install, install_dir: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise InstallFailed(f"cannot install {install.spec}: npm is missing (scripts/bootstrap installs it)")
    prefix = npm_prefix(install_dir)
    prefix.mkdir(parents=True, exist_ok=True)
    _allow_install_script(prefix, install)
    flags = ["--no-audit", "--no-fund", "--no-update-notifier", "--save-exact"]
    _run([npm, "install", "--prefix", str(prefix), *flags, install.spec], install, cwd=prefix)


def _allow_install_script(prefix: Path, install: Install) -> None:
    """Approve, in the prefix's package.json, the install script of a package that needs one, pinned to
    this version (npm is moving to skipping unapproved scripts; older npm ignores the field)."""
    if install.package not in NPM_INSTALL_SCRIPTS:
        return
    manifest = prefix / "package.json"
    try:
        data = json.loads(manifest.read_text())
    except FileNotFoundError:
        data = {}
    except ValueError as exc:
        raise InstallFailed(f"{manifest} is not valid JSON: {exc}") from exc
    policy = data.get("allowScripts", {})
    stale = [key for key in policy if key.startswith(f"{install.package}@")]
    if stale == [install.spec] and policy[install.spec] is True:
        return
    for key in stale:
        del policy[key]
    policy[install.spec] = True
    data["allowScripts"] = policy
    manifest.write_text(json.dumps(data, indent=2) + "\n")


def _install_pypi(install: Install, install_dir: Path) -> None:
    venv = venv_dir(install_dir, install)
    python = venv / "bin" / "python"
    if python.exists() and not python.resolve().is_relative_to("/usr"):
        shutil.rmtree(venv)  # built on an interpreter the runs cannot see: start again
    uv = _find_uv()
    if uv is not None:
        # --no-config: the project's own uv settings are not meant for the agents' environments.
        if not python.exists():
            _run([uv, "--no-config", "venv", "--quiet", "--python", str(SYSTEM_PYTHON), str(venv)], install)
        _run([uv, "--no-config", "pip", "install", "--quiet", "--python", str(python), install.spec], install)
        return
    if not python.exists():
        _run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], install)
    pip_flags = ["--quiet", "--disable-pip-version-check"]
    _run([str(python), "-m", "pip", "install", *pip_flags, install.spec], install)


def _find_uv() -> str | None:
    """The project's uv (scripts/bootstrap puts it in .tools/bin, next to .venv), else one on PATH."""
    project_uv = Path(sys.prefix).parent / ".tools" / "bin" / "uv"
    if os.access(project_uv, os.X_OK):
        return str(project_uv)
    return shutil.which("uv")


def _run(argv: list[str], install: Install, cwd: Path | None = None) -> None:
    """Run one installer step; raise InstallFailed with its last stderr line when it fails."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "PIP_NO_INPUT": "1"}
    try:
        done = subprocess.run(  # noqa: S603 - argv is built here from pinned specs and resolved paths
            argv, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S, check=False, cwd=cwd, env=env
        )
    except FileNotFoundError as exc:
        raise InstallFailed(f"cannot install {install.spec}: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise InstallFailed(f"installing {install.spec} took over {INSTALL_TIMEOUT_S} s; gave up") from exc
    if done.returncode != 0:
        raise InstallFailed(f"installing {install.spec} failed: {_last_error_line(done.stderr, done.stdout)}")


def _last_error_line(stderr: str, stdout: str) -> str:
    """The installer's last stderr line, skipping npm's pointer to its log file (which says nothing)."""
    for text in (stderr, stdout):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        useful = [line for line in lines if "complete log of this run" not in line]
        if useful:
            return useful[-1]
    return "no error output"


def _check_installed(install: Install, install_dir: Path) -> None:
    """Catch an installer that succeeded without installing the pin: npm may pick another version, or
    skip the install script that puts a native binary in place."""
    found = installed_version(install, install_dir)
    if found != install.version:
        raise InstallFailed(f"installing {install.spec} left version {found or 'none'} installed")
    path = executable_path(install, install_dir)
    state = executable_state(path)
    if state != "ok":
        problem = "is missing" if state == "missing" else "is not a program every user can run"
        raise InstallFailed(f"{install.spec} is installed but {path} {problem} (did its install script run?)")


def _open_to_all(root: Path) -> None:
    """Make everything under `root` readable by every uid, and searchable or executable where the owner
    can execute it: runs use uids of their own. Symlinks are left alone (their modes mean nothing)."""
    for directory, _, files in os.walk(root):
        _add_mode(Path(directory), stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
        for name in files:
            path = Path(directory, name)
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                extra = stat.S_IRGRP | stat.S_IROTH
                if mode & stat.S_IXUSR:
                    extra |= stat.S_IXGRP | stat.S_IXOTH
                _add_mode(path, extra, mode)


def _add_mode(path: Path, bits: int, mode: int | None = None) -> None:
    current = stat.S_IMODE(path.lstat().st_mode if mode is None else mode)
    if current | bits != current:
        path.chmod(current | bits)


@contextmanager
def _locked(install_dir: Path) -> Iterator[None]:
    """Hold the install dir's lock: two installers writing one npm prefix or venv would break it."""
    with (install_dir / ".install.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
