"""Tests for channels_events._signals: any Django signal can become an event."""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.dispatch import Signal

from channels_events import Event, InvalidEventName, signal_to_event
from channels_events.testing import capture_events
from tests.testapp.models import ApiToken

EVENTS = r"tsignals::.*"


class InvoicePaid(Event):
    name = "tsignals::invoice::paid"
    invoice: int
    amount: str = "0.00"


class Unnamed(Event):
    """An Event subclass without a fixed name."""


class Shop:
    """A signal sender."""


class Warehouse:
    """Another signal sender."""


@pytest.fixture
def signal() -> Signal:
    return Signal()


@pytest.fixture
def bridge() -> Iterator[Callable[..., Callable[[], bool]]]:
    """Call signal_to_event(); everything connected through it is disconnected afterwards."""
    undo: list[Callable[[], bool]] = []

    def connect(*args: Any, **kwargs: Any) -> Callable[[], bool]:
        disconnect = signal_to_event(*args, **kwargs)
        undo.append(disconnect)
        return disconnect

    yield connect
    for disconnect in undo:
        disconnect()


def test_name_gets_the_json_safe_keyword_arguments(signal, bridge):
    bridge(signal, "tsignals::order::paid")
    ref = uuid.uuid4()
    when = datetime.datetime(2026, 11, 23, 15, 4, 5, tzinfo=datetime.timezone.utc)
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop, order=42, amount=Decimal("19.90"), when=when, ref=ref)
    assert events.names == ["tsignals::order::paid"]
    assert json.loads(json.dumps(events[0].payload)) == {
        "order": 42,
        "amount": "19.90",
        "when": "2026-11-23T15:04:05+00:00",
        "ref": str(ref),
    }


class Request:
    """Stands for an HttpRequest: an object whose text could carry secrets."""

    def __str__(self) -> str:
        return "<WSGIRequest: GET '/reset?token=s3cr3t'>"


def test_objects_and_secret_looking_arguments_stay_out_of_the_payload(signal, bridge):
    bridge(signal, "tsignals::session::started")
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop, request=Request(), api_key="k-123", user_id=7)
    assert events[0].payload == {"user_id": 7}
    assert "s3cr3t" not in json.dumps(events[0].payload)


def test_secret_looking_keys_stay_out_at_any_depth(signal, bridge):
    bridge(signal, "tsignals::session::started")
    with capture_events(EVENTS) as events:
        signal.send(
            sender=Shop,
            user_id=7,
            passphrase="s3cr3t-1",
            user_pin="s3cr3t-2",
            shipping="fast",
            spinner="on",
            grant=ApiToken(token="s3cr3t-3"),  # a model whose primary key is a secret
            context={
                "ip": "10.0.0.1",
                "jwt": "s3cr3t-4",
                "headers": [{"Cookie": "s3cr3t-5", "Accept": "text/html"}],
                "auth": {"otp": "s3cr3t-6", "footprint": 3},
            },
        )
    assert events[0].payload == {
        "user_id": 7,
        "shipping": "fast",
        "spinner": "on",
        "context": {
            "ip": "10.0.0.1",
            "headers": [{"Accept": "text/html"}],
            "auth": {"footprint": 3},
        },
    }
    assert "s3cr3t" not in json.dumps(events[0].envelope)


def test_an_event_that_cannot_be_built_does_not_break_the_sender(signal, bridge, caplog):
    bridge(signal, hook=lambda sender, **kwargs: 1 / 0)
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop)  # no exception reaches the sender
    assert events == []
    assert "could not build an event" in caplog.text


def test_instance_argument_travels_outside_the_payload(signal, bridge):
    bridge(signal, "tsignals::order::paid")
    thing = object()
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop, instance=thing, order=42)
    assert events[0].instance is thing
    assert events[0].payload == {"order": 42}


def test_event_class_is_built_from_matching_arguments(signal, bridge):
    bridge(signal, InvoicePaid)
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop, invoice=7, amount="9.99", unrelated="ignored")
        signal.send(sender=Shop, invoice=8)
    assert [type(event) for event in events] == [InvoicePaid, InvoicePaid]
    assert [event.payload for event in events] == [
        {"invoice": 7, "amount": "9.99"},
        {"invoice": 8, "amount": "0.00"},
    ]


