"""Tests for channels_events.compat: django-event-system's API, as its README documents it."""

from __future__ import annotations

import threading
import unittest
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.apps import apps
from django.db import connection, transaction
from django.dispatch import Signal
from django.test import override_settings

from channels_events import Event as ChannelsEvent
from channels_events import InvalidEventName, InvalidPattern, get_dispatcher, muted_model_events
from channels_events._compat import _models, forget_model
from channels_events._names import is_valid_name
from channels_events.compat import (
    CompatEvent,
    Dispatcher,
    Event,
    EventListener,
    GetPathFromClass,
    Observer,
    RegisterSignalsFor,
    SignalToEvent,
)
from tests.testapp.models import Country, Customer, Plain, Tag

Call = tuple[Any, ...]
PLAIN = "events::db::tests::testapp::models::Plain"


class Shipped(Event):
    """An event named after its module and class."""


class Paid(Event):
    Name = "tcompat::order::paid"

    def __init__(self, name: str, value: Any, something: Any = None) -> None:
        self.name = name
        self.value = value
        self.something = something


class Shop:
    """A signal sender."""


class Warehouse:
    """Another signal sender."""


@pytest.fixture(autouse=True)
def isolated(default_dispatcher: Any) -> Iterator[None]:
    """Undo what a test registered: handlers, listener and observer classes, and models."""
    registered = set(_models)
    yield
    for model in list(_models):
        if model not in registered:
            forget_model(model)


@pytest.fixture
def record() -> Callable[..., list[Call]]:
    """Register a handler for a regex; return the list of its calls as (name, *args, kwargs)."""

    def register(pattern: Any) -> list[Call]:
        calls: list[Call] = []

        def handler(name: str, *args: Any, **kwargs: Any) -> None:
            calls.append((name, *args, kwargs))

        Dispatcher.RegisterHandler(pattern, handler)
        return calls

    return register


# -- Dispatcher.RegisterHandler and Dispatcher.Dispatch ------------------------------------


def test_a_handler_gets_the_name_and_the_callers_own_objects(record):
    calls = record("tcompat::order::paid")
    order = object()
    lines = [{"sku": "A", "qty": 2}]
    Dispatcher.Dispatch("tcompat::order::paid", order, 7, lines=lines)
    assert calls == [("tcompat::order::paid", order, 7, {"lines": lines})]
    assert calls[0][1] is order
    assert calls[0][3]["lines"] is lines


def test_a_handler_without_arguments_gets_the_name_alone():
    names: list[str] = []

    def handler(name):
        names.append(name)

    Dispatcher.RegisterHandler("tcompat::ping", handler)
    Dispatcher.Dispatch("tcompat::ping")
    assert names == ["tcompat::ping"]


def test_a_regex_must_match_the_whole_name(record):
    exact = record("tcompat::order")
    family = record("tcompat::order(.*)")
    Dispatcher.Dispatch("tcompat::order::paid")
    Dispatcher.Dispatch("tcompat::order")
    Dispatcher.Dispatch("tcompat::orders")
    Dispatcher.Dispatch("tcompat::returns::tcompat::order")
    assert [call[0] for call in exact] == ["tcompat::order"]
    assert [call[0] for call in family] == [
        "tcompat::order::paid",
        "tcompat::order",
        "tcompat::orders",
    ]


def test_each_registration_is_a_delivery():
    calls: list[str] = []

    def handler(name):
        calls.append(name)

    Dispatcher.RegisterHandler("tcompat::twice", handler)
    Dispatcher.RegisterHandler("tcompat::twice", handler)
    Dispatcher.RegisterHandler("tcompat::tw.*", handler)
    Dispatcher.Dispatch("tcompat::twice")
    assert calls == ["tcompat::twice"] * 3


def test_handlers_run_in_registration_order_before_dispatch_returns():
    calls: list[str] = []
    Dispatcher.RegisterHandler("tcompat::.*", lambda name: calls.append("first"))
    Dispatcher.RegisterHandler("tcompat::step", lambda name: calls.append("second"))
    Dispatcher.RegisterHandler("tcompat::.*", lambda name: calls.append("third"))
    Dispatcher.Dispatch("tcompat::step")
    assert calls == ["first", "second", "third"]


