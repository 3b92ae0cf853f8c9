"""Tests for channels_events._observers: model events, payloads, transactions and muting."""

from __future__ import annotations

import datetime
import gc
import json
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, ClassVar

import pytest
from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.db.models.signals import post_save
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from channels_events import (
    Dispatcher,
    Event,
    InvalidPayload,
    Observer,
    emit_bulk_event,
    get_dispatcher,
    listen,
    observe,
)
from channels_events._observers import (
    ModelEvent,
    ObserverError,
    get_observation,
    muted_model_events,
    unobserve,
)
from channels_events._payloads import KEPT, PayloadBuilder, secret_names
from channels_events.testing import capture_events
from tests.testapp.models import (
    ApiToken,
    Country,
    Customer,
    Device,
    Item,
    Order,
    Plain,
    Tag,
    Ticket,
)

LIFECYCLE = ("creating", "created", "updating", "updated", "deleting", "deleted")
OBSERVABLE = (Customer, Order, Tag, Ticket, Country, Item, Plain, User, ApiToken, Device)


class Boom(Exception):
    """Raised by tests to roll a transaction back."""


# -- fixtures -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_registry() -> Iterator[None]:
    """Undo whatever a test registered: Observer classes observe and connect globally."""
    dispatcher = get_dispatcher()
    observed_before = {model for model in OBSERVABLE if get_observation(model) is not None}
    registered_before = set(dispatcher.registrations)
    yield
    for registration in dispatcher.registrations:
        if registration not in registered_before:
            dispatcher.disconnect(registration.callback, registration.pattern)
    for model in OBSERVABLE:
        if model not in observed_before:
            unobserve(model)


@pytest.fixture
def observed() -> Iterator[Callable[..., Any]]:
    """Return observe(); every model observed through it is unobserved afterwards."""
    models_: list[type[models.Model]] = []

    def observe_for_test(model: type[models.Model], *args: Any, **kwargs: Any) -> Any:
        observation = observe(model, *args, **kwargs)
        models_.append(model)
        return observation

    yield observe_for_test
    for model in models_:
        unobserve(model)


@pytest.fixture
def listen_to() -> Iterator[Callable[..., list[Event]]]:
    """Connect a recording listener to a pattern; disconnected afterwards."""
    dispatcher = get_dispatcher()
    connected: list[Callable[[Event], None]] = []

    def connect(pattern: str, **options: Any) -> list[Event]:
        calls: list[Event] = []

        def listener(event: Event) -> None:
            calls.append(event)

        dispatcher.connect(listener, pattern, **options)
        connected.append(listener)
        return calls

    yield connect
    for listener in connected:
        dispatcher.disconnect(listener)


class Recording(Observer, abstract=True):
    """An observer recording every hook call as ``(action, event)`` in ``calls``."""

    calls: ClassVar[list[tuple[str, Event]]]

    def creating(self, event: Event) -> None:
        self.calls.append(("creating", event))

    def created(self, event: Event) -> None:
        self.calls.append(("created", event))

    def updating(self, event: Event) -> None:
        self.calls.append(("updating", event))

    def updated(self, event: Event) -> None:
        self.calls.append(("updated", event))

    def deleting(self, event: Event) -> None:
        self.calls.append(("deleting", event))

    def deleted(self, event: Event) -> None:
        self.calls.append(("deleted", event))


def actions(calls: list[tuple[str, Event]]) -> list[str]:
    return [action for action, _event in calls]


def only(events: list[Event], name: str) -> Event:
    matching = [event for event in events if event.name == name]
    assert len(matching) == 1, f"expected one {name!r}, got {[e.name for e in events]!r}"
    return matching[0]


def payload_json(event: Event) -> str:
    # No default= and no encoder: the payload must be JSON-safe as it is.
    return json.dumps(event.payload)


# -- Observer classes ------------------------------------------------------------------


@pytest.mark.django_db
def test_observer_methods_run_once_each_in_lifecycle_order():
    class OrderObserver(Recording):
        model = Order
        calls = []

    order = Order.objects.create(number="A-1")
    order.status = "paid"
    order.save()
    order.delete()

    assert actions(OrderObserver.calls) == list(LIFECYCLE)
    for action, event in OrderObserver.calls:
        assert isinstance(event, ModelEvent)
        assert event.name == f"testapp::Order::{action}"
        assert event.action == action
        assert event.instance is order


@pytest.mark.django_db
def test_observer_namespace_changes_event_names():
    class ShopOrders(Recording):
        model = Order
        namespace = "shop"
        calls = []

    order = Order.objects.create(number="A-1")
    order.delete()

    assert [event.name for _action, event in ShopOrders.calls] == [
        "shop::Order::creating",
        "shop::Order::created",
        "shop::Order::deleting",
        "shop::Order::deleted",
    ]


def test_observer_without_model_is_refused():
    with pytest.raises(ObserverError, match="model"):

        class NoModel(Observer):
            def created(self, event: Event) -> None:
                pass

    assert get_observation(Order) is None


def test_observer_without_hook_methods_is_refused():
    with pytest.raises(ObserverError, match="none of the methods"):

        class NoHooks(Observer):
            model = Order

    assert get_observation(Order) is None


def test_observer_with_m2m_changed_needs_m2m_true():
    with pytest.raises(ObserverError, match="m2m"):

        class TagWatcher(Observer):
            model = Order

            def m2m_changed(self, event: Event) -> None:
                pass

    assert get_observation(Order) is None


