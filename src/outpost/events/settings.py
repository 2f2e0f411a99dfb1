"""Settings of live event streams and of the bus that wakes them (`OUTPOST_EVENTS__*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class EventSettings(BaseModel):
    """Live event streams (`text/event-stream`) and the bus that tells them of new events."""

    bus: Literal["auto", "inprocess", "postgres"] = "auto"
    """`inprocess`: wake-ups stay inside this process (the worker runs here too). `postgres`: LISTEN/NOTIFY
    on the database, needed when workers in other processes write events. `auto`: `postgres` on a
    PostgreSQL database, `inprocess` on SQLite."""
    keepalive_s: float = Field(default=15.0, gt=0)
    """A stream that sent nothing for this long sends a `: keep-alive` comment (proxies and load
    balancers close connections that stay silent)."""
    key_recheck_s: float = Field(default=10.0, gt=0)
    """How often an open stream checks that the API key it was opened with is still valid: a stream of a
    revoked or expired key ends within this time plus `keepalive_s`."""
    poll_interval_s: float = Field(default=2.0, gt=0)
    """How often a stream reads the store even without a wake-up: the longest a lost wake-up delays an
    event."""
    recent_bytes: int = Field(default=256 * 1024, ge=4096)
    """Encoded events of each followed dispatch kept in memory for its streams (shared by all of them).
    A stream whose client reads so slowly that events it has not received yet drop out of this window is
    sent `event: resume` with the id to resume from, and closed."""
