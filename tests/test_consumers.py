"""Tests for channels_events.consumers: the browser protocol and EventConsumerMixin.

The stream is driven with ``WebsocketCommunicator`` (PROTOCOL.md sections 4-5).
Events dispatched in the test process reach connections through the hub's
sender, over the in-memory channel layer of ``tests.settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import decimal
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import pytest
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.testing import WebsocketCommunicator

from channels_events import Event, adispatch, connect, disconnect, dispatch
from channels_events._hub import get_hub
from channels_events.consumers import EventConsumerMixin, EventStreamConsumer

TIMEOUT = 2.0
# Where the application has already failed, the communicator only reports it
# once its wait for output times out.
SHORT = 0.2
ID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
HERE = __name__


# -- policies named by dotted path in the settings ------------------------------


def allow_all(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return True


def allow_shop(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return namespace == "shop"


def emit_shop(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    return name.startswith("shop::")


# -- helpers --------------------------------------------------------------------


def with_user(app: Any, user: Any) -> Any:
    """Wrap an ASGI app so that its scope carries ``user``, as AuthMiddleware would."""

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> Any:
        return await app({**scope, "user": user}, receive, send)

    return application


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; return whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


async def hub_settled(timeout: float = TIMEOUT) -> None:
    """Wait until the hub has handed every queued event on."""
    hub = get_hub()
    await wait_until(lambda: not hub.queued, timeout)


async def finish(communicator: WebsocketCommunicator) -> None:
    """Disconnect a communicator, unless its application already ended."""
    future = communicator.future
    if future.done():
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it again
        return
    await communicator.disconnect(timeout=TIMEOUT)


class Streams:
    """Open event-stream connections; close them all when the test ends."""

    def __init__(self) -> None:
        self.opened: list[WebsocketCommunicator] = []

    async def open(self, *, user: Any = None) -> WebsocketCommunicator:
        app = EventStreamConsumer.as_asgi()
        if user is not None:
            app = with_user(app, user)
        communicator = WebsocketCommunicator(app, "/ws/events/")
        self.opened.append(communicator)
        connected, _ = await communicator.connect(timeout=TIMEOUT)
        assert connected
        welcome = await communicator.receive_json_from(timeout=TIMEOUT)
        assert welcome["type"] == "welcome"
        return communicator

    async def close(self) -> None:
        # However a connection ends, its consumer leaves the hub (see
        # EventStreamConsumer.__call__).
        for communicator in self.opened:
            await finish(communicator)
        await hub_settled()


@pytest.fixture
def configure(settings: Any) -> Callable[..., None]:
    """Set CHANNELS_EVENTS; subscribing is open to everything unless a test says otherwise."""

    def apply(**values: Any) -> None:
        settings.CHANNELS_EVENTS = {"SUBSCRIBE_POLICY": f"{HERE}.allow_all", **values}

    apply()
    return apply


@pytest.fixture
async def streams(configure: Callable[..., None]) -> Any:
    opened = Streams()
    yield opened
    await opened.close()


@pytest.fixture
def listened() -> Any:
    """Yield a list of events that a listener connected with ``connect`` records."""
    seen: list[Event] = []
    yield seen
    disconnect(seen.append)


async def receive(communicator: WebsocketCommunicator) -> dict[str, Any]:
    return await communicator.receive_json_from(timeout=TIMEOUT)


async def subscribe(
    communicator: WebsocketCommunicator, sid: str, pattern: str, **extra: Any
) -> dict[str, Any]:
    await communicator.send_json_to({"type": "subscribe", "id": sid, "pattern": pattern, **extra})
    frame = await receive(communicator)
    assert frame["type"] == "subscribed", frame
    assert frame["id"] == sid
    return frame


async def expect_error(
    communicator: WebsocketCommunicator, code: str, sid: str | None = None
) -> dict[str, Any]:
    frame = await receive(communicator)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"]
    if sid is None:
        assert "id" not in frame, frame
    else:
        assert frame["id"] == sid, frame
    return frame


async def assert_open(communicator: WebsocketCommunicator) -> None:
    """Check that the connection still answers."""
    await communicator.send_json_to({"type": "ping", "id": "alive"})
    assert await receive(communicator) == {"type": "pong", "id": "alive"}


async def expect_event(
    communicator: WebsocketCommunicator, name: str, subscriptions: list[str]
) -> dict[str, Any]:
    frame = await receive(communicator)
    assert frame["type"] == "event", frame
    assert frame["event"]["name"] == name, frame
    assert frame["subscriptions"] == subscriptions, frame
    return frame


async def nothing_more(ws: WebsocketCommunicator, marker: str, subscriptions: list[str]) -> None:
    """Check that nothing is on its way to ``ws``: a marker dispatched now is the next frame."""
    dispatch(marker)
    await expect_event(ws, marker, subscriptions)
    assert await ws.receive_nothing()


async def heard_only(listened: list[Event], marker: str) -> None:
    """Check that a listener heard nothing so far: a marker dispatched now is all it has."""
    await adispatch(marker)
    assert [event.name for event in listened] == [marker]


def assert_envelope(envelope: dict[str, Any], event: Event) -> None:
    assert envelope == {
        "id": event.id,
        "name": event.name,
        "namespace": event.namespace,
        "payload": event.payload,
        "timestamp": event.timestamp,
    }
    assert ID_RE.fullmatch(envelope["id"])
    assert datetime.datetime.fromisoformat(envelope["timestamp"]).utcoffset() is not None


def strict_json(text: str) -> Any:
    """Parse JSON as a browser's JSON.parse does: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


# -- welcome, subscribe, unsubscribe, ping --------------------------------------


async def test_welcome_is_the_first_frame(configure):
    first = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    second = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    try:
        for communicator in (first, second):
            connected, _ = await communicator.connect(timeout=TIMEOUT)
            assert connected
        welcomes = [await receive(first), await receive(second)]
        for welcome in welcomes:
            assert welcome.keys() == {"type", "protocol", "connection"}
            assert welcome["type"] == "welcome"
            assert welcome["protocol"] == 1
            assert isinstance(welcome["connection"], str) and welcome["connection"]
        assert welcomes[0]["connection"] != welcomes[1]["connection"]
    finally:
        await finish(first)
        await finish(second)


@pytest.mark.parametrize(
    ("pattern", "namespace"),
    [
        ("shop::Order::.*", "shop"),
        ("billing::invoice::paid", "billing"),
        (r"my-app\.v2::(created|deleted)", "my-app.v2"),
        ("shop", "shop"),
    ],
)
async def test_subscribe_answers_subscribed_with_the_namespace(streams, pattern, namespace):
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": pattern})
    subscribed = {"type": "subscribed", "id": "a", "namespace": namespace, "last": ANY}
    assert await receive(ws) == subscribed


async def test_unsubscribe_answers_unsubscribed_and_stops_delivery(streams):
    ws = await streams.open()
    await subscribe(ws, "orders", "shop::Order::.*")
    await subscribe(ws, "marker", "shop::marker")
    await ws.send_json_to({"type": "unsubscribe", "id": "orders"})
    assert await receive(ws) == {"type": "unsubscribed", "id": "orders"}
    dispatch("shop::Order::created", {"pk": 1})
    dispatch("shop::marker")
    await expect_event(ws, "shop::marker", ["marker"])
    assert await ws.receive_nothing()


async def test_unsubscribing_the_last_subscription_of_a_namespace(streams):
    ws = await streams.open()
    other = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    await subscribe(ws, "m", "billing::marker")
    await subscribe(other, "b", "shop::.*")
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    assert await receive(ws) == {"type": "unsubscribed", "id": "a"}
    dispatch("shop::Order::created")
    dispatch("billing::marker")
    await expect_event(other, "shop::Order::created", ["b"])
    await expect_event(ws, "billing::marker", ["m"])


async def test_a_subscription_id_can_be_reused_after_unsubscribe(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::Order::.*")
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    assert (await receive(ws))["type"] == "unsubscribed"
    await subscribe(ws, "a", "billing::.*")
    dispatch("shop::Order::created")
    dispatch("billing::invoice::paid")
    await expect_event(ws, "billing::invoice::paid", ["a"])


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        ({"type": "ping"}, {"type": "pong"}),
        ({"type": "ping", "id": "p1"}, {"type": "pong", "id": "p1"}),
    ],
)
async def test_ping_answers_pong_echoing_the_id(streams, message, answer):
    ws = await streams.open()
    await ws.send_json_to(message)
    assert await receive(ws) == answer


