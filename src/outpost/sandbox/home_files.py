"""Placing a run's configuration files (an agent CLI's settings, a seeded cache) in its home directory.

The paths come from adapters, the contents from adapters or host files they name; still, nothing here
trusts them to stay inside the home: a path that is absolute or climbs out is refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from outpost.errors import SandboxError

MAX_DEPTH = 16


def place_home_files(home: Path, files: Mapping[str, bytes | Path], uid: int | None) -> None:
    """Write each file under `home` (owned by `uid` when given, mode 0600, directories 0700). Raises
    SandboxError for a path that would leave the home or a host file that cannot be read."""
    for relative, content in files.items():
        target = home / _checked(relative)
        _make_parents(home, target.parent, uid)
        try:
            if isinstance(content, Path):
                shutil.copyfile(content, target)
            else:
                target.write_bytes(content)
            target.chmod(0o600)
            if uid is not None:
                os.chown(target, uid, uid)
        except OSError as exc:
            raise SandboxError(f"cannot place {relative} in the run's home: {exc.strerror or exc}") from exc


def _checked(relative: str) -> PurePosixPath:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or not path.parts or len(path.parts) > MAX_DEPTH:
        raise SandboxError(f"a home file's path must stay inside the home: {relative!r}")
    return path


def _make_parents(home: Path, directory: Path, uid: int | None) -> None:
    missing = [parent for parent in (directory, *directory.parents) if parent.is_relative_to(home)]
    for parent in reversed(missing):
        if parent == home or parent.exists():
            continue
        parent.mkdir(mode=0o700)
        if uid is not None:
            os.chown(parent, uid, uid)
