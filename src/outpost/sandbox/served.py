"""A listening socket served from the host's event loop, with the connection tasks it spawned: what the
egress proxy and the model gateway hand back to the sandbox, which closes it when the run ends."""

from __future__ import annotations

import asyncio


class ServedServer:
    """A served listener. `close()` stops accepting, closes the socket (releasing the sandbox's network
    namespace it was made in) and ends every open connection; it is idempotent and never raises."""

    def __init__(self, server: asyncio.Server, connections: set[asyncio.Task[None]]) -> None:
        self._server = server
        self._connections = connections

    async def close(self) -> None:
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
