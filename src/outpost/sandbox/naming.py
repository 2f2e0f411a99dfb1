"""Names that tie a server's sandbox leftovers (processes, cgroups, workspaces) to its data dir."""

from __future__ import annotations

import hashlib
from pathlib import Path


def instance_marker(data_dir: Path) -> str:
    """Marks a data dir's runs, so a restarted server cleans up its own leftovers and nobody else's."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def workspaces_dir(data_dir: Path) -> Path:
    """Where a data dir's dispatch workspaces live while their dispatch runs."""
    return data_dir.resolve() / "workspaces"
