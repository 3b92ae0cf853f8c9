"""Tests for channels_events._listeners: @listen, Listener classes and Namespace."""

from __future__ import annotations

import asyncio

import pytest

from channels_events import (
    Dispatcher,
    Event,
    InvalidEventName,
    InvalidPattern,
    Listener,
    Namespace,
    UnknownEventKey,
    listen,
)


class ItemAdded(Event):
    name = "tlisteners::item::added"
    item: int


@pytest.fixture
def d() -> Dispatcher:
    return Dispatcher()


# -- @listen --------------------------------------------------------------------


def test_listen_with_a_pattern_string(d):
    calls = []

    @listen("shop::Order::.*", dispatcher=d)
    def on_order(event):
        calls.append(event.name)

    d.dispatch("shop::Order::created")
    d.dispatch("shop::Customer::created")
    assert calls == ["shop::Order::created"]


def test_listen_returns_the_function_unchanged(d):
    def on_order(event):
        return "result"

    decorated = listen("shop::.*", dispatcher=d)(on_order)
    assert decorated is on_order


def test_listen_with_an_event_class(d):
    seen = []

    @listen(ItemAdded, dispatcher=d)
    def on_item(event):
        seen.append(event)

    event = ItemAdded(item=4)
    d.dispatch(event)
    d.dispatch("tlisteners::item::removed")
    assert seen == [event]


def test_listen_with_a_list_of_patterns(d):
    calls = []

    @listen(["shop::Order::created", ItemAdded], dispatcher=d)
    def on_event(event):
        calls.append(event.name)

    d.dispatch("shop::Order::created")
    d.dispatch("shop::Order::deleted")
    d.dispatch(ItemAdded(item=1))
    assert calls == ["shop::Order::created", "tlisteners::item::added"]


def test_listen_passes_options(d):
    calls = []

    @listen("a::.*", dispatcher=d, priority=5, once=True, namespaces=None)
    def first(event):
        calls.append("first")

    @listen("a::.*", dispatcher=d, filter=lambda e: e.payload.get("ok"))
    def second(event):
        calls.append("second")

    d.dispatch("a::b", {"ok": True})
    d.dispatch("a::b", {"ok": False})
    assert calls == ["first", "second"]


async def test_listen_on_an_async_function(d):
    calls = []

    @listen("a::b", dispatcher=d)
    async def on_event(event):
        await asyncio.sleep(0)
        calls.append(event.name)

    await d.adispatch("a::b")
    assert calls == ["a::b"]


@pytest.mark.parametrize("pattern", ["shop::(", ["shop::ok", "shop::["], ""])
def test_bad_pattern_fails_at_decoration_time(d, pattern):
    with pytest.raises(InvalidPattern):

        @listen(pattern, dispatcher=d)
        def on_event(event):  # pragma: no cover - never connected
            pass

    assert d.registrations == ()


def test_listen_refuses_non_pattern(d):
    with pytest.raises(InvalidPattern):
        listen(["a::b", 42], dispatcher=d)  # type: ignore[list-item]


def test_listen_uses_the_default_dispatcher(default_dispatcher):
    calls = []

    @listen("tlisteners::default::listen")
    def on_event(event):
        calls.append(event.name)

    assert any(r.callback is on_event for r in default_dispatcher.registrations)
    event = Event("tlisteners::default::listen")
    event.local = True
    default_dispatcher.dispatch(event)
    assert calls == ["tlisteners::default::listen"]


# -- Listener classes ----------------------------------------------------------------


def test_listener_subclass_is_registered_at_definition(d):
    calls = []

    class OnOrder(Listener):
        dispatcher = d
        listens_for = ["shop::Order::.*", ItemAdded]

        def handle(self, event):
            calls.append((type(self).__name__, event.name))

    d.dispatch("shop::Order::created")
    d.dispatch(ItemAdded(item=1))
    d.dispatch("shop::Customer::created")
    assert calls == [("OnOrder", "shop::Order::created"), ("OnOrder", "tlisteners::item::added")]
    assert len(OnOrder._registrations) == 2


def test_listener_subclass_options(d):
    calls = []

    class Late(Listener):
        dispatcher = d
        listens_for = ["a::b"]

        def handle(self, event):
            calls.append("late")

    class Early(Listener):
        dispatcher = d
        listens_for = ["a::b"]
        priority = 10
        once = True

        def handle(self, event):
            calls.append("early")

    d.dispatch("a::b")
    d.dispatch("a::b")
    assert calls == ["early", "late", "late"]