async def test_since_gives_subscribed_then_gap(streams):
    ws = await streams.open()
    since = "01JD3Z8Q4X1V6T2N9K5M7R0B3C"
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": "shop::.*", "since": since})
    assert await receive(ws) == {"type": "subscribed", "id": "a", "namespace": "shop", "last": ANY}
    assert await receive(ws) == {"type": "gap", "subscription": "a", "since": since}
    event = dispatch("shop::Order::created")
    frame = await expect_event(ws, "shop::Order::created", ["a"])
    assert frame["event"]["id"] == event.id


# -- catching up with since (PROTOCOL.md section 6) ------------------------------


def only_small_orders(scope: dict[str, Any], event: Event) -> bool:
    return event.payload.get("n", 0) < 10


async def subscribe_since(ws: WebsocketCommunicator, sid: str, pattern: str, since: str) -> None:
    await ws.send_json_to({"type": "subscribe", "id": sid, "pattern": pattern, "since": since})
    assert (await receive(ws))["type"] == "subscribed"


async def test_since_replays_what_came_after_it_then_live_events(streams):
    first = dispatch("shop::Order::created", {"n": 1})
    second = dispatch("shop::Order::updated", {"n": 2})
    dispatch("shop::Parcel::sent", {"n": 3})  # another pattern
    dispatch("billing::Invoice::paid", {"n": 4})  # another namespace
    third = dispatch("shop::Order::updated", {"n": 5})
    await hub_settled()
    ws = await streams.open()
    await subscribe_since(ws, "a", r"shop::Order::.*", first.id)
    assert_envelope((await expect_event(ws, "shop::Order::updated", ["a"]))["event"], second)
    assert_envelope((await expect_event(ws, "shop::Order::updated", ["a"]))["event"], third)
    live = dispatch("shop::Order::deleted", {"n": 6})
    assert_envelope((await expect_event(ws, "shop::Order::deleted", ["a"]))["event"], live)
    await nothing_more(ws, "shop::Order::marker", ["a"])


async def test_replays_past_the_replay_budget_are_rate_limited_and_change_nothing(
    configure, streams
):
    configure(REPLAY_BUDGET=5)
    first = dispatch("shop::Order::created", {"n": 1})
    for n in range(2, 5):
        dispatch("shop::Order::updated", {"n": n})
    await hub_settled()
    ws = await streams.open()
    # Each replay reads three events: the second takes the budget below one.
    for _ in range(2):
        await subscribe_since(ws, "a", r"shop::Order::.*", first.id)
        for _ in range(3):
            await expect_event(ws, "shop::Order::updated", ["a"])
        await ws.send_json_to({"type": "unsubscribe", "id": "a"})
        assert await receive(ws) == {"type": "unsubscribed", "id": "a"}
    await ws.send_json_to(
        {"type": "subscribe", "id": "a", "pattern": r"shop::Order::.*", "since": first.id}
    )
    error = await expect_error(ws, "rate_limited", "a")
    assert "5 events a minute" in error["message"]
    # Nothing changed: no subscription "a"; one without since still works.
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    await expect_error(ws, "unknown_subscription", "a")
    await subscribe(ws, "b", r"shop::Order::.*")
    await nothing_more(ws, "shop::Order::marker", ["b"])


@pytest.mark.parametrize("limit", [{"BUFFER_SIZE": 3}, {"BUFFER_BYTES": 700}])
async def test_a_replay_keeps_what_fits_and_counts_the_rest_in_lagged(configure, streams, limit):
    configure(**limit)
    first = dispatch("shop::Order::created", {"n": 0})
    for n in range(1, 6):
        dispatch("shop::Order::updated", {"n": n, "pad": "x" * 100})
    await hub_settled()
    ws = await streams.open()
    await subscribe_since(ws, "a", r"shop::Order::.*", first.id)
    numbers = []
    frame = await receive(ws)
    while frame["type"] == "event":
        numbers.append(frame["event"]["payload"]["n"])
        frame = await receive(ws)
    # The oldest events, in order, as many as fit; then how many did not.
    assert frame == {"type": "lagged", "dropped": 5 - len(numbers)}, (numbers, frame)
    assert numbers == list(range(1, 1 + len(numbers))) and 1 <= len(numbers) < 5
    live = dispatch("shop::Order::deleted")
    assert_envelope((await expect_event(ws, "shop::Order::deleted", ["a"]))["event"], live)


async def test_since_the_newest_event_replays_nothing(streams):
    newest = dispatch("shop::Order::created")
    await hub_settled()
    ws = await streams.open()
    await subscribe_since(ws, "a", r"shop::.*", newest.id)
    assert await ws.receive_nothing()
    live = dispatch("shop::Order::updated")
    assert_envelope((await expect_event(ws, "shop::Order::updated", ["a"]))["event"], live)


async def test_since_older_than_the_history_gives_gap(configure, streams):
    configure(HISTORY_SIZE=2)
    oldest = dispatch("shop::Order::created")
    for _ in range(2):
        dispatch("shop::Order::updated")
    await hub_settled()
    ws = await streams.open()
    await subscribe_since(ws, "a", r"shop::.*", oldest.id)
    assert await receive(ws) == {"type": "gap", "subscription": "a", "since": oldest.id}
    await nothing_more(ws, "shop::marker", ["a"])


async def test_without_history_every_since_gives_gap(configure, streams):
    configure(HISTORY_SIZE=0)
    event = dispatch("shop::Order::created")
    await hub_settled()
    ws = await streams.open()
    await subscribe_since(ws, "a", r"shop::.*", event.id)
    assert await receive(ws) == {"type": "gap", "subscription": "a", "since": event.id}


async def test_replayed_events_pass_the_receive_policy(configure, streams):
    configure(RECEIVE_POLICY=f"{HERE}.only_small_orders")
    first = dispatch("shop::Order::created", {"n": 1})
    dispatch("shop::Order::created", {"n": 50})
    small = dispatch("shop::Order::created", {"n": 2})
    await hub_settled()
    ws = await streams.open()
    await subscribe_since(ws, "a", r"shop::.*", first.id)
    assert_envelope((await expect_event(ws, "shop::Order::created", ["a"]))["event"], small)
    await nothing_more(ws, "shop::marker", ["a"])


async def test_live_events_wait_behind_the_replay_and_are_not_repeated(streams):
    first = dispatch("shop::Order::created", {"n": 1})
    missed = dispatch("shop::Order::updated", {"n": 2})
    await hub_settled()
    hub = get_hub()
    history = hub.history
    assert history is not None
    reading = asyncio.Event()
    release = asyncio.Event()
    read_after = history.after

    async def slow_after(namespace: str, since: str) -> Any:
        found = await read_after(namespace, since)
        reading.set()
        await release.wait()
        return found

    other = await streams.open()
    await subscribe(other, "o", r"shop::.*")
    ws = await streams.open()
    await subscribe(ws, "b", r"shop::Order::updated")
    history.after = slow_after  # type: ignore[method-assign]
    try:
        await ws.send_json_to(
            {"type": "subscribe", "id": "a", "pattern": r"shop::.*", "since": first.id}
        )
        assert (await receive(ws))["type"] == "subscribed"
        await asyncio.wait_for(reading.wait(), TIMEOUT)
        # While the history is read, live events queue; a copy of a replayed
        # one arriving live (as it may from another process) is not repeated.
        live = dispatch("shop::Order::deleted", {"n": 3})
        await hub.fan_out("shop", [Event.from_dict(missed.to_dict())])
        await hub_settled()
        # Another connection is not held up.
        await expect_event(other, "shop::Order::updated", ["o"])
        await expect_event(other, "shop::Order::deleted", ["o"])
        assert await ws.receive_nothing()
        release.set()
    finally:
        del history.after
    # One frame for the replayed event, listing "b" too, which had not had it.
    frame = await expect_event(ws, "shop::Order::updated", ["a", "b"])
    assert_envelope(frame["event"], missed)
    assert_envelope((await expect_event(ws, "shop::Order::deleted", ["a"]))["event"], live)
    # A copy arriving later (or one of ``since``) is not sent again.
    await hub.fan_out("shop", [Event.from_dict(missed.to_dict())])
    await hub.fan_out("shop", [Event.from_dict(first.to_dict())])
    assert await ws.receive_nothing()
    # Nor is anything lost for the subscriptions afterwards.
    later = dispatch("shop::Order::updated", {"n": 4})
    frame = await expect_event(ws, "shop::Order::updated", ["b", "a"])
    assert_envelope(frame["event"], later)


