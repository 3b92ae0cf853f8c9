"""The websocket servers that ``bench/fanout.py`` compares, one per ASGI application.

Each is served by its own daphne process (settings: ``bench.fanout_settings``):

- ``events_application``: ``EventStreamConsumer`` as the library ships it;
  ``may_subscribe`` (the ``SUBSCRIBE_POLICY``) opens namespace ``bench``.
  Connections get events from the process's hub, the one reader of the
  channel layer.
- ``channels_application``: a plain Channels consumer that joins group
  ``bench`` and sends each ``bench.tick`` message it gets with ``send_json``.
- ``floor_application``: no channel layer either. One task per process
  subscribes to a Redis pub/sub channel and writes every message (an already
  encoded frame) to each connected websocket, one ``send`` after the other.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.fanout_settings")

import django

django.setup()

import redis.asyncio as aioredis  # noqa: E402
from channels.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
)
from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from channels_events import HubMiddleware  # noqa: E402
from channels_events.consumers import EventStreamConsumer  # noqa: E402

GROUP = "bench"
# Not an alias in CHANNEL_LAYERS: a consumer with it gets no channel layer.
NO_LAYER = "none"


def may_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    """Let every connection subscribe to namespace ``bench``."""
    return namespace == "bench"


class BenchEventStream(EventStreamConsumer):
    """The library's browser stream; the policy comes from ``CHANNELS_EVENTS``."""


class GroupConsumer(AsyncJsonWebsocketConsumer):
    """Plain Channels: one group membership per connection."""

    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_tick(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])


_floor_consumers: set[FloorConsumer] = set()
_floor_task: asyncio.Task[None] | None = None
_floor_ready: asyncio.Event | None = None


async def _floor_forever(ready: asyncio.Event) -> None:
    client = aioredis.Redis.from_url(settings.FANOUT_REDIS_URL)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(settings.FANOUT_FLOOR_CHANNEL)
    ready.set()
    async for message in pubsub.listen():
        if message["type"] != "message":
            continue
        frame = message["data"].decode()
        for consumer in list(_floor_consumers):
            try:
                await consumer.send(text_data=frame)
            except Exception:  # a connection that went away meanwhile
                _floor_consumers.discard(consumer)


async def _start_floor() -> None:
    global _floor_task, _floor_ready
    if _floor_task is None:
        _floor_ready = asyncio.Event()
        _floor_task = asyncio.get_running_loop().create_task(_floor_forever(_floor_ready))
    assert _floor_ready is not None
    await _floor_ready.wait()


class FloorConsumer(AsyncWebsocketConsumer):
    """The floor: a bare consumer written to by the process's one pub/sub reader."""

    channel_layer_alias = NO_LAYER

    async def connect(self) -> None:
        await _start_floor()
        _floor_consumers.add(self)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        _floor_consumers.discard(self)


events_application = HubMiddleware(ProtocolTypeRouter({"websocket": BenchEventStream.as_asgi()}))
channels_application = ProtocolTypeRouter({"websocket": GroupConsumer.as_asgi()})
floor_application = ProtocolTypeRouter({"websocket": FloorConsumer.as_asgi()})
