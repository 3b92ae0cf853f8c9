"""Tests for channels_events._history: what a subscriber catching up with ``since`` reads."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import redis

from channels_events import Dispatcher, Event
from channels_events._history import History, MemoryHistory, RedisHistory, history_for
from channels_events._hub import Hub

ALIAS = "historytest"


def envelope(n: int, namespace: str = "shop") -> dict[str, Any]:
    return Event(f"{namespace}::Order::created", {"n": n}).to_dict()


@pytest.fixture(params=["memory", "redis"])
async def make_history(request: pytest.FixtureRequest) -> AsyncIterator[Callable[[int], History]]:
    """Build histories of a given size, in memory or in the test Redis (own prefix)."""
    if request.param == "memory":
        yield MemoryHistory
        return
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    made: list[History] = []

    def make(size: int) -> History:
        made.append(RedisHistory({"address": url}, prefix, size))
        return made[-1]

    yield make
    for history in made:
        await history.close()


async def test_after_returns_what_came_after_since_in_order(make_history):
    history = make_history(10)
    first, second, third = envelope(1), envelope(2), envelope(3)
    await history.append("shop", [first, second])
    await history.append("shop", [third])
    assert await history.after("shop", first["id"]) == [second, third]
    assert await history.after("shop", second["id"]) == [third]


async def test_after_the_newest_event_is_empty_and_unknown_ids_are_none(make_history):
    history = make_history(10)
    events = [envelope(n) for n in range(3)]
    await history.append("shop", events)
    assert await history.after("shop", events[-1]["id"]) == []
    assert await history.after("shop", "01JD3Z8Q4X1V6T2N9K5M7R0B3C") is None
    assert await history.after("billing", events[0]["id"]) is None


async def test_namespaces_are_kept_apart(make_history):
    history = make_history(10)
    shop = [envelope(n, "shop") for n in range(2)]
    billing = [envelope(n, "billing") for n in range(2)]
    await history.append("shop", shop[:1])
    await history.append("billing", billing)
    await history.append("shop", shop[1:])
    assert await history.after("shop", shop[0]["id"]) == shop[1:]
    assert await history.after("billing", billing[0]["id"]) == billing[1:]


@pytest.mark.parametrize("runs", [[6], [1] * 6, [2, 3, 1], [4, 2]])
async def test_only_the_last_size_events_count(make_history, runs):
    history = make_history(3)
    events = [envelope(n) for n in range(6)]
    start = 0
    for length in runs:  # recorded as the hub publishes them: runs of events
        await history.append("shop", events[start : start + length])
        start += length
    # The oldest of the last three is the oldest id a subscriber can resume from.
    assert await history.after("shop", events[2]["id"]) is None
    assert await history.after("shop", events[3]["id"]) == events[4:]
    assert await history.after("shop", events[5]["id"]) == []


async def test_an_event_recorded_twice_is_replayed_once(make_history):
    history = make_history(10)
    first, second = envelope(1), envelope(2)
    await history.append("shop", [first, second])
    await history.append("shop", [second])  # a run sent again after a failure
    assert await history.after("shop", first["id"]) == [second]


@pytest.mark.redis
async def test_redis_history_is_a_stream_of_one_entry_per_event_trimmed_to_size(
    redis_url, redis_prefix
):
    history = RedisHistory({"address": redis_url}, redis_prefix, 150)
    events = [envelope(n) for n in range(1000)]
    for start in range(0, 1000, 100):  # runs of BATCH_SIZE, as the hub records bursts
        await history.append("shop", events[start : start + 100])
    await history.close()
    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{redis_prefix}:history:shop"
        assert client.type(key) == b"stream"
        # HISTORY_SIZE counts events, not runs of them.
        assert client.xlen(key) == 150
        [(_id, fields)] = client.xrevrange(key, count=1)
        assert fields[b"id"].decode() == events[-1]["id"]
        assert msgpack.unpackb(fields[b"event"]) == events[-1]
        [(_id, fields)] = client.xrange(key, count=1)
        assert fields[b"id"].decode() == events[850]["id"]
    finally:
        client.close()


async def test_a_burst_keeps_size_events_not_size_runs(make_history):
    history = make_history(50)
    events = [envelope(n) for n in range(1000)]
    for start in range(0, 1000, 100):
        await history.append("shop", events[start : start + 100])
    assert await history.after("shop", events[949]["id"]) is None
    assert await history.after("shop", events[950]["id"]) == events[951:]


def big_envelope(n: int, pad: int) -> dict[str, Any]:
    return Event("shop::Order::created", {"n": n, "pad": "x" * pad}).to_dict()


async def test_history_keeps_at_most_max_bytes_of_events(make_history, request):
    history = make_history(1000)
    history.max_bytes = 50_000
    events = [big_envelope(n, 10_000) for n in range(20)]
    for event in events:
        await history.append("shop", [event])
    # About 10 KB each: the newest four fit in 50 KB, a fifth would not.
    assert await history.after("shop", events[15]["id"]) is None
    assert await history.after("shop", events[16]["id"]) == events[17:]
    if isinstance(history, RedisHistory):
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        try:
            key = history.key("shop")
            assert client.xlen(key) == 4
            assert 40_000 < int(client.get(key + ":bytes")) <= 50_000
        finally:
            client.close()


@pytest.mark.redis
async def test_redis_history_drops_just_enough_old_events_for_a_large_one(redis_url, redis_prefix):
    """One large event pushes out hundreds of small ones: no more than it must."""
    history = RedisHistory({"address": redis_url}, redis_prefix, 1000, max_bytes=50_000)
    small = [envelope(n) for n in range(350)]
    large = big_envelope(350, 30_000)
    sizes = [len(msgpack.packb(e)) for e in [*small, large]]
    assert sum(sizes[:-1]) <= 50_000  # every small one fits before the large one comes
    await history.append("shop", small)
    await history.append("shop", [large])
    # The newest small events that fit beside the large one stay, the rest go.
    kept = 0
    while sizes[-1] + sum(sizes[-2 - kept : -1]) <= 50_000:
        kept += 1
    first = len(small) - kept  # the oldest small event kept
    assert kept > 0 and first > 100  # more than one read of old entries to drop
    assert await history.after("shop", small[first - 1]["id"]) is None
    assert await history.after("shop", small[first]["id"]) == [*small[first + 1 :], large]
    await history.close()
    client = redis.Redis.from_url(redis_url)
    try:
        key = history.key("shop")
        assert client.xlen(key) == kept + 1
        assert int(client.get(key + ":bytes")) == sizes[-1] + sum(sizes[-1 - kept : -1])
    finally:
        client.close()


@pytest.mark.redis
async def test_redis_history_reads_runs_of_the_older_layout(redis_url, redis_prefix):
    """Entries written before one entry per event (a run each) are still replayed."""
    history = RedisHistory({"address": redis_url}, redis_prefix, 100)
    old = [envelope(n) for n in range(3)]
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(
            history.key("shop"),
            {"ids": msgpack.packb([e["id"] for e in old]), "events": msgpack.packb(old)},
        )
    finally:
        client.close()
    new = [envelope(n) for n in range(3, 5)]
    await history.append("shop", new)
    assert await history.after("shop", old[0]["id"]) == [*old[1:], *new]
    assert await history.after("shop", new[0]["id"]) == new[1:]
    await history.close()


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("channels.layers.InMemoryChannelLayer", MemoryHistory),
        ("channels_redis.core.RedisChannelLayer", RedisHistory),
        ("channels_redis.pubsub.RedisPubSubChannelLayer", RedisHistory),
        ("some.other.Layer", type(None)),
    ],
)
def test_history_follows_the_channel_layer(settings, backend, expected):
    settings.CHANNEL_LAYERS = {
        ALIAS: {
            "BACKEND": backend,
            "CONFIG": {"hosts": ["redis://127.0.0.1:6379/3"], "prefix": "myapp"},
        }
    }
    history = history_for(ALIAS, 500)
    assert type(history) is expected
    if isinstance(history, RedisHistory):
        assert history.host == {"address": "redis://127.0.0.1:6379/3"}
        assert history.key("shop") == "myapp:history:shop"
    if history is not None:
        assert history.size == 500


def test_no_history_without_a_layer_or_with_size_zero(settings):
    settings.CHANNEL_LAYERS = {ALIAS: {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert history_for(None, 1000) is None
    assert history_for(ALIAS, 0) is None
    assert history_for("missing", 1000) is None


# -- the hub records what it publishes ----------------------------------------------


@pytest.fixture
async def redis_hub(settings, redis_url, redis_prefix) -> AsyncIterator[Hub]:
    """A hub of its own on the core Redis layer, under the test's key prefix."""
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        ALIAS: {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": redis_prefix},
        },
    }
    dispatcher = Dispatcher()
    hub = Hub(dispatcher=dispatcher, alias=ALIAS)
    dispatcher.add_publisher(hub.publish, accepts=hub.accepts)
    await hub.attach(receive=False)
    yield hub
    await hub.stop()


@pytest.mark.redis
async def test_hub_records_published_events_in_redis(redis_hub, redis_url, redis_prefix):
    first = redis_hub.dispatcher.dispatch("shop::Order::created", {"n": 1})
    second = redis_hub.dispatcher.dispatch("shop::Order::updated", {"n": 2})
    redis_hub.dispatcher.dispatch("audit::entry::added", {"n": 3})
    history = redis_hub.history
    assert isinstance(history, RedisHistory)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    found = None
    while not found and loop.time() < deadline:
        await asyncio.sleep(0.02)
        found = await history.after("shop", first.id)
    assert found == [second.to_dict()]
    client = redis.Redis.from_url(redis_url)
    try:
        # Recorded as a run of its own, after the shop events: it may be on its way.
        while client.xlen(f"{redis_prefix}:history:audit") < 1 and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert client.xlen(f"{redis_prefix}:history:audit") == 1
    finally:
        client.close()