# -- event frames ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["dispatch", "adispatch"])
async def test_dispatched_event_reaches_the_subscriber_as_an_envelope(streams, how):
    ws = await streams.open()
    await subscribe(ws, "orders", "shop::Order::.*")
    payload = {"model": "shop.order", "pk": 42, "fields": {"number": "A-42"}}
    if how == "dispatch":
        event = dispatch("shop::Order::created", payload)
    else:
        event = await adispatch("shop::Order::created", payload)
    frame = await receive(ws)
    assert frame.keys() == {"type", "subscriptions", "event"}
    assert frame["type"] == "event"
    assert frame["subscriptions"] == ["orders"]
    assert_envelope(frame["event"], event)


class InvoicePaid(Event):
    # A name of its own: fixed names are registered process-wide.
    name = "tconsumers::invoice::paid"
    invoice: int
    amount: str = "0.00"


async def test_event_subclass_reaches_the_subscriber(streams):
    ws = await streams.open()
    await subscribe(ws, "b", "tconsumers::.*")
    event = InvoicePaid(invoice=7).dispatch()
    frame = await expect_event(ws, "tconsumers::invoice::paid", ["b"])
    assert frame["event"]["payload"] == {"invoice": 7, "amount": "0.00"}
    assert frame["event"]["id"] == event.id


