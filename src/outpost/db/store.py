"""The store: transactions over SQLite (embedded default) or PostgreSQL.

Services own transactions: `async with store.write() as conn:` commits on exit and rolls back on error;
repositories only execute statements on the `Connection` they are given.

SQLite allows one writer at a time. Writes therefore go through one connection, one transaction at a
time, each starting with `BEGIN IMMEDIATE` (the write lock is taken up front, so two writers never
deadlock on a lock upgrade). Reads and writes run inline on the event loop (decision records 0004 and
0007): in WAL mode a reader never waits for the writer, a commit does not fsync, and a statement costs
less than one hop to a driver thread. PostgreSQL goes through psycopg's async connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Engine, Executable, Result, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from outpost.db.inline import InlineConnection
from outpost.db.sqlite_writer import WRITER_PRAGMAS, InlineSqliteWriter
from outpost.errors import StoreUnavailable

Dialect = Literal["sqlite", "postgresql"]

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
    "PRAGMA foreign_keys=ON",
)
# Inline readers must never stall the event loop: they give up fast (SQLITE_BUSY → StoreUnavailable)
# in the rare cases a WAL reader waits at all (recovery after a crash), and cannot write by mistake.
SQLITE_INLINE_READER_PRAGMAS = ("PRAGMA busy_timeout=200", "PRAGMA query_only=1")

P = ParamSpec("P")
T = TypeVar("T")


class Connection(Protocol):
    """What repositories need of a connection: the async face of SQLAlchemy's Connection."""

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]: ...

    async def run_sync(
        self, fn: Callable[Concatenate[SyncConnection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T: ...


def normalize_database_url(url: str) -> str:
    """Give plain `sqlite://` and `postgresql://` URLs the async driver Outpost uses."""
    for plain, with_driver in (
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://", "postgresql+psycopg://"),
        ("postgres://", "postgresql+psycopg://"),
    ):
        if url.startswith(plain):
            return with_driver + url[len(plain) :]
    return url


def dialect_of(url: str) -> Dialect:
    if url.startswith("sqlite"):
        return "sqlite"
    if url.startswith("postgresql"):
        return "postgresql"
    raise ValueError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}: use sqlite or postgresql")


def _configure_sqlite(engine: Engine, begin_statement: str, pragmas: tuple[str, ...] = ()) -> None:
    """Take transaction control away from the sqlite3 module so that BEGIN is ours to choose."""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS + pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin_statement)


def _sqlite_engine(url: str, begin: str, pragmas: tuple[str, ...], pool_size: int) -> Engine:
    """A sync engine on the SQLite file, used from the event loop's thread (or, for checkpoints, from
    one worker thread at a time)."""
    engine = create_engine(
        url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
        pool_size=pool_size,
        max_overflow=60 if pool_size > 1 else 0,
        connect_args={"check_same_thread": False},
    )
    _configure_sqlite(engine, begin, pragmas)
    return engine


class Store:
    """Engines and transactions for one database."""

    def __init__(self, url: str) -> None:
        self.url = normalize_database_url(url)
        self.dialect: Dialect = dialect_of(self.url)
        self._inline_reader: Engine | None = None
        self._inline_writer: InlineSqliteWriter | None = None
        if self.dialect == "sqlite":
            self._inline_reader = _sqlite_engine(self.url, "BEGIN", SQLITE_INLINE_READER_PRAGMAS, pool_size=4)
            self._inline_writer = InlineSqliteWriter(
                _sqlite_engine(self.url, "BEGIN IMMEDIATE", WRITER_PRAGMAS, pool_size=1),
                _sqlite_engine(self.url, "BEGIN", (), pool_size=1),
            )
        else:
            self._writer = create_async_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Connection]:
        """A read-write transaction, committed when the block ends without an error."""
        async with _translated_errors():
            if self._inline_writer is not None:
                async with self._inline_writer.begin() as conn:
                    yield conn
            else:
                async with self._writer.begin() as conn:
                    yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        """A read-only transaction (a consistent snapshot). Do not hold it across long awaits: on SQLite
        it pins a WAL snapshot."""
        async with _translated_errors():
            if self._inline_reader is not None:
                with self._inline_reader.begin() as sync_conn:
                    yield InlineConnection(sync_conn)
            else:
                async with self._writer.begin() as conn:
                    yield conn

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""
        async with self.read() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._inline_writer is not None:
            await self._inline_writer.dispose()
        if self._inline_reader is not None:
            self._inline_reader.dispose()
        else:
            await self._writer.dispose()


@asynccontextmanager
async def _translated_errors() -> AsyncIterator[None]:
    try:
        yield
    except OperationalError as exc:
        if _is_connection_failure(exc):
            raise StoreUnavailable(f"the database cannot be reached: {exc.orig}") from exc
        raise


def _is_connection_failure(exc: DBAPIError) -> bool:
    return bool(exc.connection_invalidated) or "connect" in str(exc.orig).lower()