def test_a_failing_handler_is_logged_and_the_others_still_run(record, caplog):
    def failing_handler(name, *args):
        raise RuntimeError("handler broke")

    before = record("tcompat::fail")
    Dispatcher.RegisterHandler("tcompat::fail", failing_handler)
    after = record("tcompat::fail")
    Dispatcher.Dispatch("tcompat::fail", 1)
    assert before == after == [("tcompat::fail", 1, {})]
    [failure] = [r for r in caplog.records if r.name == "channels_events"]
    assert "failing_handler" in failure.getMessage()
    assert "tcompat::fail" in failure.getMessage()
    assert failure.exc_info is not None


def test_names_and_regexes_are_checked_where_they_are_given(record):
    with pytest.raises(InvalidEventName):
        Dispatcher.Dispatch("order paid")
    with pytest.raises(InvalidPattern):
        record("tcompat::(")
    with pytest.raises(TypeError):
        Dispatcher.RegisterHandler("tcompat::x", "not callable")  # type: ignore[arg-type]


def test_async_handlers_are_refused():
    async def handler(name):
        pass

    with pytest.raises(TypeError, match="async"):
        Dispatcher.RegisterHandler("tcompat::x", handler)


# -- Event --------------------------------------------------------------------------------


def test_an_event_class_is_named_after_its_module_path_and_class():
    assert Shipped.GetEventName() == "tests::test_compat::Shipped"
    assert GetPathFromClass(Shipped) == "tests::test_compat::Shipped"
    assert str(Shipped) == "tests::test_compat::Shipped"
    assert str(Shipped()) == "tests::test_compat::Shipped"


def test_name_replaces_the_path():
    assert Paid.GetEventName() == str(Paid) == "tcompat::order::paid"
    assert str(Paid("n", 1)) == "tcompat::order::paid"


def test_dispatch_builds_the_event_with_its_own_init_and_delivers_it_before_returning(record):
    calls = record(Paid)
    value = object()
    event = Paid.Dispatch("first", value, something=[1])
    assert isinstance(event, Paid)
    assert (event.name, event.value, event.something) == ("first", value, [1])
    assert calls == [("tcompat::order::paid", event, {})]
    assert calls[0][1] is event


def test_add_listener_registers_for_the_exact_name():
    heard: list[Call] = []

    class Dotted(Event):
        Name = "tcompat::v1.0"

    Dotted.AddListener(lambda name, event: heard.append((name, event)))
    Dispatcher.Dispatch("tcompat::v1x0")
    event = Dotted.Dispatch()
    assert heard == [("tcompat::v1.0", event)]


def test_an_event_class_whose_module_path_is_no_event_name_is_refused():
    with pytest.raises(InvalidEventName, match="Name"):
        type("Order", (Event,), {"__module__": "caf\u00e9.events"})
    named = type("Order", (Event,), {"__module__": "caf\u00e9.events", "Name": "cafe::Order"})
    assert str(named) == "cafe::Order"


def test_the_module_paths_of_installed_models_make_valid_names():
    for model in apps.get_models():
        name = f"events::db::{GetPathFromClass(model)}::created"
        assert is_valid_name(name), name
    order = type("Order", (), {"__module__": "shop.models"})
    assert GetPathFromClass(order) == "shop::models::Order"


# -- EventListener --------------------------------------------------------------------------


def test_a_listener_needs_a_non_empty_list_of_patterns():
    with pytest.raises(TypeError, match="listensFor"):

        class Missing(EventListener):
            def handle(self, event):
                pass

    with pytest.raises(TypeError, match="listensFor"):

        class Empty(EventListener):
            listensFor = []

    with pytest.raises(TypeError, match="listensFor"):

        class Text(EventListener):
            listensFor = "tcompat::.*"  # type: ignore[assignment]

    with pytest.raises(TypeError, match="listensFor"):

        class Other(EventListener):
            listensFor = [42]  # type: ignore[list-item]


def test_a_listener_gets_the_event_or_the_name_and_arguments():
    calls: list[Call] = []

    class Bookkeeping(EventListener):
        listensFor = [Paid, "tcompat::refund::.*"]

        def handle(self, *args, **kwargs):
            calls.append((*args, kwargs))

    event = Paid.Dispatch("n", 5)
    Dispatcher.Dispatch("tcompat::refund::issued", 5, reason="damaged")
    Dispatcher.Dispatch("tcompat::other")
    assert calls == [(event, {}), ("tcompat::refund::issued", 5, {"reason": "damaged"})]