@pytest.mark.django_db(transaction=True)
def test_after_commit_observer_runs_created_only_after_commit():
    class LateOrders(Recording):
        model = Order
        after_commit = True
        calls = []

    with transaction.atomic():
        order = Order.objects.create(number="A-1")
        assert actions(LateOrders.calls) == ["creating"]
    assert actions(LateOrders.calls) == ["creating", "created"]
    assert LateOrders.calls[1][1].instance is order


@pytest.mark.django_db(transaction=True)
def test_after_commit_observer_never_runs_created_on_rollback():
    class LateOrders(Recording):
        model = Order
        after_commit = True
        calls = []

    with pytest.raises(Boom), transaction.atomic():
        Order.objects.create(number="A-1")
        raise Boom
    assert actions(LateOrders.calls) == ["creating"]
    assert not Order.objects.exists()


async def test_observer_methods_run_only_where_the_change_happened():
    isolated = Dispatcher()
    heard: list[Event] = []
    isolated.connect(heard.append, r"testapp::Order::created")

    class OrderObserver(Recording):
        model = Order
        dispatcher = isolated
        calls = []

    event = OrderObserver.observation.emit("created", Order(pk=1, number="A-1"), "default")
    assert event is not None
    assert actions(OrderObserver.calls) == ["created"]
    # The same change, as another process that saved it publishes it.
    remote = ModelEvent.from_dict(event.envelope)
    remote.is_remote = True
    await isolated.deliver([remote])
    assert heard == [event, remote]
    assert remote.action == "created"
    assert actions(OrderObserver.calls) == ["created"]


def test_a_model_event_from_another_process_is_a_model_event(observed):
    observed(Order)
    envelope = Event("testapp::Order::updated", {"model": "testapp.order", "pk": 1}).envelope
    # What the hub does with an envelope that came over the channel layer.
    remote = Event.from_dict(envelope)
    assert type(remote) is ModelEvent
    assert remote.action == "updated"
    assert remote.using is None
    unobserve(Order)
    # Positive control: once nobody observes the model, the name is ad hoc again.
    assert type(Event.from_dict(envelope)) is Event


@pytest.mark.django_db
def test_defining_an_observer_again_replaces_its_methods():
    calls: list[str] = []

    def define(version: str) -> None:
        class Reloaded(Observer):
            model = Order

            def created(self, event: Event) -> None:
                calls.append(version)

    define("first")
    define("second")
    Order.objects.create(number="A-1")
    assert calls == ["second"]


# -- observe() / unobserve() -----------------------------------------------------------


@pytest.mark.django_db
def test_observe_dispatches_all_six_actions(observed, listen_to):
    observed(Order)
    heard = listen_to(r"testapp::Order::.*")
    order = Order.objects.create(number="A-1")
    order.status = "paid"
    order.save()
    order.delete()
    assert [event.name for event in heard] == [f"testapp::Order::{a}" for a in LIFECYCLE]


@pytest.mark.django_db
def test_observing_twice_with_same_options_does_not_double_events(observed):
    first = observed(Order, exclude=["notes"])
    second = observed(Order, exclude=["notes"])
    assert second is first
    with capture_events(r"testapp::Order::.*") as events:
        Order.objects.create(number="A-1")
    assert events.names == ["testapp::Order::creating", "testapp::Order::created"]


@pytest.mark.parametrize(
    "options",
    [
        {"namespace": "shop"},
        {"fields": ["number"]},
        {"exclude": ["notes"]},
        {"m2m": True},
        {"payload": lambda instance, action: {}},
    ],
)
def test_observing_again_with_other_options_is_refused(observed, options):
    observation = observed(Order)
    with pytest.raises(ObserverError, match="already observed"):
        observe(Order, **options)
    assert get_observation(Order) is observation


def test_observing_again_with_another_dispatcher_is_refused(observed):
    observed(Order)
    with pytest.raises(ObserverError):
        observe(Order, dispatcher=Dispatcher())


@pytest.mark.django_db
def test_unobserve_stops_events(observed):
    observed(Order)
    assert unobserve(Order) is True
    assert unobserve(Order) is False
    assert get_observation(Order) is None
    with capture_events() as events:
        order = Order.objects.create(number="A-1")
        order.save()
        order.delete()
    assert events == []


@pytest.mark.parametrize("option", ["fields", "exclude"])
def test_unknown_field_names_are_refused(option):
    with pytest.raises(ObserverError, match="no_such_field"):
        observe(Order, **{option: ["number", "no_such_field"]})
    assert get_observation(Order) is None


def test_observe_refuses_a_non_model():
    with pytest.raises(ObserverError):
        observe(object)  # type: ignore[arg-type]


# -- names and payloads ----------------------------------------------------------------


@pytest.mark.django_db
def test_created_payload_is_json_safe(observed):
    observed(Order)
    customer = Customer.objects.create(name="Ada")
    with capture_events() as events:
        order = Order.objects.create(
            number="A-42", customer=customer, total=Decimal("19.90"), notes={"gift": True}
        )
    event = only(events, "testapp::Order::created")
    payload = json.loads(payload_json(event))
    assert payload["model"] == "testapp.order"
    assert payload["pk"] == order.pk
    fields = payload["fields"]
    assert set(fields) == {
        "id",
        "number",
        "customer",
        "status",
        "total",
        "notes",
        "created_at",
        "updated_at",
    }
    assert fields["number"] == "A-42"
    assert fields["customer"] == customer.id
    assert fields["status"] == "new"
    assert fields["total"] == "19.90"
    assert fields["notes"] == {"gift": True}
    assert datetime.datetime.fromisoformat(fields["created_at"]) == order.created_at
    assert datetime.datetime.fromisoformat(fields["updated_at"]) == order.updated_at
    assert "changed" not in payload
    assert "previous" not in payload


