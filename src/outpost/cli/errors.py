"""Errors only the CLI raises. They derive from `OutpostError`, so `outpost.cli.main` maps them too."""

from __future__ import annotations

from outpost.errors import OutpostError


class DispatchUnsuccessful(OutpostError):
    """A dispatch the CLI waited for ended failed, timed_out or cancelled; `status` says which."""

    def __init__(self, detail: str, status: str) -> None:
        super().__init__(detail)
        self.status = status


class DownloadFailed(OutpostError):
    """An artifact could not be saved: an unsafe name, a checksum mismatch, or a local file error."""