def test_a_listener_runs_once_per_event_whatever_number_of_patterns_match():
    calls: list[str] = []

    class Everything(EventListener):
        listensFor = ["tcompat::.*", "tcompat::both"]

        def handle(self, name):
            calls.append(name)

    Dispatcher.Dispatch("tcompat::both")
    assert calls == ["tcompat::both"]


def test_handle_is_looked_up_at_each_call():
    calls: list[str] = []

    class Swapped(EventListener):
        listensFor = ["tcompat::swap"]

        def handle(self, name):
            calls.append("old")

    Dispatcher.Dispatch("tcompat::swap")
    Swapped.handle = lambda self, name: calls.append("new")  # type: ignore[method-assign]
    Dispatcher.Dispatch("tcompat::swap")
    assert calls == ["old", "new"]


def test_defining_a_listener_again_replaces_it():
    calls: list[str] = []

    def define(tag: str) -> None:
        class Reloaded(EventListener):
            listensFor = ["tcompat::reload"]

            def handle(self, name):
                calls.append(tag)

    define("first")
    define("second")
    Dispatcher.Dispatch("tcompat::reload")
    assert calls == ["second"]


# -- Observer and RegisterSignalsFor ---------------------------------------------------------


def test_an_observer_needs_a_model():
    with pytest.raises(TypeError, match="observes"):

        class Unattached(Observer):
            def created(self, name, instance):
                pass


@pytest.mark.django_db(transaction=True)
def test_observer_methods_run_during_the_save_or_delete_inside_the_transaction():
    calls: list[tuple[str, str, Any, bool, bool]] = []

    class PlainObserver(Observer):
        observes = Plain

        def record(self, action: str, name: str, instance: Any) -> None:
            in_database = Plain.objects.filter(pk=instance.pk).exists()
            calls.append((action, name, instance, connection.in_atomic_block, in_database))

        def creating(self, name, instance):
            self.record("creating", name, instance)

        def created(self, name, instance):
            self.record("created", name, instance)

        def updating(self, name, instance):
            self.record("updating", name, instance)

        def updated(self, name, instance):
            self.record("updated", name, instance)

        def deleting(self, name, instance):
            self.record("deleting", name, instance)

        def deleted(self, name, instance):
            self.record("deleted", name, instance)

    with transaction.atomic():
        plain = Plain.objects.create(number="A-1")
        assert [call[0] for call in calls] == ["creating", "created"]
        plain.status = "paid"
        plain.save()
        plain.delete()
    stored = {"creating": False, "created": True, "updating": True, "updated": True}
    stored.update({"deleting": True, "deleted": False})
    assert calls == [(a, f"{PLAIN}::{a}", plain, True, stored[a]) for a in stored]


@pytest.mark.django_db(transaction=True)
def test_observer_methods_have_run_even_when_the_transaction_rolls_back():
    created: list[Any] = []

    class Rollback(Observer):
        observes = Plain

        def created(self, name, instance):
            created.append(instance)

    with pytest.raises(RuntimeError), transaction.atomic():
        Plain.objects.create(number="A-2")
        raise RuntimeError("roll back")
    assert len(created) == 1
    assert not Plain.objects.exists()


@pytest.mark.django_db
def test_register_signals_for_returns_the_six_names_and_makes_the_model_dispatch_them(record):
    names = RegisterSignalsFor(Customer)
    prefix = "events::db::tests::testapp::models::Customer"
    actions = ("creating", "created", "updating", "updated", "deleting", "deleted")
    assert names == {action: f"{prefix}::{action}" for action in actions}
    assert RegisterSignalsFor(Customer) == names  # again: no second connection
    calls = record("events::db::(.*)::created")
    customer = Customer.objects.create(name="Ada")
    assert calls == [(names["created"], customer, {})]
    assert calls[0][1] is customer


