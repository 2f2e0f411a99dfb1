"""Settings of retention and of the data dir's disk space (`OUTPOST_RETENTION__*`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

MIB = 1024**2
GIB = 1024**3


class RetentionSettings(BaseModel):
    """How long runs' artifacts and events and the audit log are kept, and how much disk the data dir may
    take."""

    artifact_days: int = Field(default=30, ge=1, le=3650)
    """Days a run's artifacts are kept. Each artifact's expiry is fixed when it is written, so a change
    applies to artifacts written from then on."""
    event_days: int = Field(default=30, ge=1, le=3650)
    """Days the events (the log) of a finished dispatch are kept after it finished; the dispatch itself,
    with its status, result and usage, is kept."""
    disk_cap_bytes: int | None = Field(default=None, ge=1024**2)
    """Most bytes the data dir may take (files on its own file system: mounted workspaces do not count).
    Past it, each sweep deletes artifacts, the oldest first, until the data dir is under the cap again.
    Unset: no cap."""
    min_free_bytes: int = Field(default=GIB, ge=0)
    """Free space kept on the data dir's file system: writes (artifacts, checkouts) that would leave less
    are refused with 507, and the server reports itself unready. The larger of this and
    `min_free_percent` applies."""
    min_free_percent: float = Field(default=5.0, ge=0, le=100)
    """Free space kept on the data dir's file system, in percent of its size (see `min_free_bytes`)."""
    outputs_max_files: int = Field(default=100, ge=0, le=10_000)
    """Most files of a run's outputs directory (`OUTPOST_OUTPUTS_DIR`) kept as artifacts; the rest are
    left out, with a warning."""
    outputs_max_file_bytes: int = Field(default=100 * MIB, ge=0)
    """Largest file of a run's outputs directory kept as an artifact; larger ones are left out."""
    outputs_max_total_bytes: int = Field(default=500 * MIB, ge=0)
    """Most bytes of a run's outputs directory kept as artifacts, all files together; a file that would
    go past it is left out."""
    audit_days: int = Field(default=365, ge=1, le=36_500)
    """Days audit log rows are kept. Older rows are deleted once a day, whole UTC days at a time, after a
    row recording the cut (so that `outpost audit verify` still verifies what is left)."""
    sweep_interval_s: float = Field(default=300.0, ge=1, le=24 * 3600)
    """Time between two retention sweeps (each deletes what expired and enforces the disk cap)."""