@pytest.mark.django_db
def test_decimal_given_as_str_is_a_str_in_the_payload(observed):
    observed(Order)
    with capture_events("testapp::Order::created") as events:
        Order.objects.create(number="A-1", total="19.90")
    assert events[0].payload["fields"]["total"] == "19.90"


@pytest.mark.django_db
def test_uuid_primary_key_is_a_str(observed):
    observed(Ticket)
    with capture_events("testapp::Ticket::created") as events:
        ticket = Ticket.objects.create(title="Broken")
    payload = json.loads(payload_json(events[0]))
    assert isinstance(ticket.pk, uuid.UUID)
    assert payload["pk"] == str(ticket.pk)
    assert payload["fields"] == {"id": str(ticket.pk), "title": "Broken"}


@pytest.mark.django_db
def test_updated_carries_changed_and_previous_of_changed_fields_only(observed):
    observed(Order)
    order = Order.objects.create(number="A-1", total=Decimal("5.00"))
    old_updated_at = order.updated_at.isoformat()
    order.status = "paid"
    with capture_events(r"testapp::Order::updated") as events:
        order.save()
    payload = json.loads(payload_json(events[0]))
    assert payload["fields"]["status"] == "paid"
    assert set(payload["changed"]) == {"status", "updated_at"}
    assert payload["previous"] == {"status": "new", "updated_at": old_updated_at}


@pytest.mark.django_db
@pytest.mark.parametrize("update_fields", [None, ["status"]], ids=["save", "update_fields"])
def test_a_field_never_loaded_is_not_reported_changed(observed, update_fields):
    observed(Order)
    saved = Order.objects.create(number="A-1")
    # Built in Python, not loaded: what the row held before is unknown.
    order = Order(pk=saved.pk, number="A-1", status="paid", created_at=saved.created_at)
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=update_fields)
    assert Order.objects.get(pk=saved.pk).status == "paid"
    payload = events[0].payload
    assert payload["fields"]["status"] == "paid"
    assert payload["changed"] == []
    assert payload["previous"] == {}
    # Once saved, the value is known.
    order.status = "shipped"
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=update_fields)
    assert "status" in events[0].payload["changed"]
    assert events[0].payload["previous"]["status"] == "paid"


@pytest.mark.django_db
def test_update_fields_limits_changed(observed):
    observed(Order)
    order = Order.objects.create(number="A-1")
    order.status = "paid"
    order.number = "not saved"
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=["status"])
    assert events[0].payload["changed"] == ["status"]
    assert events[0].payload["previous"] == {"status": "new"}


@pytest.mark.django_db
def test_a_save_without_changes_reports_only_the_timestamp(observed):
    observed(Order)
    order = Order.objects.create(number="A-1")
    with capture_events(r"testapp::Order::updated") as events:
        order.save()
    assert events[0].payload["changed"] == ["updated_at"]


@pytest.mark.django_db
def test_loaded_instance_reports_changes_against_loaded_values(observed):
    observed(Order)
    pk = Order.objects.create(number="A-1", total=Decimal("19.90")).pk
    order = Order.objects.get(pk=pk)
    order.status = "shipped"
    order.total = Decimal("25.00")
    with capture_events(r"testapp::Order::updated") as events:
        order.save()
    payload = events[0].payload
    assert set(payload["changed"]) == {"status", "total", "updated_at"}
    assert payload["previous"]["status"] == "new"
    assert payload["previous"]["total"] == "19.90"
    assert "number" not in payload["previous"]

    # The values just saved become the new baseline.
    order.status = "delivered"
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=["status"])
    assert events[0].payload["changed"] == ["status"]
    assert events[0].payload["previous"] == {"status": "shipped"}


@pytest.mark.django_db
def test_saving_a_loaded_instance_costs_no_extra_query(observed, django_assert_num_queries):
    observed(Order)
    plain = Plain.objects.get(pk=Plain.objects.create(number="A-1").pk)
    plain.status = "paid"
    with CaptureQueriesContext(connection) as baseline:
        plain.save()

    order = Order.objects.get(pk=Order.objects.create(number="A-1").pk)
    order.status = "paid"
    # A capture makes the -ing events live too: the most work a save can do.
    with capture_events() as events, django_assert_num_queries(len(baseline)):
        order.save()
    assert only(events, "testapp::Order::updated").payload["previous"]["status"] == "new"


@pytest.mark.django_db
def test_deferred_fields_are_left_out_and_not_reported_changed(observed):
    observed(Order)
    pk = Order.objects.create(number="A-1", total=Decimal("5.00")).pk
    order = Order.objects.only("number", "status").get(pk=pk)
    order.status = "paid"
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=["status"])
    payload = events[0].payload
    assert payload["fields"] == {"id": pk, "number": "A-1", "status": "paid"}
    assert payload["changed"] == ["status"]
    assert payload["previous"] == {"status": "new"}


@pytest.mark.django_db
def test_a_save_signal_for_an_instance_with_a_deferred_field_leaves_it_out(observed):
    # Django's own save() of a deferred instance passes update_fields; a
    # post_save sent by other code may not, and must not fail or invent values.
    observed(Order)
    pk = Order.objects.create(number="A-1", total=Decimal("5.00")).pk
    order = Order.objects.defer("notes").get(pk=pk)
    order.status = "paid"
    with capture_events(r"testapp::Order::updated") as events:
        post_save.send(Order, instance=order, created=False, raw=False, using="default")
    payload = events[0].payload
    assert "notes" not in payload["fields"]
    assert payload["fields"]["status"] == "paid"
    assert payload["changed"] == ["status"]
    assert payload["previous"] == {"status": "new"}


