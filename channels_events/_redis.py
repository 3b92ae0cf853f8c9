"""Redis clients for the library's own keys (history, presence): one per event loop.

A redis-py asyncio client belongs to the loop it first ran on; the hub's
loop, a management command's ``asyncio.run`` and a test's loop each get
their own, made from the channel layer's host settings (so TLS, passwords
and Sentinel-free URLs work as the layer's do).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

__all__ = ["LoopClients"]


class LoopClients:
    """Give each event loop its own Redis client, with ``scripts`` registered on it."""

    def __init__(self, host: dict[str, Any], scripts: Mapping[str, str] | None = None) -> None:
        self.host = host
        self._sources = dict(scripts or {})
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, dict[str, Any]]] = {}

    def _entry(self) -> tuple[Any, dict[str, Any]]:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            from channels_redis.utils import create_pool
            from redis import asyncio as aioredis

            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = aioredis.Redis(connection_pool=create_pool(self.host))
            # EVALSHA, and EVAL once when Redis does not know a script yet.
            scripts = {name: client.register_script(src) for name, src in self._sources.items()}
            entry = self._clients[loop] = (client, scripts)
        return entry

    def client(self) -> Any:
        """Return this loop's client."""
        return self._entry()[0]

    def script(self, name: str) -> Any:
        """Return this loop's callable for the script registered as ``name``."""
        return self._entry()[1][name]

    async def close(self) -> None:
        """Close this loop's client and its connections, if it has one."""
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry[0].aclose(close_connection_pool=True)
