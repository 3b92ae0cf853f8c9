"""Tests for presence (join, leave, presence, presence_diff, left) and for "to others".

Driven with ``WebsocketCommunicator`` over the in-memory channel layer of
``tests.settings`` (PROTOCOL.md sections 4, 5 and 6b). Presence across
processes, on Redis, is in ``test_e2e.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.http import HttpResponse
from django.test import RequestFactory

from channels_events import (
    Event,
    InvalidConnectionId,
    ToOthersMiddleware,
    adispatch,
    apresence,
    connect,
    disconnect,
    dispatch,
    presence,
    to_others,
)
from channels_events._hub import get_hub
from channels_events.consumers import EventStreamConsumer

TIMEOUT = 2.0
HERE = __name__
TOPIC = "shop::dashboard"


# -- policies named by dotted path in the settings ------------------------------


def allow_all(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return True


def who(scope: dict[str, Any]) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode())
    return query.get("member", [None])[0]


def member_from_query(scope: dict[str, Any], topic: str) -> dict[str, Any] | None:
    """Admit a connection opened with ``?member=<id>`` to topics of namespace shop."""
    member = who(scope)
    if member is None or not topic.startswith("shop::"):
        return None
    return {"id": member, "info": {"name": member.title()}}


async def async_member(scope: dict[str, Any], topic: str) -> dict[str, Any] | None:
    await asyncio.sleep(0)
    return member_from_query(scope, topic)


def broken_member(scope: dict[str, Any], topic: str) -> Any:
    return {"id": 42}


def raising_member(scope: dict[str, Any], topic: str) -> Any:
    raise RuntimeError("the policy broke")


# -- helpers --------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


class Connections:
    """Open event-stream connections as a member; close them all when the test ends."""

    def __init__(self) -> None:
        self.opened: list[WebsocketCommunicator] = []
        self.ids: dict[WebsocketCommunicator, str] = {}

    async def open(self, member: str | None = None) -> WebsocketCommunicator:
        path = "/ws/events/" + (f"?member={member}" if member else "")
        communicator = WebsocketCommunicator(EventStreamConsumer.as_asgi(), path)
        self.opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        welcome = await communicator.receive_json_from(timeout=TIMEOUT)
        assert welcome["type"] == "welcome"
        self.ids[communicator] = welcome["connection"]
        return communicator

    async def close(self, communicator: WebsocketCommunicator) -> None:
        future = communicator.future
        if future.done():
            if not future.cancelled():
                future.exception()
            return
        await communicator.disconnect(timeout=TIMEOUT)

    async def close_all(self) -> None:
        for communicator in self.opened:
            await self.close(communicator)
        hub = get_hub()
        await wait_until(lambda: not hub.queued)
        # Every connection has left: nobody stays present for the next test.
        await wait_until(lambda: not hub.presence._topics)


@pytest.fixture
def configure(settings: Any) -> Callable[..., None]:
    def apply(**values: Any) -> None:
        settings.CHANNELS_EVENTS = {
            "SUBSCRIBE_POLICY": f"{HERE}.allow_all",
            "PRESENCE_POLICY": f"{HERE}.member_from_query",
            **values,
        }

    apply()
    return apply


@pytest.fixture
async def connections(configure: Callable[..., None]) -> Any:
    opened = Connections()
    yield opened
    await opened.close_all()


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def join(
    communicator: WebsocketCommunicator, join_id: str, topic: str = TOPIC
) -> dict[str, Any]:
    await communicator.send_json_to({"type": "join", "id": join_id, "topic": topic})
    frame = await receive(communicator)
    assert frame["type"] == "presence", frame
    assert frame["id"] == join_id
    assert frame["topic"] == topic
    return frame


async def expect_error(communicator: WebsocketCommunicator, code: str, sid: str | None) -> None:
    frame = await receive(communicator)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert frame["message"]
    assert frame.get("id") == sid


async def expect_diff(
    communicator: WebsocketCommunicator, join_id: str, joins: list[str], leaves: list[str]
) -> None:
    frame = await receive(communicator)
    assert frame["type"] == "presence_diff", frame
    assert frame["id"] == join_id
    assert [m["id"] for m in frame["joins"]] == joins, frame
    assert [m["id"] for m in frame["leaves"]] == leaves, frame


def ids(frame: dict[str, Any]) -> list[str]:
    return sorted(member["id"] for member in frame["members"])


# -- join and leave -------------------------------------------------------------


async def test_join_is_forbidden_without_a_presence_policy(configure, connections):
    configure(PRESENCE_POLICY=None)
    ws = await connections.open("alice")
    await ws.send_json_to({"type": "join", "id": "p", "topic": TOPIC})
    await expect_error(ws, "forbidden", "p")


async def test_join_answers_presence_with_the_member_itself(connections):
    ws = await connections.open("alice")
    frame = await join(ws, "p")
    assert frame["members"] == [{"id": "alice", "info": {"name": "Alice"}}]


async def test_an_async_policy_admits_too(configure, connections):
    configure(PRESENCE_POLICY=f"{HERE}.async_member")
    ws = await connections.open("alice")
    assert ids(await join(ws, "p")) == ["alice"]


@pytest.mark.parametrize("policy", ["broken_member", "raising_member"])
async def test_a_policy_that_answers_wrongly_or_raises_refuses(configure, connections, policy):
    configure(PRESENCE_POLICY=f"{HERE}.{policy}")
    ws = await connections.open("alice")
    await ws.send_json_to({"type": "join", "id": "p", "topic": TOPIC})
    await expect_error(ws, "forbidden", "p")


async def test_the_policy_refusing_a_connection_is_forbidden(connections):
    anonymous = await connections.open()
    await anonymous.send_json_to({"type": "join", "id": "p", "topic": TOPIC})
    await expect_error(anonymous, "forbidden", "p")
    alice = await connections.open("alice")
    await alice.send_json_to({"type": "join", "id": "p", "topic": "billing::room"})
    await expect_error(alice, "forbidden", "p")


async def test_others_arriving_and_leaving_come_as_diffs(connections):
    alice = await connections.open("alice")
    await join(alice, "p")
    bob = await connections.open("bob")
    assert ids(await join(bob, "q")) == ["alice", "bob"]
    frame = await receive(alice)
    assert frame == {
        "type": "presence_diff",
        "id": "p",
        "joins": [{"id": "bob", "info": {"name": "Bob"}}],
        "leaves": [],
    }
    await bob.send_json_to({"type": "leave", "id": "q"})
    assert await receive(bob) == {"type": "left", "id": "q"}
    await expect_diff(alice, "p", [], ["bob"])


async def test_a_member_with_two_connections_counts_once(connections):
    alice = await connections.open("alice")
    await join(alice, "p")
    first = await connections.open("bob")
    await join(first, "q")
    await expect_diff(alice, "p", ["bob"], [])
    second = await connections.open("bob")
    assert ids(await join(second, "q")) == ["alice", "bob"]
    # Bob's first connection leaving: Bob is still there, nobody hears of it.
    await first.send_json_to({"type": "leave", "id": "q"})
    assert await receive(first) == {"type": "left", "id": "q"}
    carol = await connections.open("carol")
    await join(carol, "r")
    # Positive control: the next diff Alice gets is Carol's arrival.
    await expect_diff(alice, "p", ["carol"], [])
    await expect_diff(second, "q", ["carol"], [])
    await second.send_json_to({"type": "leave", "id": "q"})
    assert await receive(second) == {"type": "left", "id": "q"}
    await expect_diff(alice, "p", [], ["bob"])


async def test_closing_the_connection_leaves_every_topic(connections):
    alice = await connections.open("alice")
    await join(alice, "p")
    await join(alice, "p2", "shop::other")
    bob = await connections.open("bob")
    await join(bob, "q")
    await expect_diff(alice, "p", ["bob"], [])
    await connections.close(alice)
    hub = get_hub()
    assert await wait_until(lambda: "shop::other" not in hub.presence._topics)
    assert [m["id"] for m in await apresence(TOPIC)] == ["bob"]
    assert await apresence("shop::other") == []


async def test_no_diff_after_left(connections):
    alice = await connections.open("alice")
    await join(alice, "p")
    await alice.send_json_to({"type": "leave", "id": "p"})
    assert await receive(alice) == {"type": "left", "id": "p"}
    bob = await connections.open("bob")
    await join(bob, "q")
    await alice.send_json_to({"type": "ping", "id": "marker"})
    assert await receive(alice) == {"type": "pong", "id": "marker"}
    assert await alice.receive_nothing()


async def test_a_join_id_can_be_used_again_after_leave(connections):
    alice = await connections.open("alice")
    await join(alice, "p")
    await alice.send_json_to({"type": "leave", "id": "p"})
    assert await receive(alice) == {"type": "left", "id": "p"}
    assert ids(await join(alice, "p")) == ["alice"]


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"type": "join", "topic": TOPIC},
        {"type": "join", "id": "", "topic": TOPIC},
        {"type": "join", "id": "x" * 65, "topic": TOPIC},
        {"type": "join", "id": 7, "topic": TOPIC},
        {"type": "join", "id": "p"},
        {"type": "join", "id": "p", "topic": 5},
        {"type": "join", "id": "p", "topic": "shop dashboard"},
        {"type": "join", "id": "p", "topic": "shop::" + "a" * 250},
        {"type": "join", "id": "p", "topic": "shop::dashboard::presence::joined"},
        {"type": "leave"},
        {"type": "leave", "id": 3},
    ],
)
async def test_malformed_join_or_leave_is_bad_request(connections, message):
    ws = await connections.open("alice")
    await ws.send_json_to(message)
    reply = message.get("id") if isinstance(message.get("id"), str) else None
    if reply is not None and not 0 < len(reply) <= 64:
        reply = None
    await expect_error(ws, "bad_request", reply)
    # Nothing changed: the connection still joins.
    assert ids(await join(ws, "ok")) == ["alice"]


async def test_a_join_id_in_use_is_duplicate_id(connections):
    ws = await connections.open("alice")
    await join(ws, "p")
    await ws.send_json_to({"type": "join", "id": "p", "topic": "shop::other"})
    await expect_error(ws, "duplicate_id", "p")


async def test_joins_and_subscriptions_share_one_id_space(connections):
    ws = await connections.open("alice")
    await ws.send_json_to({"type": "subscribe", "id": "s", "pattern": "shop::.*"})
    assert (await receive(ws))["type"] == "subscribed"
    await ws.send_json_to({"type": "join", "id": "s", "topic": TOPIC})
    await expect_error(ws, "duplicate_id", "s")
    await join(ws, "p")
    await ws.send_json_to({"type": "subscribe", "id": "p", "pattern": "shop::.*"})
    await expect_error(ws, "duplicate_id", "p")
    # Each kind is ended by its own message only.
    await ws.send_json_to({"type": "unsubscribe", "id": "p"})
    await expect_error(ws, "unknown_subscription", "p")
    await ws.send_json_to({"type": "leave", "id": "s"})
    await expect_error(ws, "unknown_subscription", "s")


async def test_leave_of_an_unknown_id_is_unknown_subscription(connections):
    ws = await connections.open("alice")
    await ws.send_json_to({"type": "leave", "id": "nope"})
    await expect_error(ws, "unknown_subscription", "nope")


async def test_joins_are_limited(configure, connections):
    configure(MAX_SUBSCRIPTIONS=2)
    ws = await connections.open("alice")
    await join(ws, "a", "shop::one")
    await join(ws, "b", "shop::two")
    await ws.send_json_to({"type": "join", "id": "c", "topic": "shop::three"})
    await expect_error(ws, "too_many_subscriptions", "c")


# -- the server's side ------------------------------------------------------------


async def test_apresence_and_presence_return_the_members(connections):
    assert await apresence(TOPIC) == []
    alice = await connections.open("alice")
    await join(alice, "p")
    bob = await connections.open("bob")
    await join(bob, "q")
    found = sorted(await apresence(TOPIC), key=lambda m: m["id"])
    assert found == [
        {"id": "alice", "info": {"name": "Alice"}},
        {"id": "bob", "info": {"name": "Bob"}},
    ]
    assert sorted(await sync_to_async(presence)(TOPIC), key=lambda m: m["id"]) == found


async def test_members_are_counted_per_namespace_by_the_metrics(configure, connections):
    from prometheus_client import REGISTRY

    def members(namespace: str = "shop") -> float | None:
        return REGISTRY.get_sample_value(
            "channels_events_presence_members", {"namespace": namespace}
        )

    configure(METRICS=True)
    left: list[Event] = []
    connect(left.append, r"shop::.*::presence::left")
    try:
        alice = await connections.open("alice")
        await join(alice, "p")
        bob = await connections.open("bob")
        await join(bob, "q")
        await join(alice, "p2", "shop::other")
        # Members of every topic of the namespace: Alice twice, Bob once.
        assert await wait_until(lambda: members() == 3), members()
        await bob.send_json_to({"type": "leave", "id": "q"})
        assert await receive(bob) == {"type": "left", "id": "q"}
        assert await wait_until(lambda: members() == 2), members()
        await connections.close(alice)
        # Every departure recorded (Bob's, Alice's from both topics) before
        # the test ends: none is in flight when the settings change back.
        assert await wait_until(lambda: len(left) == 3), left
        assert members() == 0
    finally:
        disconnect(left.append)


def test_presence_refuses_a_bad_topic_and_an_event_loop():
    with pytest.raises(ValueError):
        presence("not a topic")

    async def on_a_loop() -> None:
        presence(TOPIC)

    with pytest.raises(RuntimeError, match="apresence"):
        asyncio.run(on_a_loop())


@pytest.fixture
def heard(connections: Connections) -> Any:
    """Yield the presence events of TOPIC a listener hears.

    It is disconnected before the connections close, whose teardown then
    waits for the hub to take the change in.
    """
    seen: list[Event] = []
    connect(seen.append, r"shop::dashboard::presence::.*")
    yield seen
    disconnect(seen.append)


async def test_joins_and_leaves_are_dispatched_as_events(connections, heard):
    alice = await connections.open("alice")
    await join(alice, "p")
    second = await connections.open("alice")
    await join(second, "p")
    await connections.close(alice)
    await connections.close(second)
    assert await wait_until(lambda: len(heard) == 2)
    member = {"id": "alice", "info": {"name": "Alice"}}
    assert [(e.name, e.payload) for e in heard] == [
        ("shop::dashboard::presence::joined", {"topic": TOPIC, "member": member}),
        ("shop::dashboard::presence::left", {"topic": TOPIC, "member": member}),
    ]


async def test_presence_events_never_reach_a_browser_subscription(connections):
    watcher = await connections.open()
    await watcher.send_json_to({"type": "subscribe", "id": "all", "pattern": "shop::.*"})
    assert (await receive(watcher))["type"] == "subscribed"
    alice = await connections.open("alice")
    await join(alice, "p")
    # Positive control: the next frame the watcher gets is this event.
    await adispatch("shop::marker")
    frame = await receive(watcher)
    assert frame["event"]["name"] == "shop::marker"
    assert await watcher.receive_nothing()


# -- to others --------------------------------------------------------------------


async def subscribed(connections: Connections) -> WebsocketCommunicator:
    ws = await connections.open()
    await ws.send_json_to({"type": "subscribe", "id": "s", "pattern": "shop::.*"})
    assert (await receive(ws))["type"] == "subscribed"
    return ws


async def test_to_others_skips_that_connection_only(connections):
    me = await subscribed(connections)
    other = await subscribed(connections)
    with to_others(connections.ids[me]):
        await adispatch("shop::changed", {"n": 1})
    frame = await receive(other)
    assert frame["event"]["name"] == "shop::changed"
    assert "skip" not in frame["event"] and connections.ids[me] not in str(frame)
    # Positive control: the next event, outside the block, reaches ``me`` first.
    dispatch("shop::after")
    assert (await receive(me))["event"]["name"] == "shop::after"
    assert (await receive(other))["event"]["name"] == "shop::after"


def test_to_others_refuses_a_malformed_id():
    with pytest.raises(InvalidConnectionId, match="'no spaces'"), to_others("no spaces"):
        pass


def view(request: Any) -> HttpResponse:
    dispatch("shop::saved", {"by": "view"})
    return HttpResponse("ok")


async def async_view(request: Any) -> HttpResponse:
    await adispatch("shop::saved", {"by": "async view"})
    return HttpResponse("ok")


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_the_middleware_skips_the_connection_the_header_names(connections, asynchronous):
    me = await subscribed(connections)
    other = await subscribed(connections)
    factory = RequestFactory()
    request = factory.post("/", headers={"X-Channels-Events-Connection": connections.ids[me]})
    if asynchronous:
        await ToOthersMiddleware(async_view)(request)
    else:
        await sync_to_async(ToOthersMiddleware(view))(request)
    assert (await receive(other))["event"]["name"] == "shop::saved"
    await adispatch("shop::after")
    assert (await receive(me))["event"]["name"] == "shop::after"


@pytest.mark.parametrize("value", ["", "bad value", "x" * 65, "é"])
async def test_the_middleware_ignores_a_malformed_header(connections, value):
    me = await subscribed(connections)
    request = RequestFactory().post("/", headers={"X-Channels-Events-Connection": value})
    response = await sync_to_async(ToOthersMiddleware(view))(request)
    assert response.status_code == 200
    assert (await receive(me))["event"]["name"] == "shop::saved"


# -- the Redis store ----------------------------------------------------------------


@pytest.mark.redis
async def test_redis_store_counts_processes_and_sweeps_a_silent_one(
    settings, redis_url, redis_prefix
):
    from channels_events._presence import Change, RedisStore

    settings.CHANNELS_EVENTS = {"PRESENCE_TIMEOUT": 0.4}
    store = RedisStore({"address": redis_url}, f"{redis_prefix}:presence")
    carol = {"id": "carol", "info": {"name": "Carol"}}
    bob = {"id": "bob", "info": None}
    try:
        # Bob on both processes, Carol on b only: one pipelined call each.
        assert await store.apply("a", [Change(True, TOPIC, bob)]) == [True]
        assert await store.apply("b", [Change(True, TOPIC, bob), Change(True, TOPIC, carol)]) == [
            False,
            True,
        ]
        assert sorted(m["id"] for m in await store.members(TOPIC)) == ["bob", "carol"]
        # b falls silent; a keeps beating. Past 3/4 of the timeout, a's next
        # heartbeat takes b's members out: Carol leaves, Bob stays (a has him).
        deadline = time.monotonic() + TIMEOUT
        left: list[Any] = []
        while not left and time.monotonic() < deadline:
            _, left = await store.heartbeat("a", 0.4)
            await asyncio.sleep(0.05)
        assert left == [(TOPIC, carol)]
        assert [m["id"] for m in await store.members(TOPIC)] == ["bob"]
        # b comes back: its heartbeat says it was given up, so it joins again.
        revived, _ = await store.heartbeat("b", 0.4)
        assert revived
        assert await store.apply("a", [Change(False, TOPIC, bob, last=True)]) == [True]
        assert await store.members(TOPIC) == []
    finally:
        await store.close()