@pytest.mark.django_db
def test_models_nobody_registered_dispatch_nothing(record):
    calls = record("events::db::.*")
    Tag.objects.create(name="new")
    RegisterSignalsFor(Customer)
    Customer.objects.create(name="Ada")
    assert [call[0] for call in calls] == [
        "events::db::tests::testapp::models::Customer::creating",
        "events::db::tests::testapp::models::Customer::created",
    ]


@pytest.mark.django_db
def test_a_preset_primary_key_is_still_a_creation(record):
    RegisterSignalsFor(Country)
    calls = record("events::db::.*")
    Country.objects.create(code="FR", name="France")
    assert [call[0].rpartition("::")[2] for call in calls] == ["creating", "created"]


@pytest.mark.django_db
def test_muted_model_events_silence_registered_models(record):
    RegisterSignalsFor(Customer)
    calls = record("events::db::.*")
    with muted_model_events():
        Customer.objects.create(name="quiet")
    assert calls == []
    Customer.objects.create(name="loud")
    assert len(calls) == 2


def test_register_signals_for_needs_a_concrete_model():
    with pytest.raises(TypeError):
        RegisterSignalsFor(Shop)  # type: ignore[arg-type]


# -- SignalToEvent --------------------------------------------------------------------------


def test_signal_to_event_dispatches_a_name_with_the_signals_arguments(record):
    signal = Signal()
    SignalToEvent(signal, event="tcompat::signal::sent")
    calls = record("tcompat::signal::sent")
    signal.send(sender=Shop, order=42)
    assert calls == [("tcompat::signal::sent", Shop, {"signal": signal, "order": 42})]


def test_signal_to_event_takes_an_event_class_for_its_name(record):
    signal = Signal()
    SignalToEvent(signal, event=Paid)
    calls = record(Paid)
    signal.send(sender=Shop)
    assert calls == [("tcompat::order::paid", Shop, {"signal": signal})]


def test_signal_to_event_with_a_sender_ignores_other_senders(record):
    signal = Signal()
    SignalToEvent(signal, event="tcompat::signal::shop", sender=Shop)
    calls = record("tcompat::signal::.*")
    signal.send(sender=Warehouse)
    signal.send(sender=Shop)
    assert [call[1] for call in calls] == [Shop]


def test_a_hook_chooses_the_event(record):
    signal = Signal()
    hooked: list[Call] = []

    def hook(sender, **kwargs):
        hooked.append((sender, kwargs))
        if kwargs["value"] == 1:
            return "tcompat::when::one"
        if kwargs["value"] == 2:
            return Paid("hook", 2)
        return None

    SignalToEvent(signal, hook=hook)
    calls = record("tcompat::.*")
    signal.send(sender=Shop, value=1)
    signal.send(sender=Shop, value=2)
    signal.send(sender=Shop, value=3)
    assert hooked == [(Shop, {"signal": signal, "value": v}) for v in (1, 2, 3)]
    assert calls[0] == ("tcompat::when::one", Shop, {"signal": signal, "value": 1})
    assert calls[1][0] == "tcompat::order::paid"
    assert isinstance(calls[1][1], Paid) and calls[1][1].value == 2
    assert len(calls) == 2


def test_a_failing_hook_is_logged_and_the_sender_carries_on(record, caplog):
    signal = Signal()

    def hook(sender, **kwargs):
        raise RuntimeError("hook broke")

    SignalToEvent(signal, hook=hook)
    signal.send(sender=Shop)
    assert any(r.exc_info for r in caplog.records if r.name == "channels_events")


def test_signal_to_event_needs_an_event_or_a_hook():
    with pytest.raises(TypeError):
        SignalToEvent(Signal())


def test_signal_to_event_returns_a_function_that_disconnects_it(record):
    signal = Signal()
    disconnect = SignalToEvent(signal, event="tcompat::signal::sent")
    calls = record("tcompat::signal::sent")
    signal.send(sender=Shop)
    assert disconnect() is True
    signal.send(sender=Shop)
    assert len(calls) == 1


# -- ClearQueue -----------------------------------------------------------------------------


def test_everything_dispatched_has_been_delivered_when_clear_queue_returns(record):
    calls = record("tcompat::queued::.*")
    for n in range(3):
        Dispatcher.Dispatch(f"tcompat::queued::e{n}")
    Dispatcher.ClearQueue()
    assert [call[0] for call in calls] == [f"tcompat::queued::e{n}" for n in range(3)]