async def test_payload_values_arrive_json_safe(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    when = datetime.datetime(2026, 11, 23, 15, 4, 5, 123456, tzinfo=datetime.timezone.utc)
    key = uuid.UUID("12345678-1234-5678-1234-567812345678")
    dispatch("shop::Order::created", {"total": decimal.Decimal("19.90"), "at": when, "key": key})
    frame = await expect_event(ws, "shop::Order::created", ["a"])
    assert frame["event"]["payload"] == {
        "total": "19.90",
        "at": "2026-11-23T15:04:05.123456+00:00",
        "key": "12345678-1234-5678-1234-567812345678",
    }


async def test_one_frame_per_event_listing_every_matching_subscription(streams):
    ws = await streams.open()
    await subscribe(ws, "all", "shop::.*")
    await subscribe(ws, "orders", "shop::Order::.*")
    await subscribe(ws, "invoices", "shop::Invoice::.*")
    await subscribe(ws, "created", r"shop::\w+::created")
    await subscribe(ws, "billing", "billing::.*")
    dispatch("shop::Order::created")
    dispatch("shop::Order::updated")
    await expect_event(ws, "shop::Order::created", ["all", "orders", "created"])
    await expect_event(ws, "shop::Order::updated", ["all", "orders"])
    await nothing_more(ws, "shop::Invoice::marker", ["all", "invoices"])


async def test_events_of_other_namespaces_and_patterns_are_not_sent(streams):
    ws = await streams.open()
    await subscribe(ws, "orders", "shop::Order::.*")
    dispatch("billing::Order::created")
    dispatch("shopping::Order::created")
    dispatch("shop::Invoice::created")
    dispatch("shop::Order")
    await adispatch("shop::Orders::created")
    dispatch("shop::Order::done")
    await expect_event(ws, "shop::Order::done", ["orders"])
    assert await ws.receive_nothing()


async def test_events_dispatched_before_subscribing_are_not_sent(streams):
    ws = await streams.open()
    dispatch("shop::Order::created", {"pk": 1})
    await hub_settled()
    await subscribe(ws, "a", "shop::.*")
    dispatch("shop::Order::created", {"pk": 2})
    frame = await expect_event(ws, "shop::Order::created", ["a"])
    assert frame["event"]["payload"] == {"pk": 2}


async def test_events_arrive_in_dispatch_order(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    await subscribe(ws, "b", "billing::.*")
    sent = []
    for i in range(10):
        sent.append(dispatch("shop::Order::created", {"i": i}))
        sent.append(dispatch("billing::invoice::paid", {"i": i}))
    received = [(await receive(ws))["event"]["id"] for _ in sent]
    assert received == [event.id for event in sent]


async def test_every_subscribed_connection_gets_the_event_once(streams):
    first = await streams.open()
    second = await streams.open()
    bystander = await streams.open()
    await subscribe(first, "x", "shop::.*")
    await subscribe(first, "y", "shop::Order::created")
    await subscribe(second, "z", "shop::Order::.*")
    await subscribe(bystander, "w", "billing::.*")
    event = dispatch("shop::Order::created")
    one = await expect_event(first, "shop::Order::created", ["x", "y"])
    two = await expect_event(second, "shop::Order::created", ["z"])
    assert one["event"] == two["event"]
    assert one["event"]["id"] == event.id
    # Markers dispatched now come next: nothing else was on its way.
    dispatch("shop::Order::marker")
    dispatch("billing::marker")
    await expect_event(first, "shop::Order::marker", ["x"])
    await expect_event(second, "shop::Order::marker", ["z"])
    await expect_event(bystander, "billing::marker", ["w"])
    for ws in (first, second, bystander):
        assert await ws.receive_nothing()


async def test_same_subscription_id_with_other_patterns_is_judged_per_pattern(streams):
    # Connections often reuse ids ("s1"); what one connection's pattern
    # decided must not be taken for another's.
    orders = await streams.open()
    invoices = await streams.open()
    also_orders = await streams.open()
    await subscribe(orders, "s1", "shop::Order::.*")
    await subscribe(invoices, "s1", "shop::Invoice::.*")
    await subscribe(also_orders, "s1", "shop::Order::.*")
    event = dispatch("shop::Order::created")
    one = await expect_event(orders, "shop::Order::created", ["s1"])
    two = await expect_event(also_orders, "shop::Order::created", ["s1"])
    assert one == two and one["event"]["id"] == event.id
    assert await invoices.receive_nothing()
    dispatch("shop::Invoice::created")
    await expect_event(invoices, "shop::Invoice::created", ["s1"])
    await nothing_more(orders, "shop::Order::marker", ["s1"])


async def test_frames_carry_the_encoded_envelope(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    event = dispatch("shop::Order::created", {"text": "naïve €"})
    text = await ws.receive_from(timeout=TIMEOUT)
    assert event.encoded in text
    assert json.loads(text)["event"]["payload"] == {"text": "naïve €"}


async def test_disconnected_connection_gets_nothing_more(streams, caplog):
    ws = await streams.open()
    still = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    await subscribe(still, "a", "shop::.*")
    await ws.disconnect(timeout=TIMEOUT)
    caplog.set_level(logging.ERROR, logger="channels_events")
    dispatch("shop::Order::created")
    await expect_event(still, "shop::Order::created", ["a"])
    assert await ws.receive_nothing()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


class ClosingServer:
    """Wraps an app as daphne behaves once a client's close frame is in: sends raise.

    From then until the disconnect reaches the consumer, daphne refuses every
    frame with "Attempt to send on a closed protocol".
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self.closing = False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        async def refusing(message: dict[str, Any]) -> None:
            if self.closing:
                raise RuntimeError("Attempt to send on a closed protocol")
            await send(message)

        return await self.app(scope, receive, refusing)


async def test_a_connection_closing_during_a_fan_out_stops_quietly(streams, caplog):
    server = ClosingServer(EventStreamConsumer.as_asgi())
    leaving = WebsocketCommunicator(server, "/ws/events/")
    streams.opened.append(leaving)
    assert (await leaving.connect(timeout=TIMEOUT))[0]
    assert (await receive(leaving))["type"] == "welcome"
    still = await streams.open()
    await subscribe(leaving, "a", "shop::.*")
    await subscribe(still, "a", "shop::.*")
    dispatch("shop::Order::created")
    await expect_event(leaving, "shop::Order::created", ["a"])
    await expect_event(still, "shop::Order::created", ["a"])
    caplog.set_level(logging.INFO, logger="channels_events")
    server.closing = True
    for _ in range(3):
        dispatch("shop::Order::updated")
    for _ in range(3):
        await expect_event(still, "shop::Order::updated", ["a"])
    await hub_settled()
    # One line says the connection went; no traceback, and nothing per event.
    records = [r for r in caplog.records if r.name.startswith("channels_events")]
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.INFO, None)], records
    assert "Attempt to send on a closed protocol" in records[0].getMessage()


# -- emit -----------------------------------------------------------------------


async def test_emit_is_forbidden_without_an_emit_policy(streams, listened):
    connect(listened.append, "shop::.*")
    ws = await streams.open()
    await ws.send_json_to({"type": "emit", "name": "shop::cart::added", "payload": {"sku": 1}})
    await expect_error(ws, "forbidden")
    await heard_only(listened, "shop::marker")
    await assert_open(ws)


async def test_emit_dispatches_when_the_policy_allows(configure, streams, listened):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    connect(listened.append, "shop::.*")
    emitter = await streams.open()
    watcher = await streams.open()
    await subscribe(emitter, "mine", "shop::cart::.*")
    await subscribe(watcher, "carts", "shop::cart::.*")
    await emitter.send_json_to({"type": "emit", "name": "shop::cart::added", "payload": {"sku": 1}})
    emitted = await receive(emitter)
    assert emitted.keys() == {"type", "id"}
    assert emitted["type"] == "emitted"
    assert ID_RE.fullmatch(emitted["id"])
    assert [(e.id, e.name, e.payload) for e in listened] == [
        (emitted["id"], "shop::cart::added", {"sku": 1})
    ]
    seen = await expect_event(watcher, "shop::cart::added", ["carts"])
    assert seen["event"]["id"] == emitted["id"]
    assert seen["event"]["payload"] == {"sku": 1}
    own = await expect_event(emitter, "shop::cart::added", ["mine"])
    assert own["event"]["id"] == emitted["id"]


async def test_emit_refused_by_the_policy_is_forbidden(configure, streams, listened):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    connect(listened.append, ["shop::.*", "billing::.*"])
    ws = await streams.open()
    await subscribe(ws, "b", "billing::.*")
    await ws.send_json_to({"type": "emit", "name": "billing::invoice::paid", "payload": {}})
    await expect_error(ws, "forbidden")
    await heard_only(listened, "billing::marker")
    await expect_event(ws, "billing::marker", ["b"])
    assert await ws.receive_nothing()


@pytest.mark.parametrize(
    "message",
    [
        {"type": "emit", "name": "shop::", "payload": {}},
        {"type": "emit", "name": "shop::has space", "payload": {}},
        {"type": "emit", "name": 5, "payload": {}},
        {"type": "emit", "payload": {}},
        {"type": "emit", "name": "shop::x", "payload": [1]},
        {"type": "emit", "name": "shop::x", "payload": "text"},
        {"type": "emit", "name": "shop::x"},
    ],
)
async def test_malformed_emit_is_bad_request(configure, streams, listened, message):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    connect(listened.append, ["shop::.*", "billing::.*"])
    ws = await streams.open()
    await ws.send_json_to(message)
    await expect_error(ws, "bad_request")
    await heard_only(listened, "shop::marker")
    await assert_open(ws)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ('{"n": 18446744073709551616}', "payload['n']"),
        ('{"n": -9223372036854775809}', "payload['n']"),
        ('{"t": "ok \\ud800"}', "payload['t']"),
        ('{"rows": [{"\\udfff": 1}]}', "payload['rows'][0]"),
    ],
)
async def test_an_emit_whose_payload_cannot_travel_is_bad_request(
    configure, streams, listened, payload, where
):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    connect(listened.append, "shop::.*")
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    await ws.send_to(text_data='{"type": "emit", "name": "shop::x", "payload": ' + payload + "}")
    frame = await expect_error(ws, "bad_request")
    assert where in frame["message"], frame
    await heard_only(listened, "shop::marker")
    # Nothing went out: the next frame is the marker's, and emits work on.
    await expect_event(ws, "shop::marker", ["a"])
    await ws.send_json_to({"type": "emit", "name": "shop::x", "payload": {"n": 2**64 - 1}})
    assert (await receive(ws))["type"] == "emitted"
    frame = await expect_event(ws, "shop::x", ["a"])
    assert frame["event"]["payload"] == {"n": 2**64 - 1}


async def test_emit_replies_never_echo_a_request_id(configure, streams, listened):
    # emit carries no id (PROTOCOL.md section 4): an id a client adds anyway
    # is not echoed, and emitted.id is always the new event's id.
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    connect(listened.append, "shop::.*")
    ws = await streams.open()
    await ws.send_json_to({"type": "emit", "id": "e1", "name": "billing::x", "payload": {}})
    await expect_error(ws, "forbidden")
    await ws.send_json_to({"type": "emit", "id": "e2", "name": "shop::", "payload": {}})
    await expect_error(ws, "bad_request")
    await ws.send_json_to({"type": "emit", "id": "e3", "name": "shop::x"})
    await expect_error(ws, "bad_request")
    await ws.send_json_to({"type": "emit", "id": "e4", "name": "shop::x", "payload": {}})
    emitted = await receive(ws)
    assert emitted["type"] == "emitted"
    assert [event.id for event in listened] == [emitted["id"]]
    # Other messages' replies still carry their id.
    await ws.send_json_to({"type": "unsubscribe", "id": "e5"})
    await expect_error(ws, "unknown_subscription", "e5")


async def test_a_rate_limited_emit_gets_no_id(configure, streams):
    configure(EMIT_POLICY=f"{HERE}.emit_shop", RATE_LIMIT=0.001, RATE_BURST=2)
    ws = await streams.open()
    await ws.send_json_to({"type": "ping", "id": "first"})
    assert await receive(ws) == {"type": "pong", "id": "first"}
    await ws.send_json_to({"type": "emit", "id": "e", "name": "shop::x", "payload": {}})
    assert (await receive(ws))["type"] == "emitted"
    await ws.send_json_to({"type": "emit", "id": "e", "name": "shop::x", "payload": {}})
    await expect_error(ws, "rate_limited")
    await ws.send_json_to({"type": "ping", "id": "p"})
    await expect_error(ws, "rate_limited", "p")


async def test_emits_are_answered_in_the_order_they_were_sent(configure, streams, listened):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    connect(listened.append, "shop::.*")
    ws = await streams.open()
    emits = [
        {"type": "emit", "name": "shop::a", "payload": {}},
        {"type": "emit", "name": "billing::b", "payload": {}},
        {"type": "emit", "name": "shop::c", "payload": {}},
        {"type": "emit", "name": "shop::", "payload": {}},
        {"type": "emit", "name": "shop::e", "payload": {}},
    ]
    for message in emits:
        await ws.send_json_to(message)
    replies = [await receive(ws) for _ in emits]
    assert [reply.get("code", reply["type"]) for reply in replies] == [
        "emitted",
        "forbidden",
        "emitted",
        "bad_request",
        "emitted",
    ]
    assert [reply["id"] for reply in replies if reply["type"] == "emitted"] == [
        event.id for event in listened
    ]
    assert [event.name for event in listened] == ["shop::a", "shop::c", "shop::e"]


def emit_all(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    return True


async def test_emit_of_a_declared_name_builds_its_event_class(configure, streams, listened):
    configure(EMIT_POLICY=f"{HERE}.emit_all")
    connect(listened.append, "tconsumers::.*")
    ws = await streams.open()
    name = InvoicePaid.name
    await ws.send_json_to({"type": "emit", "name": name, "payload": {"amount": "1.00"}})
    refused = await expect_error(ws, "bad_request")
    assert "invoice" in refused["message"]
    await ws.send_json_to({"type": "emit", "name": name, "payload": {"invoice": 7, "note": "x"}})
    refused = await expect_error(ws, "bad_request")
    assert "note" in refused["message"]
    await ws.send_json_to({"type": "emit", "name": name, "payload": {"invoice": 7}})
    emitted = await receive(ws)
    assert emitted["type"] == "emitted"
    [event] = listened
    assert type(event) is InvoicePaid
    assert (event.id, event.invoice, event.payload) == (
        emitted["id"],
        7,
        {"invoice": 7, "amount": "0.00"},
    )


async def test_an_emit_the_policy_refuses_learns_nothing_of_the_names_event_class(
    configure, streams, listened
):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    ws = await streams.open()
    # InvoicePaid declares the name; this payload does not fit it.
    await ws.send_json_to({"type": "emit", "name": InvoicePaid.name, "payload": {"x": 1}})
    refused = await expect_error(ws, "forbidden")
    assert "invoice" not in refused["message"].lower().replace(InvoicePaid.name, "")
    # Positive control: where the policy allows, the same misfit is a bad request.
    configure(EMIT_POLICY=f"{HERE}.emit_all")
    ws = await streams.open()
    await ws.send_json_to({"type": "emit", "name": InvoicePaid.name, "payload": {"x": 1}})
    await expect_error(ws, "bad_request")
    assert listened == []


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize("text", ["not json", "{", "", "{'type': 'ping'}", '{"type": "ping"} x'])
async def test_a_frame_that_is_not_json_is_bad_json(streams, text):
    ws = await streams.open()
    await ws.send_input({"type": "websocket.receive", "text": text})
    await expect_error(ws, "bad_json")
    await assert_open(ws)


@pytest.mark.parametrize(
    ("message", "sid"),
    [
        ([], None),
        ([{"type": "ping"}], None),
        ("ping", None),
        (1, None),
        (None, None),
        ({}, None),
        ({"id": "x"}, "x"),
        ({"type": 5}, None),
        ({"type": None, "id": "x"}, "x"),
        ({"type": "nope", "id": "x"}, "x"),
        ({"type": "PING"}, None),
        ({"type": "subscribe", "id": 5, "pattern": "shop::.*"}, None),
        ({"type": "subscribe", "pattern": "shop::.*"}, None),
        ({"type": "subscribe", "id": "x"}, "x"),
        ({"type": "subscribe", "id": "x", "pattern": 5}, "x"),
        ({"type": "subscribe", "id": "x", "pattern": ["shop::.*"]}, "x"),
        ({"type": "subscribe", "id": "x", "pattern": "shop::.*", "since": 5}, "x"),
        # An answer echoes only an id the protocol allows: a string of 1-64 characters.
        ({"type": "subscribe", "id": "", "pattern": "shop::.*"}, None),
        ({"type": "subscribe", "id": "x" * 65, "pattern": "shop::.*"}, None),
        ({"type": "unsubscribe"}, None),
        ({"type": "unsubscribe", "id": 5}, None),
        ({"type": "unsubscribe", "id": "x" * 65}, None),
        ({"type": "ping", "id": 5}, None),
        ({"type": "ping", "id": ""}, None),
        ({"type": "ping", "id": "x" * 65}, None),
        ({"type": "ping", "id": None}, None),
        ({"type": "ping", "id": ["p"]}, None),
    ],
)
async def test_malformed_message_is_bad_request(streams, message, sid):
    ws = await streams.open()
    await ws.send_json_to(message)
    await expect_error(ws, "bad_request", sid)
    await assert_open(ws)


async def test_subscription_ids_of_64_characters_are_accepted(streams):
    ws = await streams.open()
    await subscribe(ws, "x" * 64, "shop::.*")
    await subscribe(ws, "y", "shop::.*")


async def test_a_binary_frame_is_bad_request(streams):
    ws = await streams.open()
    await ws.send_to(bytes_data=json.dumps({"type": "ping", "id": "p"}).encode())
    await expect_error(ws, "bad_request")
    await assert_open(ws)


async def test_a_frame_over_the_size_limit_is_too_large(configure, streams):
    configure(MAX_FRAME_BYTES=200)
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    frame = json.dumps({"type": "subscribe", "id": "b", "pattern": "shop::" + "x" * 250})
    await ws.send_to(text_data=frame)
    await expect_error(ws, "too_large")
    await assert_open(ws)
    # The subscription was not made, so its id is still free.
    await subscribe(ws, "b", "shop::x")


async def test_the_size_limit_counts_utf8_bytes(configure, streams):
    configure(MAX_FRAME_BYTES=200)
    ws = await streams.open()
    # About 110 characters but 290 bytes: a limit counted in characters would let it pass.
    await ws.send_to(text_data=json.dumps({"type": "ping", "id": "€" * 90}, ensure_ascii=False))
    await expect_error(ws, "too_large")
    await assert_open(ws)


async def test_a_frame_at_the_size_limit_is_accepted(configure, streams):
    configure(MAX_FRAME_BYTES=200)
    ws = await streams.open()
    head = '{"type":"ping","id":"p","pad":"'
    at_limit = head + "x" * (200 - len(head) - 2) + '"}'
    assert len(at_limit.encode()) == 200
    await ws.send_to(text_data=at_limit)
    assert await receive(ws) == {"type": "pong", "id": "p"}
    over = head + "x" * (201 - len(head) - 2) + '"}'
    await ws.send_to(text_data=over)
    await expect_error(ws, "too_large")


async def test_a_frame_far_over_the_size_limit_closes_with_4009(configure, streams):
    configure(MAX_FRAME_BYTES=200)
    ws = await streams.open()
    await ws.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 5000}))
    # Not 1009: servers may send only 1000 and 3000-4999 (tests/test_e2e.py, under daphne).
    assert await ws.receive_output(timeout=TIMEOUT) == {"type": "websocket.close", "code": 4009}


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" * 400])
async def test_a_ping_id_that_is_not_a_string_is_bad_request_not_a_crash(streams, number):
    ws = await streams.open()
    # JSON itself has no limit on numbers: 1e400 parses as infinity.
    await ws.send_to(text_data='{"type": "ping", "id": ' + number + "}")
    await expect_error(ws, "bad_request")
    await assert_open(ws)


async def test_a_ping_id_of_64_characters_is_echoed(streams):
    ws = await streams.open()
    await ws.send_json_to({"type": "ping", "id": "p" * 64})
    assert await receive(ws) == {"type": "pong", "id": "p" * 64}


async def test_a_big_frame_with_lone_surrogates_is_an_error_not_a_crash(streams):
    ws = await streams.open()
    # A server that does not check UTF-8 could hand such text over: 90 KB as UTF-8.
    await ws.send_to(text_data='{"type": "ping", "pad": "' + "\ud800" * 30_000 + '"}')
    await expect_error(ws, "too_large")
    await assert_open(ws)


async def test_the_default_size_limit_is_64_kib(streams):
    ws = await streams.open()
    await ws.send_to(text_data=json.dumps({"type": "ping", "pad": "x" * 70_000}))
    await expect_error(ws, "too_large")
    await assert_open(ws)


@pytest.mark.parametrize(
    "pattern",
    [
        "shop::(",
        "shop::[a-",
        "shop::a{2,1}",
        "",
        ".*",
        ".*::Order::created",
        "(shop|billing)::x",
        "shop::a|billing::b",
        "sho[pq]::x",
        "shop.*::x",
        "(?i)shop::x",
        "(?x)shop::x",
        r"shop::(a)\1",
        r"shop::(?P<x>a)(?P=x)",
        r"shop::(?=a)a",
        r"shop::(?!a)b",
        r"shop::(?<=:)a",
        r"shop::(?<!x)a",
    ],
)
async def test_refused_pattern_is_invalid_pattern(streams, pattern):
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "p", "pattern": pattern})
    await expect_error(ws, "invalid_pattern", "p")
    await assert_open(ws)
    # Nothing was registered under the refused id.
    await subscribe(ws, "p", "shop::.*")


async def test_pattern_longer_than_max_pattern_length_is_invalid(configure, streams):
    configure(MAX_PATTERN_LENGTH=32)
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "long", "pattern": "shop::" + "a" * 27})
    await expect_error(ws, "invalid_pattern", "long")
    await subscribe(ws, "exact", "shop::" + "a" * 26)


async def test_default_max_pattern_length_is_256(streams):
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "long", "pattern": "shop::" + "a" * 251})
    await expect_error(ws, "invalid_pattern", "long")
    await subscribe(ws, "exact", "shop::" + "a" * 250)


async def test_subscribing_where_the_policy_refuses_is_forbidden(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.allow_shop")
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "b", "pattern": "billing::.*"})
    await expect_error(ws, "forbidden", "b")
    await subscribe(ws, "s", "shop::.*")
    dispatch("billing::invoice::paid")
    dispatch("shop::marker")
    await expect_event(ws, "shop::marker", ["s"])


async def test_without_a_subscribe_policy_nothing_is_open(configure, streams):
    configure(SUBSCRIBE_POLICY=None)
    ws = await streams.open()
    for sid, pattern in [("a", "shop::.*"), ("b", "shop::Order::created"), ("c", "x")]:
        await ws.send_json_to({"type": "subscribe", "id": sid, "pattern": pattern})
        await expect_error(ws, "forbidden", sid)
    # A consumer of the server's own does get the event: it was fanned out.
    feed = await open_feed(OrderFeed)
    try:
        dispatch("shop::Order::created")
        assert (await feed.receive_json_from(timeout=TIMEOUT))["name"] == "shop::Order::created"
        assert await ws.receive_nothing()
    finally:
        await finish(feed)
    await assert_open(ws)


async def test_duplicate_subscription_id_is_refused(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::Order::.*")
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": "billing::.*"})
    await expect_error(ws, "duplicate_id", "a")
    dispatch("billing::invoice::paid")
    dispatch("shop::Order::created")
    await expect_event(ws, "shop::Order::created", ["a"])
    assert await ws.receive_nothing()


async def test_unsubscribing_an_unknown_id_is_unknown_subscription(streams):
    ws = await streams.open()
    await ws.send_json_to({"type": "unsubscribe", "id": "nope"})
    await expect_error(ws, "unknown_subscription", "nope")
    await subscribe(ws, "a", "shop::.*")
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    assert (await receive(ws))["type"] == "unsubscribed"
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    await expect_error(ws, "unknown_subscription", "a")
    await assert_open(ws)


async def test_too_many_subscriptions(configure, streams):
    configure(MAX_SUBSCRIPTIONS=2)
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    await subscribe(ws, "b", "billing::.*")
    await ws.send_json_to({"type": "subscribe", "id": "c", "pattern": "stock::.*"})
    await expect_error(ws, "too_many_subscriptions", "c")
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    assert (await receive(ws))["type"] == "unsubscribed"
    await subscribe(ws, "c", "stock::.*")


async def test_rate_limited_then_closed_with_4008_when_the_client_keeps_sending(configure, streams):
    configure(RATE_LIMIT=0.001, RATE_BURST=3)
    ws = await streams.open()
    for i in range(4):
        await ws.send_json_to({"type": "ping", "id": str(i)})
    for i in range(3):
        assert await receive(ws) == {"type": "pong", "id": str(i)}
    # The refusal answers message "3", so it carries its id.
    await expect_error(ws, "rate_limited", "3")
    answers = []
    for _ in range(10):
        await ws.send_json_to({"type": "ping"})
        answer = await ws.receive_output(timeout=TIMEOUT)
        answers.append(answer)
        if answer["type"] == "websocket.close":
            break
    assert answers[-1] == {"type": "websocket.close", "code": 4008}
    assert all(json.loads(a["text"])["code"] == "rate_limited" for a in answers[:-1])


async def test_rate_limited_client_recovers_after_slowing_down(configure, streams):
    configure(RATE_LIMIT=20, RATE_BURST=2)
    ws = await streams.open()
    for _ in range(3):
        await ws.send_json_to({"type": "ping"})
    assert await receive(ws) == {"type": "pong"}
    assert await receive(ws) == {"type": "pong"}
    await expect_error(ws, "rate_limited")
    await asyncio.sleep(0.06)  # 20 messages a second: one more token in 50 ms
    await ws.send_json_to({"type": "ping"})
    assert await receive(ws) == {"type": "pong"}


async def pace(
    ws: WebsocketCommunicator, per_second: float, seconds: float
) -> tuple[list[dict[str, Any]], float | None]:
    """Send pings at ``per_second`` for ``seconds`` or until the server closes.

    Return the frames that came back, and the seconds after the first ping
    at which the connection was closed with 4008 (None if it was not).
    """
    answers: list[dict[str, Any]] = []
    closed: list[float] = []
    start = time.monotonic()

    async def read() -> None:
        while True:
            output = await ws.receive_output(timeout=seconds + TIMEOUT)
            if output["type"] == "websocket.close":
                assert output["code"] == 4008, output
                closed.append(time.monotonic() - start)
                return
            answers.append(json.loads(output["text"]))

    reader = asyncio.get_running_loop().create_task(read())
    sent = 0
    while not reader.done() and time.monotonic() - start < seconds:
        await ws.send_json_to({"type": "ping"})
        sent += 1
        # Keep the pace by the clock, whatever each send and sleep cost.
        await asyncio.sleep(max(0.0, start + sent / per_second - time.monotonic()))
    if not reader.done():
        # Answers still on their way arrive now; then nothing more comes.
        await asyncio.sleep(0.1)
        reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return answers, (closed[0] if closed else None)


def refusals(answers: list[dict[str, Any]]) -> int:
    return sum(1 for answer in answers if answer.get("code") == "rate_limited")


async def test_a_flood_is_closed_with_4008_at_once(streams):
    ws = await streams.open()
    # 500 frames a second against the default limit (20 a second, bursts of 40):
    # about 0.2 s of it is enough.
    answers, closed = await pace(ws, 500, 8.0)
    assert closed is not None and closed < 2.0, (closed, refusals(answers))
    # The client was told RATE_BURST times before the close, not thousands.
    assert refusals(answers) == 40
    assert sum(1 for answer in answers if answer["type"] == "pong") >= 40


async def test_any_sustained_rate_over_the_limit_is_closed(configure, streams):
    configure(RATE_LIMIT=20, RATE_BURST=10)
    ws = await streams.open()
    # Under the limit: every ping is answered, however long it goes on.
    answers, closed = await pace(ws, 15, 1.5)
    assert closed is None
    assert answers and all(answer == {"type": "pong"} for answer in answers)
    # Twice the limit: a token comes back every 50 ms, and is taken at once,
    # so the client is never under the limit for long: closed all the same.
    answers, closed = await pace(ws, 40, 8.0)
    assert closed is not None and closed < 4.0, (closed, refusals(answers))
    assert refusals(answers) == 10


async def test_a_large_refused_frame_is_not_parsed_for_its_id(configure, streams):
    configure(RATE_LIMIT=0.001, RATE_BURST=1)
    ws = await streams.open()
    await ws.send_json_to({"type": "ping", "id": "first"})
    assert await receive(ws) == {"type": "pong", "id": "first"}
    # Refusing a frame must cost less than handling it: a big one is not read.
    await ws.send_json_to({"type": "ping", "id": "big", "pad": "x" * 60_000})
    await expect_error(ws, "rate_limited")


async def test_rate_limited_error_carries_the_message_id(configure, streams):
    configure(RATE_LIMIT=0.001, RATE_BURST=1)
    ws = await streams.open()
    await ws.send_json_to({"type": "ping", "id": "first"})
    assert await receive(ws) == {"type": "pong", "id": "first"}
    await ws.send_json_to({"type": "subscribe", "id": "sub", "pattern": "shop::.*"})
    await expect_error(ws, "rate_limited", "sub")


async def test_errors_carry_the_id_of_the_message_they_answer(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.allow_shop", MAX_SUBSCRIPTIONS=1)
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "f", "pattern": "billing::.*"})
    await expect_error(ws, "forbidden", "f")
    await ws.send_json_to({"type": "subscribe", "id": "i", "pattern": ".*"})
    await expect_error(ws, "invalid_pattern", "i")
    await subscribe(ws, "s", "shop::.*")
    await ws.send_json_to({"type": "subscribe", "id": "s", "pattern": "shop::.*"})
    await expect_error(ws, "duplicate_id", "s")
    await ws.send_json_to({"type": "subscribe", "id": "t", "pattern": "shop::.*"})
    await expect_error(ws, "too_many_subscriptions", "t")
    await ws.send_json_to({"type": "unsubscribe", "id": "u"})
    await expect_error(ws, "unknown_subscription", "u")


async def test_a_malformed_frame_leaves_subscriptions_as_they_were(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.allow_shop", MAX_FRAME_BYTES=1000)
    ws = await streams.open()
    await subscribe(ws, "orders", "shop::Order::.*")
    await subscribe(ws, "all", "shop::.*")
    garbage: list[tuple[dict[str, Any], str]] = [
        ({"text_data": "not json"}, "bad_json"),
        ({"text_data": "[1, 2]"}, "bad_request"),
        ({"text_data": '"text"'}, "bad_request"),
        ({"text_data": "{}"}, "bad_request"),
        ({"bytes_data": b"\x00\xff"}, "bad_request"),
        ({"text_data": '{"type": "subscribe", "id": "orders"}'}, "bad_request"),
        ({"text_data": '{"type": "subscribe", "id": "new", "pattern": ".*"}'}, "invalid_pattern"),
        ({"text_data": '{"type": "subscribe", "id": "orders", "pattern": "shop"}'}, "duplicate_id"),
        ({"text_data": '{"type": "subscribe", "id": "b", "pattern": "billing::.*"}'}, "forbidden"),
        ({"text_data": '{"type": "unsubscribe", "id": 1}'}, "bad_request"),
        ({"text_data": '{"type": "unsubscribe", "id": "ORDERS"}'}, "unknown_subscription"),
        ({"text_data": json.dumps({"type": "ping", "x": "y" * 2000})}, "too_large"),
        ({"text_data": '{"type": "emit", "name": "shop::x", "payload": {}}'}, "forbidden"),
    ]
    for frame, code in garbage:
        await ws.send_to(**frame)
        assert (await receive(ws))["code"] == code, frame
    event = dispatch("shop::Order::created", {"pk": 1})
    frame = await expect_event(ws, "shop::Order::created", ["orders", "all"])
    assert frame["event"]["id"] == event.id
    dispatch("shop::Invoice::created")
    await expect_event(ws, "shop::Invoice::created", ["all"])


# -- lagged ---------------------------------------------------------------------


async def test_a_slow_connection_is_told_it_lagged(configure, streams):
    configure(BUFFER_SIZE=3)
    slow = await streams.open()
    other = await streams.open()
    await subscribe(slow, "a", "shop::.*")
    await subscribe(other, "b", "billing::.*")
    total = 20
    # One go, no await in between: the hub hands the burst over at once.
    sent = [dispatch("shop::Order::created", {"i": i}) for i in range(total)]
    billing = [dispatch("billing::invoice::paid", {"i": i}) for i in range(2)]
    delivered: list[dict[str, Any]] = []
    dropped = 0
    lagged_frames = 0
    while len(delivered) + dropped < total:
        frame = await receive(slow)
        if frame["type"] == "lagged":
            assert frame.keys() == {"type", "dropped"}
            assert isinstance(frame["dropped"], int) and frame["dropped"] > 0
            dropped += frame["dropped"]
            lagged_frames += 1
        else:
            assert frame["type"] == "event"
            delivered.append(frame["event"])
    assert lagged_frames >= 1
    assert len(delivered) + dropped == total
    assert len(delivered) >= 3
    ids = [envelope["id"] for envelope in delivered]
    order = [event.id for event in sent]
    assert ids == sorted(ids, key=order.index)  # what arrives, arrives in order
    assert await slow.receive_nothing()
    # The other connection has its own buffer and lost nothing.
    for event in billing:
        frame = await expect_event(other, "billing::invoice::paid", ["b"])
        assert frame["event"]["id"] == event.id
    await nothing_more(other, "billing::marker", ["b"])
    # Once caught up, the slow connection gets events again.
    after = dispatch("shop::Order::updated")
    frame = await expect_event(slow, "shop::Order::updated", ["a"])
    assert frame["event"]["id"] == after.id


# -- a connection whose writer is behind -------------------------------------------


class Gate:
    """Keeps a connection's writer busy: the receive policy waits on events marked ``held``.

    The gate opens when the connection next consults its subscribe policy,
    that is once it has handled every message the client sent before that
    ``subscribe``.
    """

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.opened = asyncio.Event()


_gate = Gate()


async def gated_receive(scope: dict[str, Any], event: Event) -> bool:
    if event.payload.get("held"):
        _gate.asked.set()
        await _gate.opened.wait()
    return True


def gate_opening_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    if _gate.asked.is_set():
        _gate.opened.set()
    return True


@pytest.fixture
def gate(configure: Callable[..., None]) -> Any:
    """Yield a closed gate; events marked ``held`` wait for it before they are written."""
    global _gate
    _gate = Gate()
    configure(
        SUBSCRIBE_POLICY=f"{HERE}.gate_opening_subscribe", RECEIVE_POLICY=f"{HERE}.gated_receive"
    )
    yield _gate
    _gate.opened.set()


async def frames_until(
    ws: WebsocketCommunicator, last: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Receive frames up to and including the first one for which ``last`` holds."""
    frames = [await receive(ws)]
    while not last(frames[-1]):
        frames.append(await receive(ws))
    return frames


def subscribed_to(sid: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: (
        frame == {"type": "subscribed", "id": sid, "namespace": frame.get("namespace"), "last": ANY}
    )


def carrying(event: Event) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("event", {}).get("id") == event.id


async def test_answers_wait_behind_the_event_frames_queued_before_them(gate, streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    first = dispatch("shop::Order::created", {"held": True})
    await asyncio.wait_for(gate.asked.wait(), TIMEOUT)
    second = dispatch("shop::Order::updated")
    await hub_settled()
    await ws.send_json_to({"type": "ping", "id": "p"})
    await ws.send_json_to({"type": "subscribe", "id": "g", "pattern": "other::x"})
    frames = await frames_until(ws, subscribed_to("g"))
    assert [(frame["type"], frame.get("event", frame)["id"]) for frame in frames] == [
        ("event", first.id),
        ("event", second.id),
        ("pong", "p"),
        ("subscribed", "g"),
    ]


async def test_no_frame_names_a_subscription_after_its_unsubscribed(gate, streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::Order::.*")
    await subscribe(ws, "b", "shop::.*")
    # One event is being written (its receive verdict is slow), two wait behind it.
    first = dispatch("shop::Order::created", {"held": True})
    await asyncio.wait_for(gate.asked.wait(), TIMEOUT)
    queued = [dispatch("shop::Order::updated", {"n": n}) for n in range(2)]
    await hub_settled()
    # The client drops "a" and reuses the id at once for another pattern.
    await ws.send_json_to({"type": "unsubscribe", "id": "a"})
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": "shop::Invoice::.*"})
    frames = await frames_until(ws, subscribed_to("a"))
    invoice = dispatch("shop::Invoice::created")
    frames += await frames_until(ws, carrying(invoice))
    kinds = [frame["type"] for frame in frames]
    assert kinds.count("unsubscribed") == 1
    for frame in frames[kinds.index("unsubscribed") :]:
        if frame["type"] == "event" and "a" in frame["subscriptions"]:
            assert frame["event"]["name"].startswith("shop::Invoice::"), frames
    # The event being written went out first, as it was; the queued ones
    # lost "a" but still reached "b"; the new "a" has its own events.
    events = [
        (frame["event"]["id"], frame["subscriptions"]) for frame in frames if "event" in frame
    ]
    assert events == [
        (first.id, ["a", "b"]),
        *((event.id, ["b"]) for event in queued),
        (invoice.id, ["b", "a"]),
    ]


# -- found by these tests -------------------------------------------------------


async def test_deeply_nested_json_is_an_error_not_a_crash(streams):
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    await ws.send_to(text_data="[" * 5000 + "]" * 5000)
    try:
        frame = await ws.receive_json_from(timeout=SHORT)
    except RecursionError:
        # Raised again without its (very deep) chain, which is unwieldy to report.
        raise AssertionError("the consumer crashed with RecursionError") from None
    assert frame["type"] == "error"
    assert frame["code"] in {"bad_json", "bad_request"}
    dispatch("shop::Order::created")
    await expect_event(ws, "shop::Order::created", ["a"])


async def test_pattern_with_a_lone_surrogate_is_invalid_not_a_crash(streams):
    ws = await streams.open()
    # json.dumps escapes the surrogate as \ud800: the frame itself is valid UTF-8.
    await ws.send_to(
        text_data=json.dumps({"type": "subscribe", "id": "p", "pattern": "shop::\ud800"})
    )
    frame = await ws.receive_json_from(timeout=SHORT)
    assert frame["type"] == "error"
    assert frame["code"] in {"invalid_pattern", "bad_request"}
    await assert_open(ws)


async def test_every_frame_is_valid_utf8_even_with_lone_surrogates(streams):
    ws = await streams.open()
    # A lone surrogate echoed in an answer is escaped: the frame is still UTF-8.
    await ws.send_to(text_data=json.dumps({"type": "ping", "id": "\ud800"}))
    text = await ws.receive_from(timeout=TIMEOUT)
    text.encode("utf-8")
    assert json.loads(text) == {"type": "pong", "id": "\ud800"}


async def test_every_frame_is_strict_json(configure, streams):
    configure(EMIT_POLICY=f"{HERE}.emit_shop")
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    # NaN from a client is refused: JSON has none.
    await ws.send_to(text_data='{"type": "emit", "name": "shop::x", "payload": {"v": NaN}}')
    await expect_error(ws, "bad_json")
    # A server-side payload may hold floats JSON cannot carry; the frame is still JSON.
    nan, inf = float("nan"), float("inf")
    event = dispatch("shop::Order::created", {"nan": nan, "inf": inf, "deep": {"v": [-inf]}})
    text = await ws.receive_from(timeout=TIMEOUT)
    frame = strict_json(text)
    assert frame["event"]["id"] == event.id
    assert frame["event"]["payload"] == {"nan": None, "inf": None, "deep": {"v": [None]}}


async def test_without_a_channel_layer_local_connections_still_get_events(configure, streams):
    configure(CHANNEL_LAYER=None)
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    dispatch("shop::Order::created")
    frame = await ws.receive_json_from(timeout=SHORT)
    assert frame["type"] == "event"


async def test_without_a_channel_layer_a_late_subscriber_gets_names_dispatched_before(
    configure, streams
):
    # Nobody wanted shop::Order::created when it was first dispatched; a
    # connection subscribing later must still get it the next time.
    configure(CHANNEL_LAYER=None)
    dispatch("shop::Order::created")
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    dispatch("shop::Order::created")
    frame = await ws.receive_json_from(timeout=SHORT)
    assert frame["event"]["name"] == "shop::Order::created"


# -- EventConsumerMixin ---------------------------------------------------------


class OrderFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
    listens_for = [r"shop::Order::.*"]

    async def connect(self) -> None:
        await self.accept()

    async def on_event(self, event: Event) -> None:
        await self.send_json({"handler": "on_event", "name": event.name, "id": event.id})


class BillingFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
    listens_for = {
        r"billing::invoice::.*": "invoice_changed",
        r"billing::refund::.*": "refund_changed",
    }

    async def connect(self) -> None:
        await self.accept()

    async def invoice_changed(self, event: Event) -> None:
        await self.send_json({"handler": "invoice_changed", "name": event.name})

    async def refund_changed(self, event: Event) -> None:
        await self.send_json({"handler": "refund_changed", "name": event.name})


class RecordingFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
    """Records events with a sync handler; fails on events named ``...::boom``."""

    listens_for = [r"stock::.*"]
    seen: list[str] = []

    async def connect(self) -> None:
        await self.accept()

    def on_event(self, event: Event) -> None:
        if event.name.endswith("::boom"):
            raise RuntimeError("handler failed")
        self.seen.append(event.name)


class OpenFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
    listens_for = [r".*::created"]

    async def connect(self) -> None:
        await self.accept()


class DeclaredFeed(OpenFeed):
    event_namespaces = ["shop"]

    async def on_event(self, event: Event) -> None:
        await self.send_json({"name": event.name})


class MissingHandlerFeed(EventConsumerMixin, AsyncJsonWebsocketConsumer):
    listens_for = {r"shop::.*": "no_such_method"}


async def open_feed(consumer: type[Any]) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(consumer.as_asgi(), "/ws/feed/")
    connected, _ = await communicator.connect(timeout=TIMEOUT)
    assert connected
    return communicator


async def test_mixin_delivers_matching_events_to_on_event():
    feed = await open_feed(OrderFeed)
    try:
        event = dispatch("shop::Order::created")
        dispatch("shop::Invoice::created")
        dispatch("billing::Order::created")
        await adispatch("shop::Order::deleted")
        assert await feed.receive_json_from(timeout=TIMEOUT) == {
            "handler": "on_event",
            "name": "shop::Order::created",
            "id": event.id,
        }
        assert (await feed.receive_json_from(timeout=TIMEOUT))["name"] == "shop::Order::deleted"
        assert await feed.receive_nothing()
    finally:
        await finish(feed)
        await hub_settled()


async def test_mixin_routes_each_pattern_to_its_method():
    feed = await open_feed(BillingFeed)
    try:
        dispatch("billing::invoice::paid")
        dispatch("billing::refund::issued")
        dispatch("billing::payout::sent")
        dispatch("billing::invoice::voided")
        answers = [await feed.receive_json_from(timeout=TIMEOUT) for _ in range(3)]
        assert answers == [
            {"handler": "invoice_changed", "name": "billing::invoice::paid"},
            {"handler": "refund_changed", "name": "billing::refund::issued"},
            {"handler": "invoice_changed", "name": "billing::invoice::voided"},
        ]
        assert await feed.receive_nothing()
    finally:
        await finish(feed)
        await hub_settled()


async def test_mixin_gets_events_only_while_connected():
    await get_hub().attach()
    dispatch("shop::Order::created", {"when": "before"})
    await hub_settled()
    feed = await open_feed(OrderFeed)
    try:
        during = dispatch("shop::Order::created", {"when": "during"})
        assert (await feed.receive_json_from(timeout=TIMEOUT))["id"] == during.id
        assert await feed.receive_nothing()
    finally:
        await finish(feed)
    later = await open_feed(OrderFeed)
    try:
        after = dispatch("shop::Order::created", {"when": "after"})
        assert (await later.receive_json_from(timeout=TIMEOUT))["id"] == after.id
        assert await feed.receive_nothing()
    finally:
        await finish(later)


async def cancel_application(communicator: WebsocketCommunicator) -> None:
    """End a connection as a server that gives up on it does: cancel it, no disconnect."""
    communicator.future.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await communicator.future


async def test_a_cancelled_stream_leaves_the_hub(streams):
    hub = get_hub()
    before = set(hub.subscribers)
    ws = await streams.open()
    await subscribe(ws, "a", r"shop::.*")
    assert len(set(hub.subscribers) - before) == 1
    await cancel_application(ws)
    assert set(hub.subscribers) - before == set()


async def test_a_cancelled_mixin_consumer_leaves_the_hub():
    hub = get_hub()
    await hub.attach()
    before = set(hub.subscribers)
    feed = await open_feed(OrderFeed)
    assert len(set(hub.subscribers) - before) == 1
    await cancel_application(feed)
    assert set(hub.subscribers) - before == set()


async def test_mixin_sync_handler_and_failing_handler_are_logged(caplog):
    caplog.set_level(logging.ERROR, logger="channels_events.consumers")
    RecordingFeed.seen = []
    feed = await open_feed(RecordingFeed)
    try:
        dispatch("stock::item::added")
        dispatch("stock::item::boom")
        dispatch("stock::item::removed")
        await wait_until(lambda: len(RecordingFeed.seen) >= 2)
        assert RecordingFeed.seen == ["stock::item::added", "stock::item::removed"]
        failures = [r for r in caplog.records if r.name == "channels_events.consumers"]
        assert len(failures) == 1
        assert "stock::item::boom" in failures[0].getMessage()
        assert failures[0].exc_info is not None
    finally:
        await finish(feed)
        await hub_settled()
    # A feed connected now gets the next event; the finished one does not.
    later = await open_feed(RecordingFeed)
    try:
        dispatch("stock::item::restocked")
        assert await wait_until(lambda: len(RecordingFeed.seen) >= 3)
        assert not await wait_until(lambda: len(RecordingFeed.seen) > 3, SHORT)
        assert RecordingFeed.seen == [
            "stock::item::added",
            "stock::item::removed",
            "stock::item::restocked",
        ]
    finally:
        await finish(later)


async def test_mixin_pattern_without_literal_namespace_needs_event_namespaces():
    communicator = WebsocketCommunicator(OpenFeed.as_asgi(), "/ws/feed/")
    with pytest.raises(TypeError, match="event_namespaces"):
        await communicator.connect(timeout=SHORT)


async def test_mixin_with_event_namespaces_gets_events_of_those_namespaces():
    feed = await open_feed(DeclaredFeed)
    try:
        dispatch("billing::invoice::created")
        dispatch("shop::Order::updated")
        dispatch("shop::Order::created")
        assert await feed.receive_json_from(timeout=TIMEOUT) == {"name": "shop::Order::created"}
        assert await feed.receive_nothing()
    finally:
        await finish(feed)
        await hub_settled()


async def test_mixin_with_a_missing_handler_method_fails_at_connect():
    communicator = WebsocketCommunicator(MissingHandlerFeed.as_asgi(), "/ws/feed/")
    with pytest.raises(TypeError, match="no_such_method"):
        await communicator.connect(timeout=SHORT)
