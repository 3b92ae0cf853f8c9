"""Catching up with ``since`` on the real Redis layers, against another process's hub.

"Process B" is a second hub with its own origin and dispatcher: to this
process's hub its events are remote, as another process's would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from channels_events import Dispatcher, Event
from channels_events._hub import Hub, get_hub
from channels_events.consumers import EventStreamConsumer

pytestmark = pytest.mark.redis

TIMEOUT = 5.0


def allow_all(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return True


@pytest.fixture(params=["core.RedisChannelLayer", "pubsub.RedisPubSubChannelLayer"])
async def other_process(
    request: pytest.FixtureRequest, settings: Any, redis_url: str, redis_prefix: str
) -> AsyncIterator[Hub]:
    """Point this process at a Redis layer; return the hub of a second 'process' on it."""
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis." + request.param,
            "CONFIG": {"hosts": [redis_url], "prefix": redis_prefix},
        }
    }
    settings.CHANNELS_EVENTS = {"SUBSCRIBE_POLICY": f"{__name__}.allow_all"}
    # An earlier test may have left this process's hub running on a thread,
    # receiving from the layer of its own settings: start from a stopped hub.
    await get_hub().stop()
    other = Hub(dispatcher=Dispatcher())
    await other.attach(receive=False)
    yield other
    await other.stop()
    await get_hub().stop()


async def published(hub: Hub) -> None:
    """Wait until ``hub`` has sent everything it was given."""
    for _ in range(int(TIMEOUT / 0.005)):
        if not hub.queued:
            return
        await asyncio.sleep(0.005)


async def test_an_event_published_right_after_the_history_read_is_not_lost(other_process):
    """The replay and the live events meet without a hole, even when joining the group is slow."""
    first = Event("shop::Order::created", {"n": 1})
    other_process.publish(first)
    await published(other_process)

    hub = get_hub()
    layer = hub.layer
    history = hub.history
    assert history is not None
    join = layer.group_add
    read = history.after
    sent: list[Event] = []

    async def slow_join(group: str, channel: str) -> None:
        await asyncio.sleep(0.05)  # one more round trip than usual
        await join(group, channel)

    async def read_then_b_publishes(namespace: str, since: str) -> Any:
        found = await read(namespace, since)
        sent.append(Event("shop::Order::updated", {"n": 2}))
        other_process.publish(sent[-1])
        await published(other_process)
        return found

    layer.group_add = slow_join
    history.after = read_then_b_publishes  # type: ignore[method-assign]
    ws = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    try:
        connected, _ = await ws.connect(timeout=TIMEOUT)
        assert connected
        assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "welcome"
        await ws.send_json_to(
            {"type": "subscribe", "id": "a", "pattern": r"shop::.*", "since": first.id}
        )
        assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "subscribed"
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        assert frame["type"] == "event", frame
        assert frame["event"]["id"] == sent[0].id
        # No second copy of it is on its way: a marker published now comes next.
        marker = Event("shop::marker")
        other_process.publish(marker)
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        assert frame["event"]["id"] == marker.id, frame
        assert await ws.receive_nothing(timeout=0.5)
    finally:
        del history.after
        del layer.group_add
        await ws.disconnect(timeout=TIMEOUT)


async def test_a_history_that_does_not_answer_gives_gap(other_process):
    """A stuck history read ends in gap; the connection keeps answering."""
    hub = get_hub()
    history = hub.history
    assert history is not None

    async def stuck(namespace: str, since: str) -> Any:
        await asyncio.sleep(3600)

    history.after = stuck  # type: ignore[method-assign]
    ws = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    try:
        connected, _ = await ws.connect(timeout=TIMEOUT)
        assert connected
        await ws.receive_json_from(timeout=TIMEOUT)
        since = "01JD3Z8Q4X1V6T2N9K5M7R0B3C"
        await ws.send_json_to(
            {"type": "subscribe", "id": "a", "pattern": r"shop::.*", "since": since}
        )
        assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "subscribed"
        assert await ws.receive_json_from(timeout=TIMEOUT) == {
            "type": "gap",
            "subscription": "a",
            "since": since,
        }
        await ws.send_json_to({"type": "ping", "id": "p"})
        assert await ws.receive_json_from(timeout=TIMEOUT) == {"type": "pong", "id": "p"}
    finally:
        del history.after
        await ws.disconnect(timeout=TIMEOUT)
