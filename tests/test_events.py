"""Tests for channels_events._events: the Event class and its envelope."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import ClassVar

import pytest

from channels_events import Dispatcher, Event, connect, disconnect
from channels_events._events import event_class_for
from channels_events.exceptions import (
    ChannelsEventsError,
    EventClassError,
    InvalidEventName,
    InvalidPayload,
)

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


class InvoicePaid(Event):
    name = "tevents::invoice::paid"
    invoice: int
    amount: str = "0.00"
    currency: str | None = None


class OrderShipped(Event):
    name = "tevents::order::shipped"
    order: int
    carrier: str = "post"
    retries: ClassVar[int] = 3


class NoFields(Event):
    name = "tevents::ping"


# -- ad-hoc events -------------------------------------------------------------


def test_adhoc_event_has_name_payload_and_namespace():
    event = Event("billing::invoice::paid", {"invoice": 7})
    assert event.name == "billing::invoice::paid"
    assert event.namespace == "billing"
    assert event.payload == {"invoice": 7}
    assert event.instance is None
    assert event.local is False


def test_adhoc_event_payload_defaults_to_empty_dict():
    assert Event("billing::x").payload == {}


def test_adhoc_event_accepts_any_mapping_as_payload():
    event = Event("billing::x", MappingProxyType({"a": 1}))
    assert type(event.payload) is dict
    assert event.payload == {"a": 1}


@pytest.mark.parametrize("payload", [[1, 2], "text", 5, ("a", 1)])
def test_adhoc_event_refuses_non_mapping_payload(payload):
    with pytest.raises(InvalidPayload, match="must be a dict") as info:
        Event("billing::x", payload)
    assert isinstance(info.value, TypeError)
    assert "billing::x" in str(info.value)


def test_adhoc_event_validates_its_name():
    with pytest.raises(InvalidEventName):
        Event("billing invoice")


def test_adhoc_event_needs_a_name():
    with pytest.raises(EventClassError, match="needs an event name"):
        Event()


def test_plain_event_refuses_keyword_fields():
    with pytest.raises(EventClassError, match="keyword") as info:
        Event("billing::x", invoice=7)
    assert "invoice" in str(info.value)


# -- subclasses with a fixed name ----------------------------------------------------


def test_subclass_fields_and_defaults():
    event = InvoicePaid(invoice=7)
    assert event.name == "tevents::invoice::paid"
    assert event.namespace == "tevents"
    assert event.invoice == 7
    assert event.amount == "0.00"
    assert event.currency is None
    assert event.payload == {"invoice": 7, "amount": "0.00", "currency": None}


def test_subclass_payload_reflects_fields():
    event = InvoicePaid(invoice=7, amount="12.50")
    assert event.payload == {"invoice": 7, "amount": "12.50", "currency": None}
    event.amount = "99.00"
    assert event.payload["amount"] == "99.00"


def test_subclass_may_compute_its_own_payload():
    class Priced(Event):
        name = "tevents::priced"
        cents: int

        @property
        def payload(self) -> dict[str, object]:
            return {"amount": f"{self.cents / 100:.2f}"}

    class Discounted(Priced):
        name = "tevents::discounted"

    assert Priced(cents=1250).payload == {"amount": "12.50"}
    assert Priced(cents=1250).to_dict()["payload"] == {"amount": "12.50"}
    assert Discounted(cents=5).payload == {"amount": "0.05"}


def test_adhoc_subclass_that_defines_payload_is_refused_when_declared():
    with pytest.raises(EventClassError, match="ad-hoc"):

        class Lazy(Event):
            @property
            def payload(self) -> dict[str, object]:
                return {}


def test_subclass_classvar_is_not_a_field():
    event = OrderShipped(order=1)
    assert event.payload == {"order": 1, "carrier": "post"}
    with pytest.raises(EventClassError, match="unknown"):
        OrderShipped(order=1, retries=5)


def test_subclass_without_fields():
    assert NoFields().payload == {}
    assert NoFields().name == "tevents::ping"


def test_subclass_accepts_its_own_name_positionally():
    assert InvoicePaid("tevents::invoice::paid", invoice=1).invoice == 1


def test_subclass_refuses_another_name():
    with pytest.raises(EventClassError, match="always named"):
        InvoicePaid("tevents::other", invoice=1)


def test_subclass_refuses_payload_dict():
    with pytest.raises(EventClassError, match="keyword arguments"):
        InvoicePaid(None, {"invoice": 1})


def test_subclass_missing_required_field():
    with pytest.raises(EventClassError, match="missing required") as info:
        InvoicePaid(amount="1.00")
    assert "invoice" in str(info.value)


def test_subclass_unknown_field():
    with pytest.raises(EventClassError, match="unknown") as info:
        InvoicePaid(invoice=1, colour="red")
    assert "colour" in str(info.value)
    assert "invoice" in str(info.value)  # the declared fields are listed


@pytest.mark.parametrize(
    "field", ["id", "namespace", "payload", "timestamp", "instance", "local", "_private"]
)
def test_reserved_field_names_are_refused_at_class_definition(field):
    namespace: dict[str, object] = {
        "name": f"tevents::reserved::{field.strip('_')}",
        "__annotations__": {field: "int"},
    }
    with pytest.raises(EventClassError, match="reserved") as info:
        type("Bad", (Event,), namespace)
    assert repr(field) in str(info.value)
    assert event_class_for(f"tevents::reserved::{field.strip('_')}") is Event


@pytest.mark.parametrize("default", [[], {}, set()])
def test_mutable_defaults_are_refused_at_class_definition(default):
    with pytest.raises(EventClassError, match="mutable default"):

        class Bad(Event):
            name = "tevents::mutable"
            items: list[int] = default

    assert event_class_for("tevents::mutable") is Event


def test_immutable_defaults_are_accepted():
    class Good(Event):
        name = "tevents::immutable"
        items: tuple[int, ...] = ()
        tags: frozenset[str] = frozenset()

    assert Good().payload == {"items": (), "tags": frozenset()}


def test_invalid_fixed_name_is_refused_at_class_definition():
    with pytest.raises(InvalidEventName):

        class Bad(Event):
            name = "not a name"


def test_non_str_fixed_name_is_refused():
    with pytest.raises(EventClassError, match="must be a str"):

        class Bad(Event):
            name = 42  # type: ignore[assignment]


def test_duplicate_fixed_name_from_another_class_is_refused():
    with pytest.raises(EventClassError, match="already declared") as info:

        class Impostor(Event):
            name = "tevents::invoice::paid"
            invoice: int

    assert "InvoicePaid" in str(info.value)
    assert event_class_for("tevents::invoice::paid") is InvoicePaid


def test_redeclaring_the_same_class_replaces_it():
    def declare():
        class Reloaded(Event):
            name = "tevents::reloaded"
            value: int

        return Reloaded

    first = declare()
    second = declare()
    assert first is not second
    assert event_class_for("tevents::reloaded") is second


def test_subclass_with_fields_but_no_name_cannot_be_built():
    class Base(Event):
        value: int

    with pytest.raises(EventClassError, match="no name"):
        Base("tevents::base", value=1)


def test_subclass_fields_are_inherited():
    class Base(Event):
        shop: str = "main"

    class Child(Base):
        name = "tevents::child"
        order: int

    assert Child(order=3).payload == {"shop": "main", "order": 3}


# -- envelope ------------------------------------------------------------------------


def test_to_dict_shape():
    event = Event("billing::invoice::paid", {"invoice": 7})
    data = event.to_dict()
    assert list(data) == ["id", "name", "namespace", "payload", "timestamp"]
    assert data["name"] == "billing::invoice::paid"
    assert data["namespace"] == "billing"
    assert data["payload"] == {"invoice": 7}
    assert data["id"] == event.id
    assert data["timestamp"] == event.timestamp


def test_to_dict_of_subclass_carries_fields_as_payload():
    data = InvoicePaid(invoice=7, amount="1.00").to_dict()
    assert data["name"] == "tevents::invoice::paid"
    assert data["namespace"] == "tevents"
    assert data["payload"] == {"invoice": 7, "amount": "1.00", "currency": None}


def test_timestamp_is_iso_8601_utc():
    before = datetime.now(timezone.utc)
    event = Event("billing::x")
    after = datetime.now(timezone.utc)
    stamp = event.to_dict()["timestamp"]
    assert isinstance(stamp, str)
    assert stamp.endswith("+00:00")
    assert "T" in stamp
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    assert before - timedelta(milliseconds=1) <= parsed <= after + timedelta(milliseconds=1)


def test_timestamp_and_id_are_stable():
    event = Event("billing::x")
    assert event.id == event.id
    assert event.timestamp == event.timestamp
    assert event.to_dict() == event.to_dict()


def test_ids_are_26_crockford_characters_unique_and_increasing():
    ids = [Event("billing::x").id for _ in range(5000)]
    assert all(len(i) == 26 for i in ids)
    assert all(set(i) <= CROCKFORD for i in ids)
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_id_starts_with_the_creation_millisecond():
    event = Event("billing::x")
    ms = 0
    for char in event.id[:10]:
        ms = ms * 32 + "0123456789ABCDEFGHJKMNPQRSTVWXYZ".index(char)
    now_ms = datetime.now(timezone.utc).timestamp() * 1000
    assert abs(now_ms - ms) < 5000


def test_instance_is_not_in_the_envelope():
    event = Event("billing::x", {"a": 1})
    event.instance = object()
    data = event.to_dict()
    assert "instance" not in data
    assert "instance" not in data["payload"]


def test_from_dict_round_trip_of_plain_event():
    event = Event("billing::invoice::paid", {"invoice": 7, "lines": [1, 2]})
    copy = Event.from_dict(event.to_dict())
    assert type(copy) is Event
    assert copy.to_dict() == event.to_dict()


def test_from_dict_returns_the_declared_subclass():
    event = InvoicePaid(invoice=7, amount="3.00")
    copy = Event.from_dict(event.to_dict())
    assert type(copy) is InvoicePaid
    assert copy.id == event.id
    assert copy.timestamp == event.timestamp
    assert copy.payload == event.payload
    assert copy.invoice == 7


def test_from_dict_on_the_subclass_itself():
    event = InvoicePaid(invoice=1)
    assert type(InvoicePaid.from_dict(event.to_dict())) is InvoicePaid


def test_from_dict_on_a_subclass_refuses_another_name():
    data = Event("billing::x").to_dict()
    with pytest.raises(InvalidPayload):
        InvoicePaid.from_dict(data)


def test_from_dict_of_unknown_name_gives_plain_event():
    data = {
        "id": "01JD3Z8Q4X1V6T2N9K5M7R0B3C",
        "name": "tevents::never::declared",
        "namespace": "tevents",
        "payload": {"a": 1},
        "timestamp": "2026-11-23T15:04:05.123456+00:00",
    }
    event = Event.from_dict(data)
    assert type(event) is Event
    assert event.id == data["id"]
    assert event.timestamp == data["timestamp"]
    assert event.payload == {"a": 1}
    assert event.to_dict() == data


def test_from_dict_ignores_extra_payload_keys_for_subclass():
    data = InvoicePaid(invoice=7).to_dict()
    data["payload"]["added_in_v2"] = "x"
    event = Event.from_dict(data)
    assert type(event) is InvoicePaid
    assert event.payload == {"invoice": 7, "amount": "0.00", "currency": None}


def test_from_dict_fills_missing_defaulted_fields():
    data = InvoicePaid(invoice=7).to_dict()
    del data["payload"]["amount"]
    assert Event.from_dict(data).amount == "0.00"


def test_from_dict_refuses_missing_required_field():
    data = InvoicePaid(invoice=7).to_dict()
    del data["payload"]["invoice"]
    with pytest.raises(InvalidPayload, match="invoice"):
        Event.from_dict(data)


@pytest.mark.parametrize("key", ["id", "name", "namespace", "payload", "timestamp"])
def test_from_dict_refuses_missing_envelope_key(key):
    data = Event("billing::x").to_dict()
    del data[key]
    with pytest.raises(InvalidPayload, match="missing") as info:
        Event.from_dict(data)
    assert repr(key) in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("payload", [1]), ("payload", "x"), ("id", 5), ("timestamp", None)],
)
def test_from_dict_refuses_wrong_types(key, value):
    data = Event("billing::x").to_dict()
    data[key] = value
    with pytest.raises(InvalidPayload):
        Event.from_dict(data)


def test_from_dict_refuses_a_bad_name():
    data = Event("billing::x").to_dict()
    data["name"] = 5
    with pytest.raises(ChannelsEventsError):
        Event.from_dict(data)
    data["name"] = "bad name"
    with pytest.raises(ChannelsEventsError):
        Event.from_dict(data)


@pytest.mark.parametrize("data", [None, [], "x"])
def test_from_dict_refuses_non_mapping(data):
    with pytest.raises(InvalidPayload):
        Event.from_dict(data)


def test_repr_names_class_and_event():
    text = repr(InvoicePaid(invoice=7))
    assert "InvoicePaid" in text
    assert "tevents::invoice::paid" in text


# -- dispatching -------------------------------------------------------------------------


def test_dispatch_through_a_dispatcher():
    dispatcher = Dispatcher()
    seen = []
    dispatcher.connect(seen.append, InvoicePaid)
    event = InvoicePaid(invoice=1)
    assert event.dispatch(dispatcher) is event
    assert seen == [event]


async def test_adispatch_through_a_dispatcher():
    dispatcher = Dispatcher()
    seen = []

    async def listener(event):
        seen.append(event)

    dispatcher.connect(listener, "tevents::.*")
    event = InvoicePaid(invoice=1)
    assert await event.adispatch(dispatcher) is event
    assert seen == [event]


def test_dispatch_defaults_to_the_default_dispatcher(default_dispatcher):
    seen = []

    def listener(event):
        seen.append(event)

    connect(listener, NoFields)
    event = NoFields()
    event.local = True
    assert event.dispatch() is event
    assert seen == [event]
    assert disconnect(listener) is True


async def test_adispatch_defaults_to_the_default_dispatcher(default_dispatcher):
    seen = []

    async def listener(event):
        seen.append(event)

    connect(listener, NoFields)
    event = NoFields()
    event.local = True
    assert await event.adispatch() is event
    assert seen == [event]
    assert disconnect(listener) is True
