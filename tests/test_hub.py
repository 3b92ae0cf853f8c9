"""Tests of the hub: the channel-layer messages it sends and how events cross processes.

The first half runs in this process, with hubs of their own (never the
process-wide one) on an ``InMemoryChannelLayer``, or on a ``RedisChannelLayer``
for group expiry. The second half starts separate OS processes
(``tests/hubproc.py``) that talk through a real Redis server, once per
channels_redis layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from channels_events import Dispatcher, Event, InvalidPayload
from channels_events._hub import BATCH_TYPE, EVENT_TYPE, Hub
from tests.hubproc import ORDER_PAID, HubProcess, Record, hub_env

ALIAS = "hubtest"
LAYERS = ["core", "pubsub"]
# Generous, but bounded: a child needs about a second to start Django.
READY = 30.0
DONE = 60.0


# --------------------------------------------------------------------------- in one process


@pytest.fixture
def memory_layer(settings: Any) -> Any:
    """Return a fresh InMemoryChannelLayer under its own alias."""
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        ALIAS: {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    return get_channel_layer(ALIAS)


@pytest.fixture
async def make_hub() -> AsyncIterator[Callable[..., Hub]]:
    """Build hubs with their own dispatchers (never the process's hub); stop them afterwards."""
    hubs: list[Hub] = []

    def make(alias: str = ALIAS) -> Hub:
        dispatcher = Dispatcher()
        hub = Hub(dispatcher=dispatcher, alias=alias)
        dispatcher.add_publisher(hub.publish)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        await hub.stop()


async def probe(layer: Any, group: str = "events.shop") -> str:
    """Return a new channel that is a member of ``group``."""
    channel: str = await layer.new_channel()
    await layer.group_add(group, channel)
    return channel


async def eventually(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.01)


async def joined(hub: Hub, group: str = "events.shop") -> None:
    """Wait until ``hub`` is a member of ``group``."""
    await eventually(lambda: group in hub.joined_groups, f"the hub joining {group!r}")


async def nothing_more(layer: Any, channel: str, wait: float = 0.2) -> None:
    """Assert that no further message arrives on ``channel`` within ``wait`` seconds."""
    with pytest.raises(asyncio.TimeoutError):
        extra = await asyncio.wait_for(layer.receive(channel), wait)
        pytest.fail(f"Unexpected extra message {extra!r}")


class OrderShipped(Event):
    name = "shop::parcel::shipped"
    order: int
    carrier: str = "post"


async def test_single_event_is_sent_as_one_event_message(make_hub: Any, memory_layer: Any) -> None:
    hub = make_hub()
    channel = await probe(memory_layer)
    await hub.attach(receive=False)

    event = hub.dispatcher.dispatch("shop::order::paid", {"order": 1, "amount": "9.90"})
    message = await asyncio.wait_for(memory_layer.receive(channel), 5)

    assert message == {
        "type": EVENT_TYPE,
        "event": event.to_dict(),
        "origin": hub.origin,
        "seq": 0,
    }
    assert message["type"] == "channels_events.event"
    assert set(message["event"]) == {"id", "name", "namespace", "payload", "timestamp"}
    assert message["event"]["namespace"] == "shop"
    await nothing_more(memory_layer, channel)


async def test_a_new_channel_layers_setting_reaches_a_stopped_hub(
    make_hub: Any, memory_layer: Any, settings: Any
) -> None:
    # Tests point CHANNEL_LAYERS elsewhere: stopping the hub is enough for it
    # to publish on the new layer, whether CHANNELS_EVENTS changed or not.
    hub = make_hub()
    await hub.attach(receive=False)
    assert hub.layer is memory_layer
    await hub.stop()
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        ALIAS: {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    fresh = get_channel_layer(ALIAS)
    assert fresh is not memory_layer
    channel = await probe(fresh)
    await hub.attach(receive=False)
    assert hub.layer is fresh
    event = hub.dispatcher.dispatch("shop::order::paid", {"order": 2})
    message = await asyncio.wait_for(fresh.receive(channel), 5)
    assert message["event"]["id"] == event.id


@pytest.mark.redis
async def test_stopping_a_hub_on_its_own_thread_ends_the_thread_and_its_groups(
    redis_layer: Any, redis_url: str, redis_prefix: str
) -> None:
    dispatcher = Dispatcher()
    hub = Hub(dispatcher=dispatcher, alias=REDIS_ALIAS)
    dispatcher.add_publisher(hub.publish)
    dispatcher.connect(lambda event: None, r"shop::.*")
    client = aioredis.Redis.from_url(redis_url)
    group_key = f"{redis_prefix}:group:events.shop"
    try:
        hub.start_thread(receive=True)
        thread = hub.runner.thread
        assert thread is not None
        await eventually(lambda: "events.shop" in hub.joined_groups, "the hub joining events.shop")
        assert await client.zcard(group_key) == 1

        await hub.stop()
        assert not thread.is_alive()
        assert await client.zcard(group_key) == 0

        # Publishing starts the hub again, on a new thread.
        channel = await probe(redis_layer)
        event = dispatcher.dispatch("shop::order::paid", {"order": 3})
        message = await asyncio.wait_for(redis_layer.receive(channel), 5)
        assert message["event"]["id"] == event.id
        assert hub.runner.thread is not None and hub.runner.thread is not thread
    finally:
        await hub.stop()
        await client.aclose()


async def test_burst_is_coalesced_into_one_batch_message_in_order(
    make_hub: Any, memory_layer: Any
) -> None:
    hub = make_hub()
    channel = await probe(memory_layer)
    await hub.attach(receive=False)

    # No await in between: the sender task cannot run until all five are queued.
    events = [hub.dispatcher.dispatch("shop::tick", {"n": n}) for n in range(5)]
    message = await asyncio.wait_for(memory_layer.receive(channel), 5)

    assert message == {
        "type": BATCH_TYPE,
        "events": [event.to_dict() for event in events],
        "origin": hub.origin,
        "seq": 0,
    }
    assert message["type"] == "channels_events.events"
    await nothing_more(memory_layer, channel)


async def test_batches_respect_batch_size_and_namespace_runs(
    make_hub: Any, memory_layer: Any, settings: Any
) -> None:
    settings.CHANNELS_EVENTS = {"BATCH_SIZE": 3}
    hub = make_hub()
    shop = await probe(memory_layer, "events.shop")
    audit = await probe(memory_layer, "events.audit")
    await hub.attach(receive=False)

    dispatch = hub.dispatcher.dispatch
    first = [dispatch("shop::tick", {"n": n}) for n in range(7)]
    middle = dispatch("audit::login", {"user": 1})
    last = dispatch("shop::tick", {"n": 7})

    received = [await asyncio.wait_for(memory_layer.receive(shop), 5) for _ in range(4)]
    assert [m["type"] for m in received] == [BATCH_TYPE, BATCH_TYPE, EVENT_TYPE, EVENT_TYPE]
    # Numbered per namespace: a batch carries the number of its first event.
    assert [m["seq"] for m in received] == [0, 3, 6, 7]
    assert [e["payload"]["n"] for e in received[0]["events"] + received[1]["events"]] == list(
        range(6)
    )
    assert received[2]["event"] == first[6].to_dict()
    assert received[3]["event"] == last.to_dict()
    audit_message = await asyncio.wait_for(memory_layer.receive(audit), 5)
    assert audit_message == {
        "type": EVENT_TYPE,
        "event": middle.to_dict(),
        "origin": hub.origin,
        "seq": 0,
    }
    await nothing_more(memory_layer, shop)


class EventProbe(AsyncJsonWebsocketConsumer):
    """A plain Channels consumer in group ``events.shop``, as PROTOCOL.md describes."""

    groups = ["events.shop"]
    channel_layer_alias = ALIAS

    async def channels_events_event(self, message: dict[str, Any]) -> None:
        await self.send_json({"handler": "channels_events_event", "message": message})

    async def channels_events_events(self, message: dict[str, Any]) -> None:
        await self.send_json({"handler": "channels_events_events", "message": message})


async def test_a_channels_consumer_in_the_group_gets_both_forms(
    make_hub: Any, memory_layer: Any
) -> None:
    hub = make_hub()
    await hub.attach(receive=False)
    communicator = WebsocketCommunicator(EventProbe.as_asgi(), "/events/")
    connected, _ = await communicator.connect()
    assert connected
    try:
        one = hub.dispatcher.dispatch(OrderShipped(order=5))
        got = await communicator.receive_json_from(timeout=5)
        assert got == {
            "handler": "channels_events_event",
            "message": {
                "type": EVENT_TYPE,
                "event": one.to_dict(),
                "origin": hub.origin,
                "seq": 0,
            },
        }
        assert got["message"]["event"]["payload"] == {"order": 5, "carrier": "post"}

        many = [hub.dispatcher.dispatch("shop::tick", {"n": n}) for n in range(3)]
        got = await communicator.receive_json_from(timeout=5)
        assert got == {
            "handler": "channels_events_events",
            "message": {
                "type": BATCH_TYPE,
                "events": [event.to_dict() for event in many],
                "origin": hub.origin,
                "seq": 1,
            },
        }
    finally:
        await communicator.disconnect()


async def test_hub_ignores_its_own_echo_but_not_other_origins(
    make_hub: Any, memory_layer: Any
) -> None:
    hub = make_hub()
    seen: list[tuple[str, Any]] = []
    hub.dispatcher.connect(lambda event: seen.append((event.name, event.payload)), "shop::.*")
    channel = await probe(memory_layer)
    await hub.attach()
    await joined(hub)

    hub.dispatcher.dispatch("shop::mine", {"n": 1})
    assert seen == [("shop::mine", {"n": 1})]
    # The hub's own channel got the same message as the probe did.
    mine = await asyncio.wait_for(memory_layer.receive(channel), 5)
    assert mine["origin"] == hub.origin

    # A message from elsewhere queued behind the echo: once it is delivered,
    # the echo has been handled (ignored) too.
    foreign = Event("shop::theirs", {"n": 2}).to_dict()
    await memory_layer.group_send(
        "events.shop", {"type": EVENT_TYPE, "event": foreign, "origin": "elsewhere:1:abc"}
    )
    await eventually(lambda: len(seen) >= 2, "delivery of the foreign event")
    await asyncio.sleep(0.1)

    assert seen == [("shop::mine", {"n": 1}), ("shop::theirs", {"n": 2})]
    assert hub.received == 1


async def test_two_hubs_exchange_events_as_if_two_processes(
    make_hub: Any, memory_layer: Any
) -> None:
    sender, receiver = make_hub(), make_hub()
    at_sender: list[Event] = []
    at_receiver: list[Event] = []
    sender.dispatcher.connect(at_sender.append, "shop::.*")
    receiver.dispatcher.connect(at_receiver.append, "shop::.*")
    await sender.attach()
    await receiver.attach()
    await joined(sender)
    await joined(receiver)

    shipped = sender.dispatcher.dispatch(OrderShipped(order=9, carrier="van"))
    ticks = [sender.dispatcher.dispatch("shop::tick", {"n": n}) for n in range(4)]
    await eventually(lambda: len(at_receiver) >= 5, "delivery to the other hub")
    await asyncio.sleep(0.1)

    assert [e.id for e in at_receiver] == [e.id for e in [shipped, *ticks]]
    rebuilt = at_receiver[0]
    assert type(rebuilt) is OrderShipped
    assert (rebuilt.order, rebuilt.carrier) == (9, "van")  # type: ignore[attr-defined]
    assert rebuilt.instance is None
    assert [e.payload for e in at_receiver[1:]] == [{"n": n} for n in range(4)]
    assert at_sender == [shipped, *ticks]
    assert sender.received == 0
    assert receiver.received == 5


async def test_malformed_envelopes_are_skipped_and_logged(
    make_hub: Any, memory_layer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub()
    seen: list[Event] = []
    hub.dispatcher.connect(seen.append, "shop::.*")
    await hub.attach()
    await joined(hub)

    good = [Event("shop::tick", {"n": n}).to_dict() for n in range(2)]
    with caplog.at_level(logging.WARNING, logger="channels_events.hub"):
        await memory_layer.group_send(
            "events.shop",
            {"type": BATCH_TYPE, "events": [good[0], {"name": "nope"}, good[1]], "origin": "x"},
        )
        await memory_layer.group_send("events.shop", {"type": "something.else", "origin": "x"})
        await eventually(lambda: len(seen) >= 2, "delivery of the well-formed events")
        await eventually(
            lambda: "unknown shape" in caplog.text, "the warning about the unknown message"
        )

    assert [e.payload for e in seen] == [{"n": 0}, {"n": 1}]
    assert "malformed event envelope" in caplog.text


async def test_hub_publishes_again_after_stop_and_attach(make_hub: Any, memory_layer: Any) -> None:
    hub = make_hub()
    channel = await probe(memory_layer)
    await hub.attach(receive=False)
    first = hub.dispatcher.dispatch("shop::tick", {"n": 1})
    message = await asyncio.wait_for(memory_layer.receive(channel), 5)
    assert message["event"] == first.to_dict()

    # Stopped right after its send, as when a test's loop ends; then used again.
    await hub.stop()
    await hub.attach(receive=False)
    second = hub.dispatcher.dispatch("shop::tick", {"n": 2})
    message = await asyncio.wait_for(memory_layer.receive(channel), 5)
    assert message["event"] == second.to_dict()


class Unprintable:
    """A payload value that json_safe() cannot turn into text."""

    def __str__(self) -> str:
        raise ValueError("this value has no text form")


async def test_an_unserializable_payload_costs_only_its_own_event(
    make_hub: Any, memory_layer: Any
) -> None:
    hub = make_hub()
    channel = await probe(memory_layer)
    await hub.attach(receive=False)

    dispatch = hub.dispatcher.dispatch
    dispatch("shop::tick", {"n": 0})
    # Refused where it is dispatched (tests/test_wire.py): it never reaches the hub.
    with pytest.raises(InvalidPayload, match=r"payload\['n'\] is a Unprintable with no text form"):
        dispatch("shop::tick", {"n": Unprintable()})
    dispatch("shop::tick", {"n": 2})

    envelopes: list[dict[str, Any]] = []
    with contextlib.suppress(asyncio.TimeoutError):
        while len(envelopes) < 2:
            message = await asyncio.wait_for(memory_layer.receive(channel), 2)
            envelopes.extend(message["events"] if "events" in message else [message["event"]])
    assert [envelope["payload"]["n"] for envelope in envelopes] == [0, 2]


REDIS_ALIAS = "hubredis"
GROUP_EXPIRY = 2


@pytest.fixture
async def redis_layer(settings: Any, redis_url: str, redis_prefix: str) -> AsyncIterator[Any]:
    """Return a RedisChannelLayer whose group memberships expire after two seconds."""
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        REDIS_ALIAS: {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": redis_prefix, "group_expiry": GROUP_EXPIRY},
        },
    }
    layer = get_channel_layer(REDIS_ALIAS)
    yield layer
    await layer.close_pools()


async def stays_in_group(hub: Hub, layer: Any, churn: bool) -> list[Event]:
    """Keep ``hub`` running past the group expiry, then return what a foreign send reaches."""
    seen: list[Event] = []
    hub.dispatcher.connect(seen.append, "shop::.*")
    await hub.attach()
    await joined(hub)

    def on_order(event: Event) -> None:
        seen.append(event)

    loop = asyncio.get_running_loop()
    until = loop.time() + GROUP_EXPIRY * 1.75
    while loop.time() < until:
        if churn:
            # Short-lived listeners come and go; the set of groups does not change.
            hub.dispatcher.connect(on_order, "shop::order::.*")
            await asyncio.sleep(0.1)
            assert hub.dispatcher.disconnect(on_order, "shop::order::.*")
        await asyncio.sleep(0.1)
    envelope = Event("shop::late", {"n": 1}).to_dict()
    await layer.group_send(
        "events.shop", {"type": EVENT_TYPE, "event": envelope, "origin": "elsewhere:1:abc"}
    )
    with contextlib.suppress(AssertionError):
        await eventually(lambda: seen, "delivery of the late event", timeout=3)
    return seen


# The layer fixture comes first so that it is torn down after the hubs.
@pytest.mark.redis
async def test_hub_refreshes_group_membership_before_it_expires(
    redis_layer: Any, make_hub: Any
) -> None:
    seen = await stays_in_group(make_hub(REDIS_ALIAS), redis_layer, churn=False)
    assert [event.name for event in seen] == ["shop::late"]


@pytest.mark.redis
async def test_group_membership_is_refreshed_while_listeners_come_and_go(
    redis_layer: Any, make_hub: Any
) -> None:
    seen = await stays_in_group(make_hub(REDIS_ALIAS), redis_layer, churn=True)
    assert [event.name for event in seen] == ["shop::late"]


# --------------------------------------------------------------------------- across processes

Spawn = Callable[..., HubProcess]


@pytest.fixture(params=LAYERS)
def layer(request: pytest.FixtureRequest) -> str:
    """Name the channels_redis layer the processes use: ``core`` or ``pubsub``."""
    return str(request.param)


@pytest.fixture
def spawn(redis_url: str, redis_prefix: str, layer: str) -> Iterator[Spawn]:
    """Start ``tests.hubproc`` children on the test's Redis prefix; kill them all afterwards."""
    children: list[HubProcess] = []

    def start(name: str, role: str, *args: object, **env: str | float | None) -> HubProcess:
        env.setdefault("redis_url", redis_url)
        url = str(env.pop("redis_url"))
        child = HubProcess(
            name, role, [str(a) for a in args], hub_env(url, redis_prefix, layer, **env)
        )
        children.append(child)
        return child

    try:
        yield start
    finally:
        for child in children:
            child.kill()


def names(records: list[Record]) -> list[str]:
    return [record["name"] for record in records]


def finish(*children: HubProcess) -> None:
    """Wait for each child to exit, and check that it exited cleanly."""
    for child in children:
        code = child.wait_exit(DONE)
        assert code == 0, child.describe()


@pytest.mark.redis
def test_event_reaches_every_other_process_once_and_never_echoes(spawn: Spawn) -> None:
    listen = ("--pattern", "shop::.*", "--until", "shop::marker", "--linger", 1, "--timeout", DONE)
    b = spawn("B", "listen", *listen, "--declare")
    c = spawn("C", "listen", *listen)
    b.wait_for("ready", READY)
    c.wait_for("ready", READY)
    a = spawn(
        "A",
        "send",
        "--pattern",
        "shop::.*",
        "--declare",
        "--name",
        ORDER_PAID,
        "--payload",
        json.dumps({"order": 7, "amount": "12.50"}),
        "--marker",
        "shop::marker",
        "--wait-stdin",
        "--linger",
        1,
    )
    a.wait_for("ready", READY)
    b.wait_for("done", DONE)
    c.wait_for("done", DONE)
    # B and C have everything: A's echo, if it came, has arrived too by now.
    a.tell("finish")
    a.wait_for("done", DONE)
    finish(a, b, c)

    sent = a.events
    assert names(sent) == [ORDER_PAID, "shop::marker"], a.describe()
    assert all(record["main_thread"] for record in sent), "A delivered a remote copy"
    assert a.wait_for("done", 0)["hub_received"] == 0, a.describe()
    for child in (b, c):
        assert names(child.events) == [ORDER_PAID, "shop::marker"], child.describe()
        assert [r["id"] for r in child.events] == [r["id"] for r in sent]
        assert [r["timestamp"] for r in child.events] == [r["timestamp"] for r in sent]
        assert child.wait_for("done", 0)["hub_received"] == 2

    at_b, at_c = b.events[0], c.events[0]
    assert at_b["cls"].endswith("OrderPaid") and not at_b["base"], at_b
    assert at_b["fields"] == {"order": 7, "amount": "12.50"}
    assert at_b["instance_none"]
    # C never declared the subclass: it gets a plain Event with the same payload.
    assert at_c["cls"] == "Event" and at_c["base"], at_c
    assert at_c["payload"] == {"order": 7, "amount": "12.50"}
    assert at_c["instance_none"]


@pytest.mark.redis
@pytest.mark.parametrize("paused", [False, True], ids=["free", "paused"])
def test_burst_of_200_arrives_complete_and_in_order(
    spawn: Spawn,
    layer: str,
    paused: bool,
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    b = spawn(
        "B", "listen", "--pattern", "shop::.*", "--count", 200, "--linger", 0.5, "--timeout", DONE
    )
    b.wait_for("ready", READY)
    pause = ["--pause-hub"] if paused else []
    a = spawn(
        "A", "send", "--name", "shop::tick", "--count", 200, "--numbered", "--count-sends", *pause
    )
    # A exits right after dispatching: the hub's flush at exit publishes the burst.
    finish(a)
    b.wait_for("done", DONE)
    finish(b)

    assert [r["payload"]["n"] for r in b.events] == list(range(200)), b.describe()
    assert b.events[-1]["payload"]["last"]
    sends = a.wait_for("exit", 0)["sends"]
    mode = "paused" if paused else "free"
    record_testsuite_property(f"hub.burst.{layer}.{mode}.messages", sends["messages"])
    assert sends["events"] == 200, sends
    assert a.wait_for("exit", 0)["unsent"] == 0
    if paused:
        # All 200 were queued before the sender ran: two batches of BATCH_SIZE=100.
        assert (sends["messages"], sends["batch"]) == (2, 2), sends
    else:
        # Coalescing happened: some message carried more than one event.
        assert sends["batch"] >= 1 and sends["messages"] < 200, sends


@pytest.mark.redis
def test_model_event_is_published_only_after_commit(spawn: Spawn, tmp_path: Path) -> None:
    b = spawn(
        "B", "listen", "--pattern", "testapp::.*", "--until", "testapp::marker", "--linger", 0.5
    )
    b.wait_for("ready", READY)
    a = spawn(
        "A",
        "send",
        "--save",
        "commit",
        "--number",
        "A-17",
        "--hold",
        1.5,
        "--marker",
        "testapp::marker",
        db=tmp_path / "db.sqlite3",
    )
    finish(a)
    b.wait_for("done", DONE)
    finish(b)

    committing = a.wait_for("committing", 0)["at"]
    assert names(b.events) == ["testapp::Order::created", "testapp::marker"], b.describe()
    created = b.events[0]
    assert created["at"] >= committing, (created, committing)
    assert created["instance_none"]
    assert created["base"]
    payload = created["payload"]
    assert payload["pk"] == a.wait_for("saved", 0)["pk"], payload
    assert payload["fields"]["number"] == "A-17", payload


@pytest.mark.redis
def test_rolled_back_model_event_is_never_published(spawn: Spawn, tmp_path: Path) -> None:
    b = spawn(
        "B", "listen", "--pattern", "testapp::.*", "--until", "testapp::marker", "--linger", 0.5
    )
    b.wait_for("ready", READY)
    a = spawn(
        "A",
        "send",
        "--save",
        "rollback",
        "--hold",
        0.2,
        "--marker",
        "testapp::marker",
        "--marker-delay",
        2,
        db=tmp_path / "db.sqlite3",
    )
    finish(a)
    b.wait_for("done", DONE)
    finish(b)

    assert a.of_kind("rolled_back"), a.describe()
    assert names(b.events) == ["testapp::marker"], b.describe()


@pytest.mark.redis
def test_local_namespaces_never_leave_the_process(spawn: Spawn) -> None:
    b = spawn(
        "B",
        "listen",
        "--pattern",
        "audit::.*",
        "--pattern",
        "shop::.*",
        "--until",
        "shop::marker",
        "--linger",
        1,
    )
    ready = b.wait_for("ready", READY)
    assert ready["groups"] == ["events.audit", "events.shop"]
    a = spawn(
        "A",
        "send",
        "--pattern",
        "audit::.*",
        "--name",
        "audit::login",
        "--payload",
        json.dumps({"user": 3}),
        "--marker",
        "shop::marker",
        "--count-sends",
        local_namespaces="audit",
    )
    finish(a)
    b.wait_for("done", DONE)
    finish(b)

    assert names(b.events) == ["shop::marker"], b.describe()
    assert names(a.events) == ["audit::login"], a.describe()
    assert a.wait_for("exit", 0)["sends"]["groups"] == {"events.shop": 1}, a.describe()


@contextlib.contextmanager
def _silent_server() -> Iterator[socket.socket]:
    """Listen on a loopback port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    try:
        yield server
    finally:
        server.close()


@pytest.mark.redis
def test_publishing_never_waits_for_an_unreachable_layer(
    spawn: Spawn, layer: str, record_testsuite_property: Callable[[str, object], None]
) -> None:
    with _silent_server() as server:
        port = server.getsockname()[1]
        a = spawn(
            "A",
            "send",
            "--name",
            "shop::tick",
            "--count",
            100,
            "--numbered",
            "--count-sends",
            "--wait-stdin",
            redis_url=f"redis://127.0.0.1:{port}/0",
            flush_timeout=1,
        )
        # A layer that never answers: were dispatch() to wait for it, "sent"
        # would never come.
        sent = a.wait_for("sent", DONE)
        assert sent["count"] == 100
        record_testsuite_property(f"hub.unreachable.{layer}.dispatch_100_seconds", sent["elapsed"])
        # Positive control: the hub did turn to the layer, which is holding it.
        server.settimeout(DONE)
        connection, _ = server.accept()
        with connection:
            a.tell("finish")
            finish(a)

    exit_line = a.wait_for("exit", 0)
    assert exit_line["sends"]["messages"] == 0
    assert exit_line["unsent"] == 100, a.describe()
    assert not any("Traceback" in line for line in a.stderr), a.describe()


async def test_a_slow_listener_holds_up_neither_reading_nor_websockets(
    make_hub: Any, memory_layer: Any
) -> None:
    hub = make_hub()
    release = asyncio.Event()
    heard: list[str] = []

    async def slow(event: Event) -> None:
        heard.append(event.name)
        await release.wait()

    class Socket:
        def __init__(self) -> None:
            self.got: list[str] = []

        def namespaces(self) -> list[str]:
            return ["shop"]

        def deliver(self, events: list[Event]) -> None:
            self.got.extend(event.name for event in events)

    hub.dispatcher.connect(slow, r"shop::.*")
    socket = Socket()
    hub.add_subscriber(socket)
    await hub.attach()
    await joined(hub)
    for n in range(3):
        envelope = Event(f"shop::tick::{n}", {}).to_dict()
        await memory_layer.group_send(
            "events.shop", {"type": "channels_events.event", "event": envelope, "origin": "other"}
        )
    # The listener is stuck on the first event; the websocket has all three.
    await eventually(lambda: len(socket.got) == 3, "the subscriber getting every event")
    assert heard == ["shop::tick::0"]
    release.set()
    await eventually(lambda: len(heard) == 3, "the listener catching up, in order")
    assert heard == ["shop::tick::0", "shop::tick::1", "shop::tick::2"]


@pytest.mark.parametrize("turns", [0, 1, 2])
async def test_a_hub_loop_stops_when_cancelled_as_its_event_is_set(turns: int) -> None:
    # The sender's and receiver's loops wait with wait_set: asyncio.wait_for
    # on Python 3.11 returns the result of a wait that completed as the task
    # was cancelled, and such a loop then never stops (a hang at shut-down).
    from channels_events._loop import wait_set

    event = asyncio.Event()
    task = asyncio.create_task(wait_set(event, 60))
    await asyncio.sleep(0)
    event.set()
    for _ in range(turns):
        await asyncio.sleep(0)
    assert task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # And without a cancellation it says whether the event was set in time.
    assert await wait_set(event, 1) is True
    assert await wait_set(asyncio.Event(), 0.01) is False