def test_hook_returning_a_name(signal, bridge):
    seen: list[tuple[Any, dict[str, Any]]] = []

    def hook(sender: Any, **kwargs: Any) -> str:
        seen.append((sender, kwargs))
        return "tsignals::stock::low" if kwargs["left"] < 5 else "tsignals::stock::ok"

    bridge(signal, hook=hook)
    with capture_events(EVENTS) as events:
        signal.send(sender=Warehouse, left=3)
        signal.send(sender=Warehouse, left=10)
    assert events.names == ["tsignals::stock::low", "tsignals::stock::ok"]
    assert [event.payload for event in events] == [{"left": 3}, {"left": 10}]
    assert [sender for sender, _kwargs in seen] == [Warehouse, Warehouse]
    assert seen[0][1]["left"] == 3


def test_hook_returning_an_event_dispatches_that_event(signal, bridge):
    made: list[Event] = []

    def hook(sender: Any, **kwargs: Any) -> Event:
        event = InvoicePaid(invoice=kwargs["invoice"], amount="1.00")
        made.append(event)
        return event

    bridge(signal, hook=hook)
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop, invoice=3)
    assert len(events) == 1
    assert events[0] is made[0]


def test_hook_returning_none_dispatches_nothing(signal, bridge):
    calls: list[Any] = []

    def hook(sender: Any, **kwargs: Any) -> None:
        calls.append(sender)

    bridge(signal, hook=hook)
    with capture_events() as events:
        signal.send(sender=Shop, x=1)
    assert calls == [Shop]
    assert events == []


def test_sender_filters_which_sends_become_events(signal, bridge):
    bridge(signal, "tsignals::shop::opened", sender=Shop)
    with capture_events(EVENTS) as events:
        signal.send(sender=Warehouse, day=1)
        signal.send(sender=Shop, day=2)
    assert [event.payload for event in events] == [{"day": 2}]


def test_connecting_twice_does_not_double_events(signal, bridge):
    def hook(sender: Any, **kwargs: Any) -> str:
        return "tsignals::hooked"

    bridge(signal, "tsignals::named")
    bridge(signal, "tsignals::named")
    bridge(signal, hook=hook)
    bridge(signal, hook=hook)
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop)
    assert sorted(events.names) == ["tsignals::hooked", "tsignals::named"]


def test_different_names_on_one_signal_both_dispatch(signal, bridge):
    bridge(signal, "tsignals::first")
    bridge(signal, "tsignals::second")
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop)
    assert sorted(events.names) == ["tsignals::first", "tsignals::second"]


def test_returned_function_disconnects(signal, bridge):
    disconnect = bridge(signal, "tsignals::order::paid")
    assert disconnect() is True
    with capture_events() as events:
        signal.send(sender=Shop, order=1)
    assert events == []
    assert disconnect() is False


def test_disconnecting_one_mapping_keeps_the_others(signal, bridge):
    first = bridge(signal, "tsignals::first", sender=Shop)
    bridge(signal, "tsignals::second", sender=Shop)
    first()
    with capture_events(EVENTS) as events:
        signal.send(sender=Shop)
    assert events.names == ["tsignals::second"]


def test_both_name_and_hook_is_refused(signal):
    with pytest.raises(TypeError, match="exactly one"):
        signal_to_event(signal, "tsignals::x", hook=lambda sender, **kw: None)
    with capture_events() as events:
        signal.send(sender=Shop)
    assert events == []


def test_neither_name_nor_hook_is_refused(signal):
    with pytest.raises(TypeError, match="exactly one"):
        signal_to_event(signal)


@pytest.mark.parametrize("name", ["bad name", "tsignals::", "::x", "a" * 65, ""])
def test_invalid_name_is_refused(signal, name):
    with pytest.raises(InvalidEventName):
        signal_to_event(signal, name)
    assert not signal.has_listeners()


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("not a signal", "tsignals::x"), {}),
        ((Signal(), Unnamed), {}),
        ((Signal(), 42), {}),
        ((Signal(),), {"hook": "not callable"}),
    ],
    ids=["not-a-signal", "event-class-without-name", "not-a-name", "hook-not-callable"],
)
def test_bad_arguments_raise_type_error(args, kwargs):
    with pytest.raises(TypeError):
        signal_to_event(*args, **kwargs)