async def test_listener_subclass_with_async_handle(d):
    calls = []

    class OnEvent(Listener):
        dispatcher = d
        listens_for = ["a::b"]

        async def handle(self, event):
            await asyncio.sleep(0)
            calls.append(event.name)

    assert OnEvent._registrations[0].is_async
    await d.adispatch("a::b")
    assert calls == ["a::b"]
    d.dispatch("a::b")  # on the loop: scheduled as a task
    await d.drain()
    assert calls == ["a::b", "a::b"]


def test_abstract_listener_is_not_registered(d):
    calls = []

    class Base(Listener, abstract=True):
        dispatcher = d
        listens_for = ["a::b"]

        def handle(self, event):
            calls.append(type(self).__name__)

    assert d.registrations == ()

    class Concrete(Base):
        pass

    d.dispatch("a::b")
    assert calls == ["Concrete"]


def test_abstract_listener_may_omit_listens_for_and_handle(d):
    class Base(Listener, abstract=True):
        dispatcher = d

    assert d.registrations == ()


def test_empty_listens_for_is_refused(d):
    with pytest.raises(TypeError, match="empty listens_for"):

        class Empty(Listener):
            dispatcher = d

            def handle(self, event):  # pragma: no cover
                pass

    assert d.registrations == ()


@pytest.mark.parametrize("patterns", ["a::b", ItemAdded])
def test_single_pattern_for_listens_for_is_refused(d, patterns):
    with pytest.raises(TypeError, match="list of patterns"):

        class Single(Listener):
            dispatcher = d
            listens_for = patterns

            def handle(self, event):  # pragma: no cover
                pass


def test_missing_handle_is_refused(d):
    with pytest.raises(TypeError, match="handle"):

        class NoHandle(Listener):
            dispatcher = d
            listens_for = ["a::b"]

    assert d.registrations == ()


def test_bad_pattern_in_listens_for_is_refused(d):
    with pytest.raises(InvalidPattern):

        class Bad(Listener):
            dispatcher = d
            listens_for = ["a::("]

            def handle(self, event):  # pragma: no cover
                pass

    assert d.registrations == ()


def test_listener_disconnect(d):
    calls = []

    class OnEvent(Listener):
        dispatcher = d
        listens_for = ["a::b", "a::c"]

        def handle(self, event):
            calls.append(event.name)

    assert OnEvent.disconnect() is True
    assert OnEvent.disconnect() is False
    d.dispatch("a::b")
    d.dispatch("a::c")
    assert calls == []
    assert d.registrations == ()


def test_listener_disconnect_with_one_pattern(d):
    class OnEvent(Listener):
        dispatcher = d
        listens_for = ["a::b"]

        def handle(self, event):  # pragma: no cover
            pass

    assert OnEvent.disconnect() is True
    assert d.registrations == ()


@pytest.mark.parametrize("patterns", [["a::b"], ["a::b", "a::c"]])
def test_redefining_a_listener_class_replaces_it(d, patterns):
    calls = []

    def define(label):
        class Reloaded(Listener):
            dispatcher = d
            listens_for = patterns

            def handle(self, event):
                calls.append(label)

        return Reloaded

    define("old")
    define("new")
    assert len(d.registrations) == len(patterns)
    d.dispatch("a::b")
    assert calls == ["new"]


def test_redefining_a_listener_class_with_other_patterns_replaces_it(d):
    calls = []

    def define(label, patterns):
        class Reloaded(Listener):
            dispatcher = d
            listens_for = patterns

            def handle(self, event):
                calls.append(label)

        return Reloaded

    define("old", ["a::b", "a::c"])
    define("new", ["a::b"])
    d.dispatch("a::b")
    d.dispatch("a::c")
    assert calls == ["new"]


def test_listener_uses_the_default_dispatcher(default_dispatcher):
    calls = []

    class OnDefault(Listener):
        listens_for = ["tlisteners::default::class"]

        def handle(self, event):
            calls.append(event.name)

    event = Event("tlisteners::default::class")
    event.local = True
    default_dispatcher.dispatch(event)
    assert calls == ["tlisteners::default::class"]
    assert OnDefault.disconnect() is True
    default_dispatcher.dispatch(event)
    assert calls == ["tlisteners::default::class"]


# -- Namespace ---------------------------------------------------------------------------


@pytest.fixture
def shop(d) -> Namespace:
    return Namespace(
        "shop",
        {"ORDER_CREATED": "Order::created", "PAID": "shop::Order::paid"},
        dispatcher=d,
    )


def test_namespace_attribute_gives_full_name(shop):
    assert shop.namespace == "shop"
    assert shop.ORDER_CREATED == "shop::Order::created"
    assert shop.PAID == "shop::Order::paid"
    assert shop.names == {"ORDER_CREATED": "shop::Order::created", "PAID": "shop::Order::paid"}


