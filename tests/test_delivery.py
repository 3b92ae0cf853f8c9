"""Tests that an event reaches listeners under one set of rules, wherever it came from.

Two hubs with dispatchers of their own share an ``InMemoryChannelLayer``, as
two processes share Redis: what a listener sees of an event published by
the other hub must follow the same rules (priority across sync and async,
``once``, ``filter``, muting, capture, strict) as for an event dispatched
locally, and a name an Event subclass declares is that class everywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer

from channels_events import Dispatcher, Event, InvalidPayload
from channels_events._hub import Hub
from channels_events.testing import capture_events

ALIAS = "deliverytest"


class InvoicePaid(Event):
    name = "tdelivery::invoice::paid"
    invoice: int
    amount: str = "0.00"


class Boom(Exception):
    """Raised by failing test listeners."""


@pytest.fixture
def memory_layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {
        **settings.CHANNEL_LAYERS,
        ALIAS: {"BACKEND": "channels.layers.InMemoryChannelLayer"},
    }
    return get_channel_layer(ALIAS)


@pytest.fixture
async def pair(memory_layer: Any) -> AsyncIterator[tuple[Hub, Hub]]:
    """Two hubs, as if in two processes: ``(sender, receiver)``, both joined to 'tdelivery'."""
    hubs = []
    for _ in range(2):
        dispatcher = Dispatcher()
        hub = Hub(dispatcher=dispatcher, alias=ALIAS)
        dispatcher.add_publisher(hub.publish, accepts=hub.accepts)
        hubs.append(hub)
    sender, receiver = hubs
    # A listener on the namespace makes both hubs join its group.
    for hub in hubs:
        hub.dispatcher.connect(lambda event: None, r"tdelivery::join", dispatch_uid="join")
        await hub.attach()
        await until(lambda hub=hub: "events.tdelivery" in hub.joined_groups, "joining")
    yield sender, receiver
    for hub in hubs:
        await hub.stop()


async def until(condition: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    """Let the loop run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout}s")
        await asyncio.sleep(0.01)


def ordered_listeners(dispatcher: Dispatcher, heard: list[str]) -> None:
    """Connect sync and async listeners at interleaved priorities, recording their order."""

    def sync_high(event: Event) -> None:
        heard.append("sync 10")

    async def async_mid(event: Event) -> None:
        heard.append("async 5")

    def sync_low(event: Event) -> None:
        heard.append("sync 0")

    async def async_last(event: Event) -> None:
        heard.append("async -5")

    dispatcher.connect(sync_high, r"tdelivery::tick", priority=10)
    dispatcher.connect(async_mid, r"tdelivery::tick", priority=5)
    dispatcher.connect(sync_low, r"tdelivery::tick", priority=0)
    dispatcher.connect(async_last, r"tdelivery::tick", priority=-5)


EXPECTED_ORDER = ["sync 10", "async 5", "sync 0", "async -5"]


async def test_remote_events_run_listeners_by_priority_across_sync_and_async(pair):
    sender, receiver = pair
    local: list[str] = []
    remote: list[str] = []
    ordered_listeners(sender.dispatcher, local)
    ordered_listeners(receiver.dispatcher, remote)

    await sender.dispatcher.adispatch("tdelivery::tick", {})
    await until(lambda: len(remote) == 4, "the remote listeners")

    assert local == EXPECTED_ORDER
    assert remote == EXPECTED_ORDER


async def test_once_and_filter_apply_to_remote_events_as_to_local_ones(pair):
    sender, receiver = pair
    for hub in pair:
        seen: list[int] = []
        hub.dispatcher.connect(
            lambda e, seen=seen: seen.append(e.payload["n"]),
            r"tdelivery::tick",
            filter=lambda e: e.payload["n"] % 2 == 1,
            once=True,
        )
        hub.seen = seen  # type: ignore[attr-defined]
    marker: list[int] = []
    receiver.dispatcher.connect(lambda e: marker.append(1), r"tdelivery::done")
    for n in range(4):
        sender.dispatcher.dispatch("tdelivery::tick", {"n": n})
    sender.dispatcher.dispatch("tdelivery::done", {})
    await until(lambda: marker, "the marker event")

    assert sender.seen == [1]  # type: ignore[attr-defined]
    assert receiver.seen == [1]  # type: ignore[attr-defined]


