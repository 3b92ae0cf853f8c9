"""The last events of each namespace, so that a browser can catch up (PROTOCOL.md section 6).

The hub records every event it publishes before anyone can receive it; a
websocket subscribing with ``since`` reads what came after that event id.
With a ``channels_redis`` layer the history is a Redis stream per namespace,
shared by every process; with ``InMemoryChannelLayer`` it lives in the
process; with any other layer, or ``HISTORY_SIZE`` 0, none is kept and every
``since`` is answered with ``gap``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
from typing import Any

__all__ = ["History", "MemoryHistory", "RedisHistory", "history_for"]

logger = logging.getLogger("channels_events.history")

Envelope = dict[str, Any]
# Entries read from Redis per round trip when looking for ``since``.
_CHUNK = 200


class History:
    """Where published events are kept, oldest first, at most ``size`` per namespace."""

    def __init__(self, size: int) -> None:
        self.size = size

    async def append(self, namespace: str, envelopes: list[Envelope]) -> None:
        """Record published events of one namespace, in publish order."""
        raise NotImplementedError

    async def after(self, namespace: str, since: str) -> list[tuple[Envelope, str]] | None:
        """Return the events recorded after the one with id ``since``, oldest first.

        Each comes with its envelope encoded as JSON. None means ``since`` is
        not (or no longer) in the history: what came after it is unknown.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of this event loop's connections, if any."""


def _encode(envelope: Envelope) -> str:
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _unique_after(entries: list[tuple[str, str]], since: str) -> list[tuple[Envelope, str]]:
    # A run the hub had to send again may be recorded twice: keep the first.
    seen = {since}
    found = []
    for event_id, encoded in entries:
        if event_id not in seen:
            seen.add(event_id)
            found.append((json.loads(encoded), encoded))
    return found


class MemoryHistory(History):
    """History kept in this process (for ``InMemoryChannelLayer``: one process anyway)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self._kept: dict[str, collections.deque[tuple[str, str]]] = {}

    async def append(self, namespace: str, envelopes: list[Envelope]) -> None:
        kept = self._kept.get(namespace)
        if kept is None:
            kept = self._kept[namespace] = collections.deque(maxlen=self.size)
        kept.extend((envelope["id"], _encode(envelope)) for envelope in envelopes)

    async def after(self, namespace: str, since: str) -> list[tuple[Envelope, str]] | None:
        entries = list(self._kept.get(namespace, ()))
        for index in range(len(entries) - 1, -1, -1):
            if entries[index][0] == since:
                return _unique_after(entries[index + 1 :], since)
        return None


class RedisHistory(History):
    """History in a Redis stream per namespace, ``<prefix>:history:<namespace>``.

    Trimmed at each append to about ``size`` entries (Redis trims in whole
    nodes, so a few more may stay). Each event loop gets its own client.
    """

    def __init__(self, host: dict[str, Any], prefix: str, size: int) -> None:
        super().__init__(size)
        self.host = host
        self.prefix = prefix
        self._clients: dict[asyncio.AbstractEventLoop, Any] = {}

    def key(self, namespace: str) -> str:
        """Return the stream key of ``namespace``."""
        return f"{self.prefix}:history:{namespace}"

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            from channels_redis.utils import create_pool
            from redis import asyncio as aioredis

            for old in [old for old in self._clients if old.is_closed()]:
                del self._clients[old]
            client = self._clients[loop] = aioredis.Redis(connection_pool=create_pool(self.host))
        return client

    async def close(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose(close_connection_pool=True)

    async def append(self, namespace: str, envelopes: list[Envelope]) -> None:
        key = self.key(namespace)
        async with self._client().pipeline(transaction=False) as pipe:
            for envelope in envelopes:
                pipe.xadd(
                    key,
                    {"id": envelope["id"], "event": _encode(envelope)},
                    maxlen=self.size,
                    approximate=True,
                )
            await pipe.execute()

    async def after(self, namespace: str, since: str) -> list[tuple[Envelope, str]] | None:
        client = self._client()
        key = self.key(namespace)
        newer: list[tuple[str, str]] = []  # newest first
        top = "+"
        # Only the newest ``size`` entries count (the stream may hold a few more).
        while True:
            count = min(_CHUNK, self.size - len(newer))
            chunk = await client.xrevrange(key, max=top, min="-", count=count)
            for _stream_id, fields in chunk:
                event_id = fields[b"id"].decode()
                if event_id == since:
                    newer.reverse()
                    return _unique_after(newer, since)
                newer.append((event_id, fields[b"event"].decode()))
            if len(chunk) < count or len(newer) >= self.size:
                return None
            top = "(" + chunk[-1][0].decode()


def history_for(alias: str | None, size: int) -> History | None:
    """Return the history that goes with the channel layer ``alias``, or None."""
    from django.conf import settings

    if not alias or size <= 0:
        return None
    config = getattr(settings, "CHANNEL_LAYERS", {}).get(alias)
    if not config:
        return None
    backend = str(config.get("BACKEND", ""))
    if backend == "channels.layers.InMemoryChannelLayer":
        return MemoryHistory(size)
    if backend.startswith("channels_redis."):
        from channels_redis.utils import decode_hosts

        layer_config = config.get("CONFIG", {})
        # With several hosts (sharding), the first one keeps the history.
        host = decode_hosts(layer_config.get("hosts"))[0]
        return RedisHistory(host, layer_config.get("prefix", "asgi"), size)
    return None
