"""Filtered subscriptions (where, a policy's filter), subscribed.last and latest_event_id.

PROTOCOL.md sections 4, 5 and 6b.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from channels_events import (
    Event,
    InvalidFilter,
    adispatch,
    alatest_event_id,
    dispatch,
    latest_event_id,
)
from channels_events._filters import Filter, parse_filter
from channels_events._history import MemoryHistory
from channels_events._hub import get_hub
from channels_events._names import compile_client_pattern
from channels_events._subscriptions import Subscriptions
from tests.test_consumers import (
    TIMEOUT,
    Streams,
    assert_open,
    expect_error,
    expect_event,
    hub_settled,
    receive,
    subscribe,
)

HERE = __name__
ALICE = {"id": 7}


def allow_all(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return True


@pytest.fixture
def configure(settings: Any) -> Any:
    """Set CHANNELS_EVENTS; subscribing is open to everything unless a test says otherwise."""

    def apply(**values: Any) -> None:
        settings.CHANNELS_EVENTS = {"SUBSCRIBE_POLICY": f"{HERE}.allow_all", **values}

    apply()
    return apply


@pytest.fixture
async def streams(configure: Any) -> AsyncIterator[Streams]:
    opened = Streams()
    yield opened
    await opened.close()


# -- the filter itself ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "payload", "expected"),
    [
        ({"pk": 42}, {"pk": 42}, True),
        ({"pk": 42}, {"pk": 41}, False),
        ({"pk": 42}, {}, False),
        ({"pk": [1, 2, 3]}, {"pk": 2}, True),
        ({"pk": [1, 2, 3]}, {"pk": 4}, False),
        ({"fields.status": "paid"}, {"fields": {"status": "paid"}}, True),
        ({"fields.status": "paid"}, {"fields": {"status": "new"}}, False),
        ({"fields.status": "paid"}, {"fields": "paid"}, False),
        ({"fields.status": "paid"}, {"fields": [{"status": "paid"}]}, False),
        # Every key must hold.
        ({"pk": 1, "fields.status": "new"}, {"pk": 1, "fields": {"status": "new"}}, True),
        ({"pk": 1, "fields.status": "new"}, {"pk": 1, "fields": {"status": "paid"}}, False),
        # JSON semantics: numbers by value, a boolean is not a number, a string is not one.
        ({"pk": 1}, {"pk": 1.0}, True),
        ({"pk": 1.0}, {"pk": 1}, True),
        ({"pk": 1}, {"pk": True}, False),
        ({"pk": True}, {"pk": 1}, False),
        ({"pk": 0}, {"pk": False}, False),
        ({"pk": "1"}, {"pk": 1}, False),
        ({"pk": 1}, {"pk": "1"}, False),
        ({"flag": True}, {"flag": True}, True),
        ({"flag": False}, {"flag": False}, True),
        # null matches null only, and never a missing key.
        ({"owner": None}, {"owner": None}, True),
        ({"owner": None}, {}, False),
        ({"owner": None}, {"owner": 0}, False),
        ({"owner": [None, 3]}, {"owner": 3}, True),
        # A path that ends on an object or a list matches no scalar.
        ({"fields": "x"}, {"fields": {"x": 1}}, False),
        ({"tags": "a"}, {"tags": ["a"]}, False),
    ],
)
def test_a_filter_matches_payloads_as_json_values(where, payload, expected):
    assert parse_filter(where).matches(payload) is expected


def test_equal_filters_are_equal_however_written():
    first = parse_filter({"pk": [1, 2], "fields.status": "new"})
    second = parse_filter({"fields.status": ["new"], "pk": [2.0, 1]})
    assert first == second and hash(first) == hash(second)
    assert parse_filter({"pk": 1}) != parse_filter({"pk": True})
    assert parse_filter({"pk": 1}) != parse_filter({"pk": "1"})


def test_narrowing_never_widens():
    imposed = parse_filter({"fields.owner": 7})
    assert imposed.narrow(parse_filter({"fields.owner": [7, 8]})) == imposed
    assert not imposed.narrow(parse_filter({"fields.owner": 8})).matches({"fields": {"owner": 8}})
    assert not imposed.narrow(parse_filter({"fields.owner": 8})).matches({"fields": {"owner": 7}})
    both = imposed.narrow(parse_filter({"pk": 3}))
    assert both.matches({"pk": 3, "fields": {"owner": 7}})
    assert not both.matches({"pk": 3, "fields": {"owner": 8}})
    assert imposed.narrow(None) == imposed
    assert Filter({}).narrow(imposed) == imposed


BAD_WHERE = [
    ["pk", 1],
    "pk=1",
    42,
    True,
    {f"k{i}": 1 for i in range(9)},
    {"pk": list(range(101))},
    {"pk": []},
    {"pk": {"gt": 3}},
    {"pk": [1, [2]]},
    {"pk": [1, {"a": 2}]},
    {"": 1},
    {"fields.": 1},
    {".pk": 1},
    {"fields..status": 1},
    {"x" * 256: 1},
]


@pytest.mark.parametrize("where", BAD_WHERE)
def test_malformed_filters_are_refused_with_the_bad_value(where):
    with pytest.raises(InvalidFilter) as raised:
        parse_filter(where)
    assert isinstance(raised.value, ValueError)


def test_the_limits_themselves_are_allowed():
    parse_filter({f"k{i}": 1 for i in range(8)})
    parse_filter({"pk": list(range(100))})
    parse_filter({"x" * 255: 1})


# -- where on a connection ---------------------------------------------------------


def order(pk: Any, **fields: Any) -> Event:
    return Event("shop::Order::updated", {"model": "shop.order", "pk": pk, "fields": fields})


async def sent(*events: Event) -> list[Event]:
    for event in events:
        await adispatch(event)
    await hub_settled()
    return list(events)


async def test_where_lets_only_matching_live_events_through(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::Order::.*", where={"pk": 42})
    other, mine = await sent(order(41), order(42))
    frame = await expect_event(ws, "shop::Order::updated", ["a"])
    assert frame["event"]["id"] == mine.id  # the other one, sent first, never came
    # A later matching event is the next frame: nothing else is on its way.
    (again,) = await sent(order(42))
    assert (await receive(ws))["event"]["id"] == again.id
    assert await ws.receive_nothing()
    assert other.id not in {mine.id, again.id}


async def test_where_any_of_and_nested_paths(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*", where={"fields.status": ["paid", "sent"], "pk": [1, 2]})
    events = await sent(
        order(1, status="new"),
        order(1, status="paid"),
        order(3, status="paid"),
        order(2, status="sent"),
        order(True, status="paid"),
        order(2.0, status="paid"),
    )
    wanted = [events[1].id, events[3].id, events[5].id]
    got = [(await receive(ws))["event"]["id"] for _ in wanted]
    assert got == wanted
    assert await ws.receive_nothing()


async def test_subscriptions_with_and_without_where_on_one_connection(streams):
    ws = await streams.open()
    await subscribe(ws, "all", "shop::.*")
    await subscribe(ws, "one", "shop::.*", where={"pk": 42})
    first, second = await sent(order(41), order(42))
    assert (await expect_event(ws, "shop::Order::updated", ["all"]))["event"]["id"] == first.id
    frame = await expect_event(ws, "shop::Order::updated", ["all", "one"])
    assert frame["event"]["id"] == second.id


async def test_where_applies_to_the_replay_with_since(streams):
    (before,) = await sent(order(1))
    replayed = await sent(order(42, n=1), order(7), order(42, n=2), order(8))
    ws = await streams.open()
    await ws.send_json_to(
        {
            "type": "subscribe",
            "id": "a",
            "pattern": "shop::.*",
            "since": before.id,
            "where": {"pk": 42},
        }
    )
    subscribed = await receive(ws)
    assert subscribed["type"] == "subscribed"
    assert subscribed["last"] == replayed[-1].id
    assert (await receive(ws))["event"]["id"] == replayed[0].id
    assert (await receive(ws))["event"]["id"] == replayed[2].id
    # Then live events, filtered the same way.
    _, live = await sent(order(9), order(42, n=3))
    assert (await receive(ws))["event"]["id"] == live.id
    assert await ws.receive_nothing()


@pytest.mark.parametrize("where", BAD_WHERE)
async def test_a_bad_where_is_bad_request_and_changes_nothing(streams, where):
    ws = await streams.open()
    await subscribe(ws, "kept", "shop::.*")
    await ws.send_json_to({"type": "subscribe", "id": "new", "pattern": "shop::.*", "where": where})
    error = await expect_error(ws, "bad_request", "new")
    assert "where" in error["message"]
    await assert_open(ws)
    # The id is still free, and the subscription that was there still hears.
    await subscribe(ws, "new", "billing::.*")
    (event,) = await sent(order(5))
    assert (await expect_event(ws, "shop::Order::updated", ["kept"]))["event"]["id"] == event.id


async def test_an_empty_or_null_where_is_no_filter(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*", where={})
    await subscribe(ws, "b", "shop::.*", where=None)
    (event,) = await sent(order(5))
    assert (await expect_event(ws, "shop::Order::updated", ["a", "b"]))["event"]["id"] == event.id


async def test_equal_filters_get_the_same_frame_text(streams):
    first = await streams.open()
    second = await streams.open()
    third = await streams.open()
    await subscribe(first, "s", "shop::.*", where={"pk": [42, 43]})
    await subscribe(second, "s", "shop::.*", where={"pk": [43.0, 42]})
    await subscribe(third, "s", "shop::.*", where={"pk": 43})
    event = order(42)
    await sent(event)
    frames = [await first.receive_from(TIMEOUT), await second.receive_from(TIMEOUT)]
    assert frames[0] == frames[1]
    (marker,) = await sent(order(43))
    assert (await receive(third))["event"]["id"] == marker.id  # not the first event
    assert list(event.__dict__["_frames"]) == [("s",)]  # the frame text was made once


def test_connections_with_equal_filters_share_one_verdict_per_event():
    pattern = compile_client_pattern("shop::.*")
    tables = []
    for where in ({"pk": [42, 43]}, {"pk": [43.0, 42]}, {"pk": 43}, {"pk": [42, 43]}):
        subscriptions = Subscriptions()
        subscriptions.add("s", pattern, parse_filter(where))
        tables.append(subscriptions)
    event = order(42)
    texts = [subscriptions.frame(event) for subscriptions in tables]
    assert texts[0] is not None and texts[0] is texts[1] is texts[3]
    assert texts[2] is None
    # One verdict per distinct (id, pattern, filter): two for four connections.
    assert len(event.__dict__["_single"]) == 2


# -- the subscribe policy's filter ----------------------------------------------------


def owner_only(scope: dict[str, Any], namespace: str, pattern: str) -> Any:
    user = scope.get("user")
    if user is None:
        return False
    return {"fields.owner": user["id"]}


async def aowner_only(scope: dict[str, Any], namespace: str, pattern: str) -> Any:
    return owner_only(scope, namespace, pattern)


def malformed_filter(scope: dict[str, Any], namespace: str, pattern: str) -> Any:
    return {"fields.owner": {"in": [1, 2]}}


def open_with_empty_filter(scope: dict[str, Any], namespace: str, pattern: str) -> Any:
    return {}


@pytest.mark.parametrize("policy", ["owner_only", "aowner_only"])
async def test_a_policy_filter_is_applied_and_cannot_be_widened(configure, streams, policy):
    configure(SUBSCRIBE_POLICY=f"{HERE}.{policy}")
    ws = await streams.open(user=ALICE)
    await subscribe(ws, "mine", "shop::.*")
    await subscribe(ws, "wider", "shop::.*", where={"fields.owner": [7, 8]})
    await subscribe(ws, "theirs", "shop::.*", where={"fields.owner": 8})
    await subscribe(ws, "narrower", "shop::.*", where={"pk": 2})
    events = await sent(order(1, owner=8), order(1, owner=7), order(2, owner=8), order(2, owner=7))
    frame = await expect_event(ws, "shop::Order::updated", ["mine", "wider"])
    assert frame["event"]["id"] == events[1].id
    frame = await expect_event(ws, "shop::Order::updated", ["mine", "wider", "narrower"])
    assert frame["event"]["id"] == events[3].id
    assert await ws.receive_nothing()
    # With no user, the same policy refuses.
    anonymous = await streams.open()
    await anonymous.send_json_to({"type": "subscribe", "id": "a", "pattern": "shop::.*"})
    await expect_error(anonymous, "forbidden", "a")


async def test_a_policy_filter_applies_to_the_replay(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.owner_only")
    (before,) = await sent(order(1, owner=7))
    events = await sent(order(2, owner=8), order(3, owner=7))
    ws = await streams.open(user=ALICE)
    await ws.send_json_to(
        {"type": "subscribe", "id": "a", "pattern": "shop::.*", "since": before.id}
    )
    assert (await receive(ws))["type"] == "subscribed"
    assert (await receive(ws))["event"]["id"] == events[1].id
    (live,) = await sent(order(4, owner=7))
    assert (await receive(ws))["event"]["id"] == live.id


async def test_a_malformed_policy_filter_is_a_refusal(configure, streams, caplog):
    configure(SUBSCRIBE_POLICY=f"{HERE}.malformed_filter")
    ws = await streams.open(user=ALICE)
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": "shop::.*"})
    await expect_error(ws, "forbidden", "a")
    assert "policy raised" in caplog.text


async def test_an_empty_policy_filter_allows_everything(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.open_with_empty_filter")
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    (event,) = await sent(order(1))
    assert (await expect_event(ws, "shop::Order::updated", ["a"]))["event"]["id"] == event.id


# -- subscribed.last and latest_event_id ---------------------------------------------


async def test_subscribed_last_is_the_newest_recorded_event(streams):
    *_, newest = await sent(order(1), Event("shop::Other::made", {}))
    await sent(Event("billing::invoice::paid", {}))  # another namespace
    assert await alatest_event_id("shop") == newest.id
    assert await asyncio.to_thread(latest_event_id, "shop") == newest.id
    ws = await streams.open()
    subscribed = await subscribe(ws, "a", "shop::Order::.*")
    assert subscribed["last"] == newest.id
    assert await alatest_event_id("nothing-here") is None


async def test_latest_event_id_refuses_to_block_an_event_loop():
    with pytest.raises(RuntimeError, match="alatest_event_id"):
        latest_event_id("shop")


async def test_with_no_history_last_is_null(configure, streams):
    configure(HISTORY_SIZE=0)
    await sent(order(1))
    ws = await streams.open()
    assert (await subscribe(ws, "a", "shop::.*"))["last"] is None
    assert await alatest_event_id("shop") is None


async def test_nothing_between_latest_event_id_and_subscribe_is_lost(streams):
    """The snapshot pattern: render with latest_event_id, subscribe with since set to it."""
    await sent(order(1))
    rendered = await alatest_event_id("shop")
    assert rendered is not None
    between = await sent(order(42, n=1), order(43), order(42, n=2))
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*", since=rendered, where={"pk": 42})
    assert (await receive(ws))["event"]["id"] == between[0].id
    assert (await receive(ws))["event"]["id"] == between[2].id
    assert await ws.receive_nothing()


@pytest.fixture
async def on_redis(settings: Any, redis_url: str, redis_prefix: str) -> AsyncIterator[None]:
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": redis_prefix},
        }
    }
    await get_hub().stop()
    yield
    await get_hub().stop()


@pytest.mark.redis
async def test_last_and_latest_event_id_on_redis(on_redis, streams):
    assert await alatest_event_id("shop") is None
    # The connection binds the hub to this loop, as an ASGI server's would be.
    ws = await streams.open()
    first = dispatch(order(1))
    newest = dispatch(order(2))
    await hub_settled()
    found = None
    for _ in range(200):
        found = await alatest_event_id("shop")
        if found == newest.id:
            break
        await asyncio.sleep(0.01)
    assert found == newest.id != first.id
    assert await asyncio.to_thread(latest_event_id, "shop") == newest.id
    assert (await subscribe(ws, "a", "shop::.*"))["last"] == newest.id
    replay = await streams.open()
    await subscribe(replay, "a", "shop::.*", since=first.id, where={"pk": 2})
    assert (await receive(replay))["event"]["id"] == newest.id


async def test_reads_of_the_newest_id_at_the_same_time_share_one():
    class Counting(MemoryHistory):
        reads = 0

        async def latest(self, namespace: str) -> str | None:
            self.reads += 1
            await asyncio.sleep(0.01)  # a round trip, during which others ask
            return await super().latest(namespace)

    history = Counting(10)
    await history.append("shop", [{"id": "A"}])
    assert await asyncio.gather(*(history.newest("shop") for _ in range(20))) == ["A"] * 20
    assert history.reads == 1
    await history.append("shop", [{"id": "B"}])
    assert await history.newest("shop") == "B"
    assert history.reads == 2
