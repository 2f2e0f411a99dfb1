"""Building the event bus from the settings (called once by the composition root)."""

from __future__ import annotations

from outpost.db.store import Dialect
from outpost.events.base import EventBus
from outpost.events.inprocess import InProcessBus
from outpost.events.settings import EventSettings


def build_event_bus(settings: EventSettings, database_url: str, dialect: Dialect) -> EventBus:
    """The configured bus; `auto` follows the database. The PostgreSQL one loads only when chosen.
    Raises ValueError for `postgres` on a database that is not PostgreSQL."""
    choice = settings.bus
    if choice == "auto":
        choice = "postgres" if dialect == "postgresql" else "inprocess"
    if choice == "inprocess":
        return InProcessBus()
    if dialect != "postgresql":
        raise ValueError("the postgres event bus needs a PostgreSQL database (OUTPOST_DATABASE_URL)")
    from outpost.events.postgres import PostgresBus  # noqa: PLC0415 - loads only when chosen

    return PostgresBus(database_url)