def test_namespace_unknown_key(shop):
    with pytest.raises(UnknownEventKey) as info:
        shop.ORDER_SHIPPED  # noqa: B018
    message = str(info.value)
    assert "ORDER_SHIPPED" in message
    assert "ORDER_CREATED" in message
    assert "PAID" in message
    assert isinstance(info.value, AttributeError)
    assert not hasattr(shop, "ORDER_SHIPPED")
    assert getattr(shop, "ORDER_SHIPPED", "fallback") == "fallback"


def test_namespace_dispatch_with_full_and_relative_names(d, shop):
    seen = []
    d.connect(seen.append, "shop::.*")
    first = shop.dispatch(shop.ORDER_CREATED, {"pk": 1})
    second = shop.dispatch("Order::created", {"pk": 2})
    third = shop.dispatch("shop::Order::paid")
    assert [e.name for e in seen] == [
        "shop::Order::created",
        "shop::Order::created",
        "shop::Order::paid",
    ]
    assert seen == [first, second, third]
    assert second.payload == {"pk": 2}


async def test_namespace_adispatch(d, shop):
    seen = []
    d.connect(seen.append, "shop::Order::created")
    event = await shop.adispatch("Order::created", {"pk": 1})
    assert seen == [event]


def test_namespace_listen_relative_pattern_stays_in_namespace(d, shop):
    calls = []

    @shop.listen("Order::.*")
    def on_order(event):
        calls.append(event.name)

    d.dispatch("shop::Order::created")
    d.dispatch("billing::Order::created")
    d.dispatch("shop::Customer::created")
    assert calls == ["shop::Order::created"]
    assert d.namespaces() == (frozenset({"shop"}), False)


def test_namespace_listen_relative_alternation_stays_in_namespace(d, shop):
    calls = []

    @shop.listen("Order::created|Order::paid")
    def on_order(event):
        calls.append(event.name)

    d.dispatch("shop::Order::created")
    d.dispatch("shop::Order::paid")
    d.dispatch("Order::paid")
    assert calls == ["shop::Order::created", "shop::Order::paid"]


def test_namespace_listen_defaults_to_the_whole_namespace(d, shop):
    calls = []

    @shop.listen()
    def on_any(event):
        calls.append(event.name)

    d.dispatch("shop::a")
    d.dispatch("shopping::a")
    d.dispatch("other::shop::a")
    assert calls == ["shop::a"]


def test_namespace_listen_accepts_full_patterns(d, shop):
    calls = []

    @shop.listen(["shop::Order::created", "Order::paid"], priority=3)
    def on_order(event):
        calls.append(event.name)

    d.dispatch(shop.ORDER_CREATED)
    d.dispatch(shop.PAID)
    assert calls == ["shop::Order::created", "shop::Order::paid"]
    assert {r.priority for r in d.registrations} == {3}


def test_namespace_with_special_characters_is_escaped_in_patterns(d):
    ns = Namespace("shop.v2", dispatcher=d)
    calls = []

    @ns.listen("x")
    def on_x(event):
        calls.append(event.name)

    d.dispatch("shopXv2::x")
    d.dispatch("shop.v2::x")
    assert calls == ["shop.v2::x"]


@pytest.mark.parametrize("namespace", ["", "shop::Order", "bad ns", None])
def test_invalid_namespace_is_refused(namespace):
    with pytest.raises(InvalidEventName):
        Namespace(namespace)


@pytest.mark.parametrize("key", ["lower-case", "_private", "1ST", ""])
def test_bad_event_key_is_refused(key):
    with pytest.raises(TypeError, match="public identifier"):
        Namespace("shop", {key: "Order::created"})


def test_bad_event_name_in_namespace_is_refused():
    with pytest.raises(InvalidEventName):
        Namespace("shop", {"BAD": "Order created"})


def test_namespace_dispatch_refuses_non_str_name(shop):
    with pytest.raises(TypeError):
        shop.dispatch(5)  # type: ignore[arg-type]


def test_namespace_uses_the_default_dispatcher(default_dispatcher):
    ns = Namespace("tlisteners", {"PING": "ping"})
    assert ns.dispatcher is default_dispatcher
    calls = []

    @ns.listen("ping")
    def on_ping(event):
        calls.append(event.name)

    with default_dispatcher.muted():
        ns.dispatch(ns.PING)
    assert calls == []
    event = Event(ns.PING)
    event.local = True
    default_dispatcher.dispatch(event)
    assert calls == ["tlisteners::ping"]