def test_ensure_queue_is_cleared_returns_what_the_function_returns(record):
    calls = record("tcompat::queued::.*")

    @Dispatcher.EnsureQueueIsCleared
    def work(n):
        Dispatcher.Dispatch("tcompat::queued::work", n)
        return n * 2

    assert work(21) == 42
    assert calls == [("tcompat::queued::work", 21, {})]


def test_events_dispatched_from_another_thread_have_been_delivered(record):
    calls = record("tcompat::thread")
    thread = threading.Thread(target=Dispatcher.Dispatch, args=("tcompat::thread", 1))
    thread.start()
    thread.join()
    Dispatcher.ClearQueue()
    assert calls == [("tcompat::thread", 1, {})]


# -- MocksDispatch and Expect ---------------------------------------------------------------


def run_case(case: type[unittest.TestCase], method: str) -> unittest.TestResult:
    result = unittest.TestResult()
    case(method).run(result)
    return result


def test_expected_events_are_recorded_and_held_back_while_others_are_delivered(record):
    calls = record("tcompat::.*")
    native: list[ChannelsEvent] = []
    get_dispatcher().connect(native.append, "tcompat::.*")

    class Case(unittest.TestCase):
        @Dispatcher.MocksDispatch
        def test_expects(self):
            Dispatcher.Expect("tcompat::expected")
            Dispatcher.Expect(Paid)
            Dispatcher.Dispatch("tcompat::expected", 1)
            self.event = Paid.Dispatch("n", 2)
            Dispatcher.Dispatch("tcompat::other", 3)

    result = run_case(Case, "test_expects")
    assert result.wasSuccessful(), result.failures + result.errors
    assert calls == [("tcompat::other", 3, {})]
    assert [event.name for event in native] == ["tcompat::other"]


def test_handlers_registered_before_the_test_stay_and_nothing_is_held_back_after(record):
    calls = record("tcompat::expected")

    class Case(unittest.TestCase):
        @Dispatcher.MocksDispatch
        def test_expects(self):
            Dispatcher.Expect("tcompat::expected")
            Dispatcher.Dispatch("tcompat::expected", "during")

    assert run_case(Case, "test_expects").wasSuccessful()
    assert calls == []
    Dispatcher.Dispatch("tcompat::expected", "after")
    assert calls == [("tcompat::expected", "after", {})]


def test_an_expected_event_that_never_came_fails_the_test_and_is_named():
    class Case(unittest.TestCase):
        @Dispatcher.MocksDispatch
        def test_expects(self):
            Dispatcher.Expect("tcompat::came")
            Dispatcher.Expect("tcompat::never")
            Dispatcher.Dispatch("tcompat::came")

    result = run_case(Case, "test_expects")
    assert result.errors == []
    [(_, traceback)] = result.failures
    assert "AssertionError" in traceback
    assert "'tcompat::never'" in traceback
    assert "'tcompat::came'" not in traceback


def test_a_mocked_test_returns_what_the_method_returns():
    class Case(unittest.TestCase):
        @Dispatcher.MocksDispatch
        def test_returns(self):
            Dispatcher.Expect("tcompat::expected")
            Dispatcher.Dispatch("tcompat::expected")
            return 42

    assert Case("test_returns").test_returns() == 42


def test_an_error_in_the_test_stops_holding_events_back(record):
    calls = record("tcompat::expected")

    @Dispatcher.MocksDispatch
    def failing():
        Dispatcher.Expect("tcompat::expected")
        raise KeyError("inside the test")

    with pytest.raises(KeyError):
        failing()
    Dispatcher.Dispatch("tcompat::expected")
    assert len(calls) == 1


def test_expected_model_events_are_held_back_from_observers(db):
    calls: list[str] = []

    class Watching(Observer):
        observes = Customer

        def created(self, name, instance):
            calls.append(name)

    @Dispatcher.MocksDispatch
    def test():
        Dispatcher.Expect("events::db::tests::testapp::models::Customer::created")
        Customer.objects.create(name="held")

    test()
    assert calls == []
    Customer.objects.create(name="heard")
    assert calls == ["events::db::tests::testapp::models::Customer::created"]


