"""A synchronous SQLAlchemy connection behind the async `Connection` face (see store.py): statements run
on the calling thread, the event loop's (decision records 0004 and 0007)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Executable, Result

P = ParamSpec("P")
T = TypeVar("T")


class InlineConnection:
    """A sync SQLite connection with the async face of `Connection`; statements run on the calling thread."""

    def __init__(self, connection: SyncConnection) -> None:
        self._connection = connection

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[Any]:
        return self._connection.execute(statement, parameters)

    async def run_sync(
        self, fn: Callable[Concatenate[SyncConnection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return fn(self._connection, *args, **kwargs)
