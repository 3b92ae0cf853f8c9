"""Tests for channels_events.compat: django-event-system's API, as its README documents it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.apps import apps
from django.test import override_settings

from channels_events import Event as ChannelsEvent
from channels_events import InvalidEventName, InvalidPattern, get_dispatcher
from channels_events._names import is_valid_name
from channels_events.compat import (
    CompatEvent,
    Dispatcher,
    Event,
    EventListener,
    GetPathFromClass,
)
from tests.testapp.models import Customer

Call = tuple[Any, ...]


class Shipped(Event):
    """An event named after its module and class."""


class Paid(Event):
    Name = "tcompat::order::paid"

    def __init__(self, name: str, value: Any, something: Any = None) -> None:
        self.name = name
        self.value = value
        self.something = something


@pytest.fixture(autouse=True)
def isolated(default_dispatcher: Any) -> None:
    """Undo what a test registered: handlers and listener classes."""


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


# -- import paths -------------------------------------------------------------------------------


def test_every_import_path_of_django_event_system_works():
    import channels_events.compat as compat
    import channels_events.compat.events as events
    import channels_events.compat.events.utils as utils

    for name in compat.__all__:
        assert getattr(events, name) is getattr(compat, name), name
    for name in ("GetPathFromClass",):
        assert getattr(utils, name) is getattr(compat, name), name