@pytest.mark.django_db
def test_a_field_named_twice_is_carried_and_reported_once(observed):
    observed(Order, fields=["status", "number", "status"])
    order = Order.objects.create(number="A-1")
    order.status = "paid"
    with capture_events(r"testapp::Order::updated") as events:
        order.save()
    assert list(events[0].payload["fields"]) == ["status", "number"]
    assert events[0].payload["changed"] == ["status"]


@pytest.mark.django_db
def test_a_created_signal_for_an_instance_with_a_deferred_field_leaves_it_out(observed):
    observed(Order)
    pk = Order.objects.create(number="A-1").pk
    order = Order.objects.defer("notes").get(pk=pk)
    with capture_events(r"testapp::Order::created") as events:
        post_save.send(Order, instance=order, created=True, raw=False, using="default")
    assert "notes" not in events[0].payload["fields"]
    assert events[0].payload["fields"]["number"] == "A-1"
    assert events[0].payload["pk"] == pk


class Row:
    """Stands for a model instance: the builder reads values from ``__dict__`` only."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)


def builder(selected: list[tuple[str, str]], pk: str = "id") -> PayloadBuilder:
    return PayloadBuilder(selected, label="shop.order", pk_attname=pk)


def test_builder_makes_json_safe_payloads_and_keeps_what_a_save_wrote():
    build = builder([("id", "id"), ("customer", "customer_id"), ("at", "at")])
    row = Row(id=7, customer_id=None, at=datetime.datetime(2026, 1, 2, 3, 4, 5))
    fields = {"id": 7, "customer": None, "at": "2026-01-02T03:04:05"}
    assert build.payload(row) == {"model": "shop.order", "pk": 7, "fields": fields}
    assert build.saved(row, created=True) == {"model": "shop.order", "pk": 7, "fields": fields}
    row.customer_id = 3
    assert build.saved(row, created=False) == {
        "model": "shop.order",
        "pk": 7,
        "fields": {**fields, "customer": 3},
        "changed": ["customer"],
        "previous": {"customer": None},
    }
    # The values just written are what the next save compares with.
    row.customer_id = 4
    assert build.saved(row, created=False)["previous"] == {"customer": 3}


def test_builder_reports_no_change_for_values_it_never_saw():
    build = builder([("id", "id"), ("customer", "customer_id"), ("at", "at")])
    for update_fields in (None, ["customer"], ["customer_id", "at"]):
        row = Row(id=7, customer_id=3, at=None)
        payload = build.saved(row, created=False, update_fields=update_fields)
        assert (payload["changed"], payload["previous"]) == ([], {})
        # A value kept for one field does not make the others known.
        row.__dict__[KEPT] = {"customer": 2}
        payload = build.saved(row, created=False, update_fields=update_fields)
        assert (payload["changed"], payload["previous"]) == (["customer"], {"customer": 2})


def test_builder_leaves_out_deferred_fields_and_keeps_their_old_values():
    build = builder([("id", "id"), ("customer", "customer_id"), ("status", "status")])
    row = Row(id=7, status="paid")  # customer_id deferred: not loaded
    row.__dict__[KEPT] = {"id": 7, "customer": 3, "status": "new"}
    payload = build.saved(row, created=False)
    assert payload["fields"] == {"id": 7, "status": "paid"}
    assert (payload["changed"], payload["previous"]) == (["status"], {"status": "new"})
    assert row.__dict__[KEPT] == {"id": 7, "customer": 3, "status": "paid"}


def test_builder_remembers_loaded_values_all_or_those_named():
    build = builder([("id", "id"), ("customer", "customer_id"), ("status", "status")])
    row = Row(id=7, customer_id=3, status="new")
    build.remember(row)
    row.customer_id = 4
    row.status = "paid"
    # As refresh_from_db(fields=[...]) does, which takes attnames too.
    build.remember(row, ["customer_id"])
    payload = build.saved(row, created=False)
    assert (payload["changed"], payload["previous"]) == (["status"], {"status": "new"})


def test_builder_reads_a_primary_key_left_out_of_the_fields():
    build = builder([("title", "title")], pk="uuid")
    key = uuid.uuid4()
    assert build.payload(Row(uuid=key, title="T")) == {
        "model": "shop.order",
        "pk": str(key),
        "fields": {"title": "T"},
    }


def test_builder_takes_any_name_as_data():
    odd = 'it\'s "odd"\n{0}\\'
    build = PayloadBuilder([(odd, odd + "_id")], label=odd, pk_attname=odd + "_id")
    row = Row(**{odd + "_id": 1})
    row.__dict__[KEPT] = {odd: 2}
    assert build.saved(row, created=False, update_fields=[odd + "_id"]) == {
        "model": odd,
        "pk": 1,
        "fields": {odd: 1},
        "changed": [odd],
        "previous": {odd: 2},
    }
    assert row.__dict__[KEPT] == {odd: 1}
    empty = PayloadBuilder([], label="a.b", pk_attname="id")
    assert empty.saved(Row(id=1), created=False) == {
        "model": "a.b",
        "pk": 1,
        "fields": {},
        "changed": [],
        "previous": {},
    }


@pytest.mark.django_db
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_float_fields_that_are_not_json_become_null(observed, value):
    observed(Country)
    with capture_events(r"testapp::Country::created") as events:
        Country.objects.create(code="FR", name="France", area=value)
    assert events[0].payload["fields"]["area"] is None
    payload_json(events[0])


@pytest.mark.django_db
def test_a_save_inside_a_listener_compares_with_the_save_that_ran_it(observed):
    observed(Order)
    seen: list[dict[str, Any]] = []

    class Stamp(Observer):
        model = Order

        def created(self, event: Event) -> None:
            order = event.instance
            order.status = "stamped"
            order.save(update_fields=["status"])

        def updated(self, event: Event) -> None:
            seen.append(event.payload)

    order = Order.objects.create(number="A-1")
    assert [p["changed"] for p in seen] == [["status"]]
    assert seen[0]["previous"] == {"status": "new"}
    # The nested save's values stay the baseline once the outer save returns.
    order.save(update_fields=["status"])
    assert seen[1]["changed"] == []


@pytest.mark.django_db
def test_json_field_mutated_in_place_is_changed(observed):
    observed(Order)
    pk = Order.objects.create(number="A-1", notes={"tags": ["a"]}).pk
    order = Order.objects.get(pk=pk)
    order.notes["tags"].append("b")
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=["notes"])
    assert events[0].payload["changed"] == ["notes"]
    assert events[0].payload["previous"] == {"notes": {"tags": ["a"]}}
    assert events[0].payload["fields"]["notes"] == {"tags": ["a", "b"]}


@pytest.mark.django_db
def test_json_field_of_a_new_instance_mutated_in_place_is_changed(observed):
    observed(Order)
    order = Order.objects.create(number="A-1")
    order.notes["seen"] = True
    with capture_events(r"testapp::Order::updated") as events:
        order.save()
    assert "notes" in events[0].payload["changed"]
    assert events[0].payload["previous"]["notes"] == {}


@pytest.mark.django_db
def test_refresh_from_db_resets_the_previous_values(observed):
    observed(Order)
    order = Order.objects.get(pk=Order.objects.create(number="A-1").pk)
    Order.objects.filter(pk=order.pk).update(status="paid")
    order.refresh_from_db()
    assert order.status == "paid"
    order.status = "shipped"
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=["status"])
    assert events[0].payload["previous"] == {"status": "paid"}


@pytest.mark.django_db
def test_deleted_payload_keeps_the_primary_key(observed):
    observed(Order)
    order = Order.objects.create(number="A-1")
    pk = order.pk
    with capture_events(r"testapp::Order::deleted") as events:
        order.delete()
    assert events[0].payload["pk"] == pk
    assert events[0].payload["fields"]["number"] == "A-1"


# -- secret fields ---------------------------------------------------------------------


@pytest.mark.django_db
def test_secret_looking_fields_are_left_out_by_default(observed):
    observed(Order)
    observed(Customer)
    with capture_events(r"testapp::.*::created") as events:
        customer = Customer.objects.create(name="Ada", api_key="key-123")
        Order.objects.create(number="A-1", customer=customer, secret_note="hush")
    customer_event = only(events, "testapp::Customer::created")
    order_event = only(events, "testapp::Order::created")
    assert customer_event.payload["fields"] == {"id": customer.pk, "name": "Ada"}
    assert "secret_note" not in order_event.payload["fields"]
    assert "key-123" not in payload_json(customer_event)
    assert "hush" not in payload_json(order_event)


@pytest.mark.django_db
def test_secret_fields_named_in_fields_are_included(observed):
    observed(Order, fields=["number", "secret_note"])
    observed(Customer, fields=["name", "api_key"])
    with capture_events(r"testapp::.*::created") as events:
        customer = Customer.objects.create(name="Ada", api_key="key-123")
        Order.objects.create(number="A-1", customer=customer, secret_note="hush")
    assert only(events, "testapp::Customer::created").payload["fields"] == {
        "name": "Ada",
        "api_key": "key-123",
    }
    assert only(events, "testapp::Order::created").payload["fields"] == {
        "number": "A-1",
        "secret_note": "hush",
    }


@pytest.mark.django_db
def test_sensitive_fields_setting_changes_what_is_hidden(observed):
    observed(Order)
    with override_settings(CHANNELS_EVENTS={"SENSITIVE_FIELDS": [r"num\w*"]}):
        with capture_events(r"testapp::Order::created") as events:
            Order.objects.create(number="A-1", secret_note="visible now")
        fields = events[0].payload["fields"]
        assert "number" not in fields
        assert fields["secret_note"] == "visible now"
    with capture_events(r"testapp::Order::created") as events:
        Order.objects.create(number="A-2", secret_note="hidden again")
    fields = events[0].payload["fields"]
    assert fields["number"] == "A-2"
    assert "secret_note" not in fields


@pytest.mark.django_db
def test_a_model_event_whose_payload_cannot_travel_fails_the_save(observed):
    observed(Order)
    heard: list[Event] = []
    get_dispatcher().connect(heard.append, r"testapp::Order::created")
    refused = pytest.raises(InvalidPayload, match=r"payload\['fields'\]\['notes'\]\['n'\]")
    with refused, transaction.atomic():
        Order.objects.create(number="A-1", notes={"n": 2**64})
    assert not Order.objects.exists()  # rolled back with the transaction
    assert heard == []
    Order.objects.create(number="A-2", notes={"n": 2**64 - 1})
    assert [event.payload["fields"]["notes"] for event in heard] == [{"n": 2**64 - 1}]


# -- secrets that names alone do not show ------------------------------------------------

SECRET = "tok-S3CRET"


def envelopes_json(events: list[Event]) -> str:
    return json.dumps([event.envelope for event in events])


@pytest.mark.django_db
def test_a_primary_key_that_looks_secret_is_sent_as_null(observed):
    observed(ApiToken)
    with capture_events(r"testapp::ApiToken::\w+ed") as events:
        token = ApiToken.objects.create(token=SECRET, label="ci")
        token.label = "ci-2"
        token.save()
        token.delete()
    assert events.names == [
        "testapp::ApiToken::created",
        "testapp::ApiToken::updated",
        "testapp::ApiToken::deleted",
    ]
    assert [event.payload["pk"] for event in events] == [None, None, None]
    assert [event.payload["fields"] for event in events] == [
        {"label": "ci"},
        {"label": "ci-2"},
        {"label": "ci-2"},
    ]
    assert SECRET not in envelopes_json(events)


@pytest.mark.django_db
def test_keys_pointing_at_a_secret_primary_key_stay_out(observed):
    observed(Device, m2m=True)
    token = ApiToken.objects.create(token=SECRET)
    with capture_events(r"testapp::Device::.*") as events:
        device = Device.objects.create(name="phone", grant=token)
        device.grants.add(token)
        token.granted_devices.remove(device)  # from the other side
    created = only(events, "testapp::Device::created")
    assert created.payload["pk"] == device.pk
    assert "grant" not in created.payload["fields"]
    changes = [
        (e.payload["action"], e.payload["reverse"], e.payload["pk"], e.payload["pks"])
        for e in events
        if e.name == "testapp::Device::m2m_changed"
    ]
    assert changes == [("add", False, device.pk, None), ("remove", True, None, [device.pk])]
    assert SECRET not in envelopes_json(events)


@pytest.mark.django_db
def test_bulk_events_of_a_model_with_a_secret_primary_key_carry_no_pks(observed):
    with capture_events(r"testapp::ApiToken::.*") as events:
        emit_bulk_event(ApiToken, "bulk_deleted", [SECRET])
        observed(ApiToken, fields=["token"])
        emit_bulk_event(ApiToken, "bulk_deleted", [SECRET])
    assert [event.payload["pks"] for event in events] == [None, [SECRET]]


@pytest.mark.django_db
def test_secret_keys_inside_json_values_are_taken_out(observed):
    observed(Device)
    config = {
        "theme": "dark",
        "apiToken": "t-1",
        "pinned": True,
        "servers": [{"host": "a", "password": "p-1"}, {"host": "b"}],
        "nested": {"otp": "123456", "shipping": "fast", "deeper": {"session_key": "s-1"}},
    }
    with capture_events(r"testapp::Device::(created|updated)") as events:
        device = Device.objects.create(name="d", config=config)
        device.config = {**config, "theme": "light"}
        device.save()
    created, updated = events
    shown = {
        "theme": "dark",
        "pinned": True,
        "servers": [{"host": "a"}, {"host": "b"}],
        "nested": {"shipping": "fast", "deeper": {}},
    }
    assert created.payload["fields"]["config"] == shown
    assert updated.payload["fields"]["config"] == {**shown, "theme": "light"}
    assert updated.payload["changed"] == ["config"]
    assert updated.payload["previous"] == {"config": shown}
    for secret in ("t-1", "p-1", "123456", "s-1"):
        assert secret not in envelopes_json(events)


@pytest.mark.django_db
def test_short_secret_names_match_whole_words_only(observed):
    observed(Device)
    with capture_events(r"testapp::Device::created") as events:
        device = Device.objects.create(
            name="d", pin="1234", shipping="fast", spinner="s", footprint=3
        )
    assert events[0].payload["fields"] == {
        "id": device.pk,
        "name": "d",
        "config": {},
        "shipping": "fast",
        "spinner": "s",
        "footprint": 3,
    }


@pytest.mark.django_db
def test_secrets_listed_in_fields_are_sent_as_they_are(observed):
    observed(ApiToken, fields=["token", "label"])
    observed(Device, fields=["name", "grant", "grants", "config", "pin"], m2m=True)
    with capture_events(r"testapp::.*") as events:
        token = ApiToken.objects.create(token=SECRET, label="ci")
        device = Device.objects.create(name="d", grant=token, config={"jwt": "j"}, pin="1234")
        device.grants.add(token)
    assert only(events, "testapp::ApiToken::created").payload == {
        "model": "testapp.apitoken",
        "pk": SECRET,
        "fields": {"token": SECRET, "label": "ci"},
    }
    assert only(events, "testapp::Device::created").payload["fields"] == {
        "name": "d",
        "grant": SECRET,
        "config": {"jwt": "j"},
        "pin": "1234",
    }
    assert only(events, "testapp::Device::m2m_changed").payload["pks"] == [SECRET]


HIDDEN_NAMES = [
    "password",
    "new_password1",
    "passwordHash",
    "passwd",
    "pwd",
    "passphrase",
    "passcode",
    "client_secret",
    "secretKey",
    "csrftoken",
    "accessToken",
    "api_key",
    "APIKey",
    "apikey",
    "private_key",
    "access_key",
    "signingKey",
    "session_key",
    "pin",
    "user_pin",
    "PIN",
    "pinCode",
    "otp",
    "otp_code",
    "salt",
    "password_salt",
    "jwt",
    "bearer",
    "cookie",
    "sessionCookies",
    "credentials",
    "aws_credential",
    "ssn",
    "credit_card",
    "creditCardNumber",
    "cvv",
    "card_cvv2",
]
SHOWN_NAMES = [
    "name",
    "shipping",
    "spinner",
    "pinned",
    "is_pinned",
    "opinion",
    "footprint",
    "basalt",
    "saltwater",
    "lessons",
    "bearing",
    "credit",
    "card_number",
    "keyboard",
    "monkey",
    "sessions",
]


@pytest.mark.parametrize("name", HIDDEN_NAMES)
def test_the_default_sensitive_fields_hide(name):
    assert secret_names()(name)


@pytest.mark.parametrize("name", SHOWN_NAMES)
def test_the_default_sensitive_fields_leave_alone(name):
    assert not secret_names()(name)


@pytest.mark.django_db
def test_a_setting_that_does_not_compile_does_not_break_settings_changes(observed):
    observed(Order)
    # Settings are applied, then the system checks report the bad pattern.
    with override_settings(CHANNELS_EVENTS={"SENSITIVE_FIELDS": ["("]}):
        pass
    with capture_events(r"testapp::Order::created") as events:
        Order.objects.create(number="A-1", secret_note="hush")
    fields = events[0].payload["fields"]
    assert fields["number"] == "A-1"
    assert "secret_note" not in fields


def test_an_observation_no_longer_used_can_be_collected():
    observation = observe(Order)
    collected = weakref.ref(observation)
    del observation
    gc.collect()
    assert collected() is not None  # observed: held
    unobserve(Order)
    gc.collect()
    assert collected() is None


@pytest.mark.django_db
def test_user_password_never_reaches_a_payload(observed):
    observed(User)
    hashes = []
    with capture_events(r"auth::User::.*") as events:
        user = User.objects.create_user("ada", "ada@example.com", "first-Pa55word")
        hashes.append(user.password)
        user.set_password("second-Pa55word")
        user.save()
        hashes.append(user.password)
        user.first_name = "Ada"
        user.save()
        user.delete()
    assert set(events.names) == {f"auth::User::{action}" for action in LIFECYCLE}
    updated = events.matching(r"auth::User::updated")
    assert "first_name" in updated[-1].payload["changed"]
    for event in events:
        text = payload_json(event)
        assert '"password"' not in text
        assert "first-Pa55word" not in text
        assert "second-Pa55word" not in text
        for hashed in hashes:
            assert hashed not in text
        assert "password" not in event.payload.get("fields", {})
        assert "password" not in event.payload.get("previous", {})
        assert "password" not in event.payload.get("changed", [])


# -- custom payload and envelope -------------------------------------------------------


def order_summary(instance: models.Model, action: str) -> dict[str, Any]:
    return {"number": instance.number, "action": action}


@pytest.mark.django_db
def test_payload_callable_replaces_the_payload(observed):
    observed(Order, payload=order_summary)
    with capture_events(r"testapp::Order::.*") as events:
        order = Order.objects.create(number="A-1")
        order.save()
        order.delete()
    assert [event.payload for event in events] == [
        {"number": "A-1", "action": action} for action in LIFECYCLE
    ]


@pytest.mark.django_db
def test_instance_is_never_serialized(observed):
    observed(Order)
    with capture_events(r"testapp::Order::created") as events:
        order = Order.objects.create(number="A-1")
    event = events[0]
    assert event.instance is order
    envelope = event.to_dict()
    assert set(envelope) == {"id", "name", "namespace", "payload", "timestamp"}
    assert envelope["namespace"] == "testapp"
    text = json.dumps(envelope)
    assert "instance" not in text
    assert "instance" not in envelope["payload"]


# -- created or updated, from _state.adding ------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("model", "make"),
    [
        (Ticket, lambda: Ticket(title="Broken")),
        (Country, lambda: Country(code="FR", name="France")),
    ],
    ids=["uuid-default-pk", "natural-pk"],
)
def test_preset_primary_key_gives_created_then_updated(observed, model, make):
    observed(model)
    label = model.__name__
    instance = make()
    assert instance.pk is not None
    with capture_events(rf"testapp::{label}::.*") as events:
        instance.save()
    assert events.names == [f"testapp::{label}::creating", f"testapp::{label}::created"]
    with capture_events(rf"testapp::{label}::.*") as events:
        instance.save()
    assert events.names == [f"testapp::{label}::updating", f"testapp::{label}::updated"]


# -- transactions ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_listeners_run_at_once_but_publication_waits_for_commit(observed, published, listen_to):
    observed(Order)
    creating = listen_to("testapp::Order::creating")
    created = listen_to("testapp::Order::created")
    with transaction.atomic():
        order = Order.objects.create(number="A-1")
        order.status = "paid"
        order.save()
        assert len(creating) == 1
        assert len(created) == 1
        assert published == []
        order.delete()
        assert published == []
    assert [event.name for event in published] == [
        "testapp::Order::created",
        "testapp::Order::updated",
        "testapp::Order::deleted",
    ]
    assert published[0] is created[0]


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_publishes_nothing(observed, published, listen_to):
    observed(Order)
    created = listen_to("testapp::Order::created")
    with pytest.raises(Boom), transaction.atomic():
        Order.objects.create(number="A-1")
        raise Boom
    assert len(created) == 1
    assert published == []


@pytest.mark.django_db(transaction=True)
def test_rolled_back_savepoint_drops_only_its_own_events(observed, published):
    observed(Order)
    with capture_events(r"testapp::Order::created") as dispatched, transaction.atomic():
        Order.objects.create(number="before")
        with pytest.raises(Boom), transaction.atomic():
            Order.objects.create(number="inside")
            raise Boom
        Order.objects.create(number="after")
    assert [e.payload["fields"]["number"] for e in dispatched] == ["before", "inside", "after"]
    assert [e.payload["fields"]["number"] for e in published] == ["before", "after"]


@pytest.mark.django_db(transaction=True)
def test_ing_events_are_never_published(observed, published, listen_to):
    observed(Order)
    heard = listen_to(r"testapp::Order::.*ing")
    order = Order.objects.create(number="A-1")
    order.save()
    order.delete()
    assert [event.name for event in heard] == [
        "testapp::Order::creating",
        "testapp::Order::updating",
        "testapp::Order::deleting",
    ]
    assert [event.name for event in published] == [
        "testapp::Order::created",
        "testapp::Order::updated",
        "testapp::Order::deleted",
    ]


@pytest.mark.django_db(transaction=True)
def test_listen_after_commit_waits_for_commit(observed):
    observed(Order)
    late: list[Event] = []

    @listen("testapp::Order::(created|deleted)", after_commit=True)
    def on_order(event: Event) -> None:
        late.append(event)

    try:
        with transaction.atomic():
            Order.objects.create(number="A-1")
            assert late == []
        assert [event.name for event in late] == ["testapp::Order::created"]
        with pytest.raises(Boom), transaction.atomic():
            Order.objects.get(number="A-1").delete()
            raise Boom
        assert len(late) == 1
    finally:
        get_dispatcher().disconnect(on_order)


# -- many-to-many ----------------------------------------------------------------------


def make_tags(*pks: int) -> list[Tag]:
    return [Tag.objects.create(pk=pk, name=f"tag-{pk}") for pk in pks]


@pytest.mark.django_db
def test_m2m_add_remove_clear(observed):
    observed(Order, m2m=True)
    red, green, blue = make_tags(500_003, 500_001, 500_002)
    order = Order.objects.create(number="A-1")
    with capture_events(r"testapp::Order::m2m_changed") as events:
        order.tags.add(red, green, blue)
        order.tags.remove(green)
        order.tags.clear()
    assert [json.loads(payload_json(event)) for event in events] == [
        {
            "model": "testapp.order",
            "pk": order.pk,
            "field": "tags",
            "action": action,
            "reverse": False,
            "related_model": "testapp.tag",
            "pks": pks,
        }
        for action, pks in [
            ("add", [500_001, 500_002, 500_003]),
            ("remove", [500_001]),
            ("clear", [500_002, 500_003]),
        ]
    ]
    assert all(event.instance is order for event in events)


@pytest.mark.django_db
def test_m2m_reverse_side(observed):
    observed(Order, m2m=True)
    [tag] = make_tags(500_001)
    first = Order.objects.create(number="A-1")
    second = Order.objects.create(number="A-2")
    with capture_events(r"testapp::Order::m2m_changed") as events:
        tag.orders.add(first, second)
        tag.orders.clear()
    assert [event.payload["action"] for event in events] == ["add", "clear"]
    for event in events:
        assert event.payload["reverse"] is True
        assert event.payload["model"] == "testapp.tag"
        assert event.payload["pk"] == tag.pk
        assert event.payload["related_model"] == "testapp.order"
        assert event.payload["pks"] == sorted([first.pk, second.pk])


@pytest.mark.django_db
def test_m2m_integer_pks_are_sorted_numerically(observed):
    observed(Order, m2m=True)
    tags = make_tags(1_000_000, 999_999)
    order = Order.objects.create(number="A-1")
    with capture_events(r"testapp::Order::m2m_changed") as events:
        order.tags.add(*tags)
    assert events[0].payload["pks"] == [999_999, 1_000_000]


@pytest.mark.django_db
def test_no_m2m_events_without_m2m_true(observed):
    observed(Order)
    [tag] = make_tags(500_001)
    order = Order.objects.create(number="A-1")
    with capture_events() as events:
        order.tags.add(tag)
        tag.orders.remove(order)
        order.tags.set([tag])
        order.tags.clear()
    assert events == []


# -- muting ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_muted_model_events_silences_every_model_inside_the_block(observed):
    observed(Order)
    observed(Customer)
    with capture_events() as events:
        with muted_model_events():
            order = Order.objects.create(number="A-1")
            Customer.objects.create(name="Ada")
            order.delete()
        assert events == []
        Order.objects.create(number="A-2")
    assert events.names == ["testapp::Order::creating", "testapp::Order::created"]


@pytest.mark.django_db
def test_muted_model_events_for_one_model(observed):
    observed(Order)
    observed(Customer)
    with capture_events(r"testapp::.*::created") as events:
        with muted_model_events(Order):
            Order.objects.create(number="A-1")
            Customer.objects.create(name="Ada")
        Order.objects.create(number="A-2")
    assert events.names == ["testapp::Customer::created", "testapp::Order::created"]
    assert events[1].payload["fields"]["number"] == "A-2"


@pytest.mark.django_db
def test_muting_ends_when_the_block_raises(observed):
    observed(Order)
    with pytest.raises(Boom), muted_model_events():
        raise Boom
    with capture_events(r"testapp::Order::created") as events:
        Order.objects.create(number="A-1")
    assert len(events) == 1


@pytest.mark.django_db(transaction=True)
def test_muted_model_events_is_local_to_its_context(observed):
    observed(Order)
    failures: list[BaseException] = []

    def save_elsewhere() -> None:
        try:
            Order.objects.create(number="other-thread")
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    with capture_events(r"testapp::Order::created") as events, muted_model_events():
        Order.objects.create(number="muted")
        thread = threading.Thread(target=save_elsewhere)
        thread.start()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert failures == []
    assert [event.payload["fields"]["number"] for event in events] == ["other-thread"]


def test_user_password_cannot_be_asked_for_by_name():
    with pytest.raises(ObserverError, match="password hash"):
        observe(User, fields=["username", "password"])


@pytest.mark.django_db
def test_update_fields_given_as_attnames_count_as_changed(observed):
    observed(Order)
    customer = Customer.objects.create(name="Ada")
    order = Order.objects.create(number="A-9", customer=customer)
    order.customer_id = None
    with capture_events(r"testapp::Order::updated") as events:
        order.save(update_fields=["customer_id"])
    assert events[0].payload["changed"] == ["customer"]
    assert events[0].payload["previous"] == {"customer": customer.pk}