async def test_a_muted_dispatcher_runs_no_listener_for_remote_events_but_captures_them(pair):
    sender, receiver = pair
    heard: list[str] = []
    receiver.dispatcher.connect(lambda e: heard.append(e.name), r"tdelivery::.*")
    with capture_events(dispatcher=receiver.dispatcher) as captured:
        with receiver.dispatcher.muted():
            sender.dispatcher.dispatch("tdelivery::muted", {})
            await until(lambda: captured.names == ["tdelivery::muted"], "the capture")
        # Positive control: unmuted, the same listener hears the next one.
        sender.dispatcher.dispatch("tdelivery::loud", {})
        await until(lambda: heard, "the listener")
    assert heard == ["tdelivery::loud"]
    assert captured.names == ["tdelivery::muted", "tdelivery::loud"]
    assert all(event.is_remote for event in captured)


async def test_strict_mode_raises_for_remote_events_as_for_local_ones(pair):
    _sender, receiver = pair
    receiver.dispatcher.strict = True

    def failing(event: Event) -> None:
        raise Boom(event.name)

    receiver.dispatcher.connect(failing, r"tdelivery::tick")
    local = receiver.dispatcher
    with pytest.raises(Boom):
        local.dispatch("tdelivery::tick", {})
    remote = Event.from_dict(Event("tdelivery::tick", {}).envelope)
    remote.is_remote = True
    with pytest.raises(Boom):
        await receiver.deliver_to_listeners([remote])


async def test_a_listener_can_keep_to_local_events(pair):
    sender, receiver = pair
    local_only: list[Event] = []
    everything: list[Event] = []
    receiver.dispatcher.connect(local_only.append, r"tdelivery::tick", remote=False)
    receiver.dispatcher.connect(everything.append, r"tdelivery::tick")

    sender.dispatcher.dispatch("tdelivery::tick", {"from": "sender"})
    await until(lambda: everything, "the remote event")
    receiver.dispatcher.dispatch("tdelivery::tick", {"from": "receiver"})

    assert [e.payload["from"] for e in everything] == ["sender", "receiver"]
    assert [e.is_remote for e in everything] == [True, False]
    assert [e.payload["from"] for e in local_only] == ["receiver"]


async def test_a_name_an_event_class_declares_is_that_class_in_every_process(pair):
    sender, receiver = pair
    here: list[Event] = []
    there: list[Event] = []
    sender.dispatcher.connect(here.append, InvoicePaid)
    receiver.dispatcher.connect(there.append, InvoicePaid)

    sent = sender.dispatcher.dispatch("tdelivery::invoice::paid", {"invoice": 7})
    await until(lambda: there, "the remote event")

    assert type(sent) is InvoicePaid
    assert [type(e) for e in here + there] == [InvoicePaid, InvoicePaid]
    assert here[0].invoice == there[0].invoice == 7  # type: ignore[attr-defined]
    assert there[0].envelope == sent.envelope
    assert there[0].encoded == sent.encoded


@pytest.mark.parametrize(
    "payload",
    [{}, {"invoice": 1, "colour": "red"}, ["not", "a", "dict"]],
    ids=["missing field", "unknown key", "not a dict"],
)
async def test_a_payload_that_does_not_fit_its_class_raises_at_the_caller(pair, payload):
    sender, receiver = pair
    here: list[Event] = []
    there: list[Event] = []
    sender.dispatcher.connect(here.append, r"tdelivery::.*")
    receiver.dispatcher.connect(there.append, r"tdelivery::.*")

    with pytest.raises(InvalidPayload, match="tdelivery::invoice::paid"):
        sender.dispatcher.dispatch("tdelivery::invoice::paid", payload)
    with pytest.raises(InvalidPayload):
        Event("tdelivery::invoice::paid", payload)
    # Positive control: the next event goes through, and nothing came before it.
    sender.dispatcher.dispatch("tdelivery::after", {})
    await until(lambda: there, "the control event")
    assert [e.name for e in here] == ["tdelivery::after"]
    assert [e.name for e in there] == ["tdelivery::after"]


def test_event_of_a_declared_name_is_built_as_its_class():
    event = Event("tdelivery::invoice::paid", {"invoice": 3})
    assert type(event) is InvoicePaid
    assert event.invoice == 3  # type: ignore[attr-defined]
    assert event.payload == {"invoice": 3, "amount": "0.00"}


def test_an_event_owns_its_wire_form_and_a_received_one_keeps_its_envelope():
    event = Event("tdelivery::tick", {"when": 1.5, "who": "a"})
    assert event.envelope is event.envelope
    assert event.encoded is event.encoded
    wire = {**event.envelope, "payload": {"when": 1.5, "who": "a", "extra": [1]}}
    received = Event.from_dict(wire)
    assert received.envelope == wire
    assert received.envelope["payload"] is wire["payload"]