async def test_async_tests_and_functions_are_decorated_alike(record):
    calls = record("tcompat::.*")

    @Dispatcher.MocksDispatch
    async def expects():
        Dispatcher.Expect("tcompat::expected")
        Dispatcher.Dispatch("tcompat::expected")
        Dispatcher.Dispatch("tcompat::other")
        return "done"

    @Dispatcher.MocksDispatch
    async def never():
        Dispatcher.Expect("tcompat::never")

    @Dispatcher.EnsureQueueIsCleared
    async def work():
        Dispatcher.Dispatch("tcompat::queued")
        return 1

    assert await expects() == "done"
    with pytest.raises(AssertionError, match="tcompat::never"):
        await never()
    assert await work() == 1
    assert [call[0] for call in calls] == ["tcompat::other", "tcompat::queued"]


def test_expect_outside_a_mocked_test_is_an_error():
    with pytest.raises(RuntimeError, match="MocksDispatch"):
        Dispatcher.Expect("tcompat::expected")


# -- channels-events underneath -------------------------------------------------------------


def test_channels_events_listeners_hear_compat_dispatches_with_their_arguments():
    heard: list[ChannelsEvent] = []
    get_dispatcher().connect(heard.append, "tcompat::order::.*")
    order = object()
    Dispatcher.Dispatch("tcompat::order::placed", order, 3, note="gift")
    [event] = heard
    assert isinstance(event, CompatEvent)
    assert event.name == "tcompat::order::placed"
    assert event.args[0] is order
    assert event.kwargs == {"note": "gift"}
    assert event.payload == {"args": [None, 3], "kwargs": {"note": "gift"}}


def test_compat_handlers_hear_channels_events_dispatches_as_the_event(record):
    calls = record("tcompat::native")
    sent = get_dispatcher().dispatch("tcompat::native", {"n": 1})
    assert calls == [("tcompat::native", sent, {})]


def test_compat_handlers_keep_to_events_of_their_own_process():
    Dispatcher.RegisterHandler("tcompat::local", lambda name: None)
    [registration] = get_dispatcher().listeners_for("tcompat::local")
    assert registration.remote is False


def test_compat_events_stay_in_the_process_unless_compat_publish_is_on(published):
    Dispatcher.Dispatch("tcompat::kept", 1)
    assert published == []
    with override_settings(CHANNELS_EVENTS={"COMPAT_PUBLISH": True}):
        Dispatcher.Dispatch("tcompat::sent", 1)
    assert [event.name for event in published] == ["tcompat::sent"]


@pytest.mark.django_db
def test_published_payloads_carry_plain_data_only(published):
    customer = Customer.objects.create(name="Ada", api_key="k")
    secret_holder = Paid("n", {"total": "9.90"}, something=object())
    secret_holder.api_token = "s3cr3t"  # type: ignore[attr-defined]
    with override_settings(CHANNELS_EVENTS={"COMPAT_PUBLISH": True}):
        Dispatcher.Dispatch(
            "tcompat::mixed", customer, object(), secret_holder, note="gift", password="x"
        )
    [event] = published
    assert event.payload == {
        "args": [customer.pk, None, {"name": "n", "value": {"total": "9.90"}}],
        "kwargs": {"note": "gift"},
    }


@pytest.mark.django_db(transaction=True)
def test_published_model_events_wait_for_the_commit_and_before_events_never_leave(published):
    RegisterSignalsFor(Plain)
    with override_settings(CHANNELS_EVENTS={"COMPAT_PUBLISH": True}):
        with transaction.atomic():
            plain = Plain.objects.create(number="A-3")
            assert published == []
        assert [event.name for event in published] == [f"{PLAIN}::created"]
        assert published[0].payload == {"args": [plain.pk], "kwargs": {}}


# -- import paths -------------------------------------------------------------------------------


def test_every_import_path_of_django_event_system_works():
    import channels_events.compat as compat
    import channels_events.compat.events as events
    import channels_events.compat.events.utils as utils

    for name in compat.__all__:
        assert getattr(events, name) is getattr(compat, name), name
    for name in ("GetPathFromClass", "RegisterSignalsFor", "SignalToEvent"):
        assert getattr(utils, name) is getattr(compat, name), name
