"""Tests for channels_events._dispatcher: matching, ordering, contexts, errors and caching."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.test import override_settings

from channels_events import (
    Dispatcher,
    Event,
    adispatch,
    connect,
    disconnect,
    dispatch,
)
from channels_events.exceptions import InvalidEventName, InvalidPattern
from channels_events.testing import strict_dispatch


class Recorder:
    """A sync listener that records the names of the events it gets."""

    def __init__(self, label: str = "", calls: list[str] | None = None) -> None:
        self.label = label
        self.calls: list[str] = [] if calls is None else calls

    def __call__(self, event: Event) -> None:
        self.calls.append(self.label or event.name)


class Boom(Exception):
    """Raised by failing test listeners."""


def failing(event: Event) -> None:
    raise Boom(f"listener failed on {event.name}")


async def afailing(event: Event) -> None:
    raise Boom(f"async listener failed on {event.name}")


@pytest.fixture
def d() -> Dispatcher:
    return Dispatcher()


@pytest.fixture
def errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR, logger="channels_events")
    return caplog


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "channels_events" and r.levelno >= logging.ERROR]


# -- matching -------------------------------------------------------------------


def test_dispatch_returns_the_event_with_payload(d):
    seen = []
    d.connect(seen.append, "shop::Order::created")
    event = d.dispatch("shop::Order::created", {"pk": 1})
    assert isinstance(event, Event)
    assert event.payload == {"pk": 1}
    assert seen == [event]


def test_dispatch_accepts_an_event(d):
    seen = []
    d.connect(seen.append, "shop::x")
    event = Event("shop::x", {"a": 1})
    assert d.dispatch(event) is event
    assert seen == [event]


def test_pattern_must_match_the_whole_name(d):
    listener = Recorder()
    d.connect(listener, "shop::Order")
    d.dispatch("shop::Order::created")
    d.dispatch("myshop::Order")
    assert listener.calls == []
    d.dispatch("shop::Order")
    assert listener.calls == ["shop::Order"]


def test_namespace_wildcard_does_not_leak_into_longer_namespaces(d):
    listener = Recorder()
    d.connect(listener, "shop::.*")
    d.dispatch("shopping::x")
    d.dispatch("shop")
    d.dispatch("shop::Order::created")
    assert listener.calls == ["shop::Order::created"]


def test_match_everything(d):
    listener = Recorder()
    d.connect(listener, ".*")
    d.dispatch("a")
    d.dispatch("b::c::d")
    assert listener.calls == ["a", "b::c::d"]


def test_event_class_pattern_matches_its_name_literally(d):
    class Dotted(Event):
        name = "tdispatch.v2::dotted"

    listener = Recorder()
    d.connect(listener, Dotted)
    d.dispatch("tdispatchXv2::dotted")
    d.dispatch(Dotted())
    assert listener.calls == ["tdispatch.v2::dotted"]


def test_compiled_regex_pattern(d):
    listener = Recorder()
    d.connect(listener, re.compile(r"shop::\w+"))
    d.dispatch("shop::a")
    d.dispatch("shop::a::b")
    assert listener.calls == ["shop::a"]


def test_list_of_patterns(d):
    listener = Recorder()
    d.connect(listener, ["shop::a", "billing::.*"])
    d.dispatch("shop::a")
    d.dispatch("shop::b")
    d.dispatch("billing::x")
    assert listener.calls == ["shop::a", "billing::x"]
    assert len(d.registrations) == 2


# -- order ----------------------------------------------------------------------------


def test_priority_then_registration_order(d):
    calls: list[str] = []
    d.connect(Recorder("first-0", calls), "a::b")
    d.connect(Recorder("high-10", calls), "a::.*", priority=10)
    d.connect(Recorder("second-0", calls), ".*")
    d.connect(Recorder("low", calls), "a::b", priority=-5)
    d.connect(Recorder("also-10", calls), "a::b", priority=10)
    d.dispatch("a::b")
    assert calls == ["high-10", "also-10", "first-0", "second-0", "low"]
    assert [r.priority for r in d.registrations] == [10, 10, 0, 0, -5]


# -- once -------------------------------------------------------------------------------


def test_once_listener_is_called_once_and_removed(d):
    listener = Recorder()
    d.connect(listener, "a::b", once=True)
    d.dispatch("a::b")
    d.dispatch("a::b")
    assert listener.calls == ["a::b"]
    assert d.registrations == ()


def test_once_listener_is_not_used_up_by_a_rejecting_filter(d):
    listener = Recorder()
    d.connect(listener, "a::b", once=True, filter=lambda e: e.payload.get("go"))
    d.dispatch("a::b", {"go": False})
    d.dispatch("a::b", {"go": True})
    d.dispatch("a::b", {"go": True})
    assert listener.calls == ["a::b"]


def test_once_listener_is_called_once_across_threads(d):
    calls: list[int] = []

    def listener(event):
        calls.append(threading.get_ident())

    def slow_filter(event):
        # Keeps every thread between "found the listener" and "claimed it" at once.
        time.sleep(0.01)
        return True

    d.connect(listener, "a::b", once=True, filter=slow_filter)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    problems: list[BaseException] = []

    def worker():
        try:
            barrier.wait()
            for _ in range(50):
                d.dispatch("a::b")
        except BaseException as exc:  # pragma: no cover - reported below
            problems.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert problems == []
    assert len(calls) == 1


async def test_once_async_listener_is_called_once_under_concurrent_adispatch(d):
    calls: list[str] = []

    async def listener(event):
        await asyncio.sleep(0.01)
        calls.append(event.name)

    d.connect(listener, "a::b", once=True)
    await asyncio.gather(*(d.adispatch("a::b") for _ in range(10)))
    assert calls == ["a::b"]


# -- connect / disconnect ------------------------------------------------------------


def test_connecting_the_same_callback_and_pattern_twice_registers_once(d):
    listener = Recorder()
    d.connect(listener, "a::b")
    d.connect(listener, "a::b")
    assert len(d.registrations) == 1
    d.dispatch("a::b")
    assert listener.calls == ["a::b"]


def test_connecting_a_bound_method_twice_registers_once(d):
    class Handler:
        def __init__(self):
            self.calls = []

        def on_event(self, event):
            self.calls.append(event.name)

    handler = Handler()
    d.connect(handler.on_event, "a::b")
    d.connect(handler.on_event, "a::b")
    d.dispatch("a::b")
    assert handler.calls == ["a::b"]
    assert d.disconnect(handler.on_event) is True
    assert d.registrations == ()


def test_builtin_bound_method_is_deduplicated_and_disconnected(d):
    seen: list[Event] = []
    d.connect(seen.append, "a::b")
    d.connect(seen.append, "a::b")
    assert len(d.registrations) == 1
    assert d.disconnect(seen.append) is True
    d.dispatch("a::b")
    assert seen == []


def test_same_callback_with_another_pattern_is_a_second_registration(d):
    listener = Recorder()
    d.connect(listener, "a::b")
    d.connect(listener, "a::c")
    d.dispatch("a::b")
    d.dispatch("a::c")
    assert listener.calls == ["a::b", "a::c"]


def test_dispatch_uid_keeps_the_first_registration_as_django_does(d):
    first, second = Recorder("first"), Recorder("second")
    kept = d.connect(first, "a::b", dispatch_uid="my-uid")
    again = d.connect(second, "a::b", dispatch_uid="my-uid")
    d.dispatch("a::b")
    assert first.calls == ["first"]
    assert second.calls == []
    assert again == kept
    assert len(d.registrations) == 1


def test_disconnect_by_dispatch_uid(d):
    listener = Recorder()
    d.connect(listener, "a::b", dispatch_uid="uid-1")
    d.connect(listener, ["a::c", "a::d"], dispatch_uid="uid-2")
    assert d.disconnect(dispatch_uid="uid-2") is True
    assert [r.pattern for r in d.registrations] == ["a::b"]
    assert d.disconnect(dispatch_uid="uid-2") is False
    assert d.disconnect(dispatch_uid="uid-1") is True
    assert d.registrations == ()


def test_dispatch_uid_keeps_the_first_registrations_whatever_the_number_of_patterns(d):
    listener = Recorder()
    d.connect(listener, ["a::b", "a::c"], dispatch_uid="my-uid")
    d.connect(listener, "a::d", dispatch_uid="my-uid")
    d.dispatch("a::b")
    d.dispatch("a::c")
    d.dispatch("a::d")
    assert listener.calls == ["a::b", "a::c"]


def test_connecting_a_callback_again_keeps_its_first_options(d):
    order: list[str] = []
    d.connect(lambda e: order.append("low"), "a::b", priority=1)
    listener = Recorder("listener")
    d.connect(listener, "a::b", priority=0)
    d.connect(listener, "a::b", priority=5)
    d.dispatch("a::b")
    assert listener.calls == ["listener"]
    assert [r.priority for r in d.registrations] == [1, 0]


def test_disconnect_callback_and_pattern(d):
    listener = Recorder()
    d.connect(listener, ["a::b", "a::c"])
    assert d.disconnect(listener, "a::b") is True
    assert d.disconnect(listener, "a::b") is False
    d.dispatch("a::b")
    d.dispatch("a::c")
    assert listener.calls == ["a::c"]


def test_disconnect_callback_from_every_pattern(d):
    listener, other = Recorder(), Recorder()
    d.connect(listener, ["a::b", "a::c"])
    d.connect(other, "a::b")
    assert d.disconnect(listener) is True
    assert d.disconnect(listener) is False
    d.dispatch("a::b")
    d.dispatch("a::c")
    assert listener.calls == []
    assert other.calls == ["a::b"]


def test_disconnect_event_class_pattern(d):
    class Ping(Event):
        name = "tdispatch::ping"

    listener = Recorder()
    d.connect(listener, Ping)
    assert d.disconnect(listener, Ping) is True
    d.dispatch(Ping())
    assert listener.calls == []


def test_disconnect_unknown_listener_returns_false(d):
    assert d.disconnect(Recorder()) is False
    assert d.disconnect(dispatch_uid="nothing") is False


def test_disconnect_needs_a_callback_or_uid(d):
    with pytest.raises(TypeError):
        d.disconnect()


def test_clear_disconnects_everything(d):
    listener = Recorder()
    d.connect(listener, ".*")
    d.dispatch("a::b")
    d.clear()
    d.dispatch("a::b")
    assert listener.calls == ["a::b"]
    assert d.registrations == ()


# -- bad input ---------------------------------------------------------------------------


def _bad_connects():
    ok = Recorder()

    class Unnamed(Event):
        pass

    return [
        ((object(), "a::b"), {}, TypeError, "callable"),
        ((ok, "a::b"), {"priority": True}, TypeError, "priority"),
        ((ok, "a::b"), {"priority": "1"}, TypeError, "priority"),
        ((ok, "a::b"), {"filter": 5}, TypeError, "filter"),
        ((ok, "a::("), {}, InvalidPattern, "does not compile"),
        ((ok, ["a::b", "a::("]), {}, InvalidPattern, "does not compile"),
        ((ok, ""), {}, InvalidPattern, "empty"),
        ((ok, []), {}, InvalidPattern, "No pattern"),
        ((ok, re.compile("a::b", re.IGNORECASE)), {}, InvalidPattern, "flags"),
        ((ok, Unnamed), {}, InvalidPattern, "no fixed name"),
        ((ok, int), {}, InvalidPattern, "must be a str"),
        ((ok, ".*"), {"namespaces": "shop"}, TypeError, "list"),
        ((ok, ".*"), {"namespaces": ["bad ns"]}, InvalidEventName, "bad ns"),
    ]


@pytest.mark.parametrize(("args", "options", "error", "message"), _bad_connects())
def test_bad_connect_raises_and_registers_nothing(d, args, options, error, message):
    existing = Recorder()
    d.connect(existing, "a::b")
    before = d.registrations
    with pytest.raises(error, match=message):
        d.connect(*args, **options)
    assert d.registrations == before
    d.dispatch("a::b")
    assert existing.calls == ["a::b"]


def test_dispatch_refuses_bad_names(d):
    with pytest.raises(InvalidEventName):
        d.dispatch("not valid")
    with pytest.raises(InvalidEventName):
        d.dispatch("a::b::")
    with pytest.raises(InvalidEventName):
        d.dispatch(5)  # type: ignore[arg-type]


def test_dispatch_refuses_event_with_separate_payload(d):
    with pytest.raises(TypeError, match="payload"):
        d.dispatch(Event("a::b"), {"x": 1})


# -- contexts: sync dispatch -------------------------------------------------------------


def test_sync_dispatch_in_a_thread_without_loop_runs_both_kinds(d):
    calls: list[str] = []

    def sync_listener(event):
        calls.append("sync")

    async def async_listener(event):
        await asyncio.sleep(0.01)
        calls.append("async")

    d.connect(async_listener, "a::b", priority=1)
    d.connect(sync_listener, "a::b")
    result: dict[str, object] = {}

    def worker():
        d.dispatch("a::b")
        result["after"] = list(calls)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=30)
    assert result["after"] == ["async", "sync"]


async def test_sync_dispatch_under_sync_to_async_runs_async_listener_on_outer_loop(d):
    loop = asyncio.get_running_loop()
    seen: dict[str, object] = {}

    async def async_listener(event):
        await asyncio.sleep(0.01)
        seen["loop"] = asyncio.get_running_loop()
        seen["done"] = True

    def sync_listener(event):
        seen["sync_thread"] = threading.get_ident()

    d.connect(async_listener, "a::b")
    d.connect(sync_listener, "a::b")

    def work():
        d.dispatch("a::b")
        return dict(seen)

    snapshot = await sync_to_async(work)()
    assert snapshot.get("done") is True
    assert snapshot["loop"] is loop
    assert snapshot["sync_thread"] != threading.get_ident()


@pytest.mark.timeout(10)
async def test_sync_dispatch_on_the_loop_schedules_async_listeners(d):
    calls: list[str] = []
    loop_thread = threading.get_ident()

    def sync_listener(event):
        calls.append(f"sync:{threading.get_ident() == loop_thread}")

    async def async_listener(event):
        await asyncio.sleep(0.01)
        calls.append(f"async:{threading.get_ident() == loop_thread}")

    d.connect(sync_listener, "a::b")
    d.connect(async_listener, "a::b")
    d.dispatch("a::b")
    # The async listener cannot run until this coroutine yields to the loop.
    assert calls == ["sync:True"]
    await d.drain()
    assert calls == ["sync:True", "async:True"]


async def test_failure_of_scheduled_async_listener_is_logged(d, errors):
    after = Recorder()
    d.connect(afailing, "a::b")
    d.connect(after, "a::b")
    d.dispatch("a::b")
    await d.drain()
    assert after.calls == ["a::b"]
    [record] = failures(errors)
    assert "a::b" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


async def test_drain_with_nothing_scheduled_returns(d):
    await asyncio.wait_for(d.drain(), timeout=5)


# -- contexts: adispatch ----------------------------------------------------------------


async def test_adispatch_runs_sync_listeners_off_the_loop_in_priority_order(d):
    loop_thread = threading.get_ident()
    calls: list[tuple[str, bool]] = []

    def make_sync(label):
        def listener(event):
            calls.append((label, threading.get_ident() == loop_thread))

        return listener

    def make_async(label):
        async def listener(event):
            await asyncio.sleep(0)
            calls.append((label, threading.get_ident() == loop_thread))

        return listener

    d.connect(make_async("async-0"), "a::b", priority=0)
    d.connect(make_sync("sync-30"), "a::b", priority=30)
    d.connect(make_sync("sync-10"), "a::b", priority=10)
    d.connect(make_async("async-20"), "a::b", priority=20)
    d.connect(make_sync("sync-25"), "a::b", priority=25)
    event = await d.adispatch("a::b", {"x": 1})
    assert event.payload == {"x": 1}
    assert calls == [
        ("sync-30", False),
        ("sync-25", False),
        ("async-20", True),
        ("sync-10", False),
        ("async-0", True),
    ]


async def test_adispatch_awaits_async_listeners_before_returning(d):
    done: list[str] = []

    async def slow(event):
        await asyncio.sleep(0.05)
        done.append(event.name)

    d.connect(slow, "a::b")
    await d.adispatch("a::b")
    assert done == ["a::b"]


async def test_adispatch_applies_filter(d):
    calls: list[str] = []

    async def listener(event):
        calls.append(event.payload["n"])

    d.connect(listener, "a::b", filter=lambda e: e.payload["n"] > 1)
    await d.adispatch("a::b", {"n": 1})
    await d.adispatch("a::b", {"n": 2})
    assert calls == [2]


async def test_module_level_adispatch_uses_default_dispatcher(default_dispatcher):
    seen: list[Event] = []

    async def listener(event):
        seen.append(event)

    connect(listener, "tdispatch::module::adispatch")
    event = Event("tdispatch::module::adispatch")
    event.local = True
    assert await adispatch(event) is event
    assert seen == [event]


def test_module_level_functions_use_default_dispatcher(default_dispatcher):
    seen: list[Event] = []

    def listener(event):
        seen.append(event)

    connect(listener, "tdispatch::module::dispatch")
    assert any(r.callback is listener for r in default_dispatcher.registrations)
    event = Event("tdispatch::module::dispatch")
    event.local = True
    assert dispatch(event) is event
    assert seen == [event]
    assert disconnect(listener) is True
    assert not any(r.callback is listener for r in default_dispatcher.registrations)
    dispatch(event)
    assert seen == [event]


# -- errors ---------------------------------------------------------------------------------


def test_failing_listener_is_logged_and_others_still_run(d, errors):
    after = Recorder()
    d.connect(failing, "a::b", priority=1)
    d.connect(after, "a::b")
    event = d.dispatch("a::b")
    assert isinstance(event, Event)
    assert after.calls == ["a::b"]
    [record] = failures(errors)
    assert "'a::b'" in record.getMessage()
    assert "failing" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], Boom)


def test_failing_async_listener_in_thread_is_logged(d, errors):
    after = Recorder()
    d.connect(afailing, "a::b", priority=1)
    d.connect(after, "a::b")
    d.dispatch("a::b")
    assert after.calls == ["a::b"]
    [record] = failures(errors)
    assert "a::b" in record.getMessage()


async def test_failing_listeners_under_adispatch_are_logged(d, errors):
    after = Recorder()
    d.connect(failing, "a::b", priority=2)
    d.connect(afailing, "a::b", priority=1)
    d.connect(after, "a::b")
    await d.adispatch("a::b")
    assert after.calls == ["a::b"]
    records = failures(errors)
    assert len(records) == 2
    assert all("a::b" in r.getMessage() for r in records)


def test_failing_filter_is_logged_and_listener_skipped(d, errors):
    listener, after = Recorder(), Recorder()

    def bad_filter(event):
        raise Boom("filter")

    d.connect(listener, "a::b", filter=bad_filter)
    d.connect(after, "a::b")
    d.dispatch("a::b")
    assert listener.calls == []
    assert after.calls == ["a::b"]
    [record] = failures(errors)
    assert "a::b" in record.getMessage()


def test_filter_selects_events(d):
    listener = Recorder()
    d.connect(listener, "a::.*", filter=lambda e: e.payload.get("vip"))
    d.dispatch("a::x", {"vip": False})
    d.dispatch("a::y", {"vip": True})
    d.dispatch("a::z")
    assert listener.calls == ["a::y"]


# -- strict mode -------------------------------------------------------------------------


def test_strict_constructor_reraises():
    d = Dispatcher(strict=True)
    after = Recorder()
    d.connect(failing, "a::b", priority=1)
    d.connect(after, "a::b")
    assert d.strict is True
    with pytest.raises(Boom):
        d.dispatch("a::b")
    assert after.calls == []


async def test_strict_constructor_reraises_from_adispatch():
    d = Dispatcher(strict=True)
    d.connect(afailing, "a::b")
    with pytest.raises(Boom):
        await d.adispatch("a::b")
    d.disconnect(afailing)
    d.connect(failing, "a::b")
    with pytest.raises(Boom):
        await d.adispatch("a::b")


def test_strict_setting_with_override_settings(d):
    d.connect(failing, "a::b")
    assert d.strict is False
    with override_settings(CHANNELS_EVENTS={"STRICT": True}):
        assert d.strict is True
        with pytest.raises(Boom):
            d.dispatch("a::b")
    assert d.strict is False
    d.dispatch("a::b")  # logged again, not raised


def test_strict_setting_with_settings_fixture(d, settings):
    d.connect(failing, "a::b")
    d.dispatch("a::b")
    settings.CHANNELS_EVENTS = {"STRICT": True}
    with pytest.raises(Boom):
        d.dispatch("a::b")


def test_strict_false_in_constructor_wins_over_setting(settings, errors):
    settings.CHANNELS_EVENTS = {"STRICT": True}
    d = Dispatcher(strict=False)
    d.connect(failing, "a::b")
    d.dispatch("a::b")
    assert len(failures(errors)) == 1


def test_strict_dispatch_context_manager(d, errors):
    d.connect(failing, "a::b")
    with strict_dispatch(d) as target:
        assert target is d
        with pytest.raises(Boom):
            d.dispatch("a::b")
    d.dispatch("a::b")
    assert len(failures(errors)) == 1


def test_strict_filter_failure_reraises():
    d = Dispatcher(strict=True)

    def bad_filter(event):
        raise Boom("filter")

    d.connect(Recorder(), "a::b", filter=bad_filter)
    with pytest.raises(Boom):
        d.dispatch("a::b")


# -- cache -------------------------------------------------------------------------------


def test_listener_connected_after_a_dispatch_gets_later_events(d):
    first = Recorder()
    d.connect(first, "a::.*")
    d.dispatch("a::b")
    d.dispatch("a::b")
    late = Recorder()
    d.connect(late, "a::b")
    d.dispatch("a::b")
    assert first.calls == ["a::b"] * 3
    assert late.calls == ["a::b"]


def test_name_dispatched_with_no_listener_then_connected(d):
    d.dispatch("a::b")
    late = Recorder()
    d.connect(late, "a::b")
    d.dispatch("a::b")
    assert late.calls == ["a::b"]


async def test_cache_is_invalidated_for_adispatch(d):
    await d.adispatch("a::b")
    late = Recorder()
    d.connect(late, "a::b")
    await d.adispatch("a::b")
    d.disconnect(late)
    await d.adispatch("a::b")
    assert late.calls == ["a::b"]


def test_disconnect_after_a_dispatch_is_honoured(d):
    listener = Recorder()
    d.connect(listener, "a::b")
    d.dispatch("a::b")
    d.disconnect(listener)
    d.dispatch("a::b")
    assert listener.calls == ["a::b"]


def test_cache_is_bounded_by_cache_size(settings):
    settings.CHANNELS_EVENTS = {"CACHE_SIZE": 8}
    d = Dispatcher()
    listener = Recorder()
    d.connect(listener, ".*")
    for i in range(100):
        d.dispatch(f"a::n{i}")
        assert len(d.registry.cache) <= 8
    assert len(listener.calls) == 100
    assert len(d.registry.cache) >= 1


def test_connect_from_another_thread_is_seen_by_the_next_dispatch(d):
    late = Recorder()
    d.dispatch("a::b")
    thread = threading.Thread(target=d.connect, args=(late, "a::b"))
    thread.start()
    thread.join(timeout=30)
    d.dispatch("a::b")
    assert late.calls == ["a::b"]


# -- debug logging -----------------------------------------------------------------------


def named_listener(event: Event) -> None:
    """A listener with a recognisable name for the debug log."""


def test_debug_setting_logs_each_dispatch(settings, caplog):
    caplog.set_level(logging.INFO, logger="channels_events")
    settings.CHANNELS_EVENTS = {"DEBUG": True}
    d = Dispatcher()
    d.connect(named_listener, "a::.*")
    d.dispatch("a::b")
    d.dispatch("z::nobody")
    messages = [r.getMessage() for r in caplog.records if r.name == "channels_events"]
    assert len(messages) == 2
    assert "'a::b'" in messages[0]
    assert "1 listener" in messages[0]
    assert f"{__name__}.named_listener" in messages[0]
    assert "'z::nobody'" in messages[1]
    assert "0 listener" in messages[1]


def test_debug_constructor_flag_logs(caplog):
    caplog.set_level(logging.INFO, logger="channels_events")
    d = Dispatcher(debug=True)
    d.connect(named_listener, "a::b")
    d.dispatch("a::b")
    assert any("named_listener" in r.getMessage() for r in caplog.records)


def test_no_dispatch_log_without_debug(d, caplog):
    caplog.set_level(logging.DEBUG, logger="channels_events")
    d.connect(named_listener, "a::b")
    d.dispatch("a::b")
    assert [r for r in caplog.records if r.name == "channels_events"] == []


# -- namespaces() ------------------------------------------------------------------------


def test_namespaces_reports_literal_and_declared_namespaces(d):
    assert d.namespaces() == (frozenset(), False)
    d.connect(Recorder(), "shop::Order::.*")
    d.connect(Recorder(), ".*::created", namespaces=["billing", "crm"])
    d.connect(Recorder(), "users")
    assert d.namespaces() == (frozenset({"shop", "billing", "crm", "users"}), False)


def test_namespaces_flags_open_patterns(d):
    listener = Recorder()
    d.connect(listener, "shop::.*")
    d.connect(listener, ".*")
    assert d.namespaces() == (frozenset({"shop"}), True)
    d.disconnect(listener, ".*")
    assert d.namespaces() == (frozenset({"shop"}), False)


def test_listeners_that_keep_to_local_events_need_no_namespace(d):
    d.connect(Recorder(), ".*", remote=False)
    d.connect(Recorder(), "crm::.*", remote=False)
    assert d.namespaces() == (frozenset(), False)
    d.connect(Recorder(), "shop::.*")
    assert d.namespaces() == (frozenset({"shop"}), False)


def test_literal_namespace_wins_over_declared_namespaces(d):
    d.connect(Recorder(), "shop::.*", namespaces=["billing"])
    assert d.namespaces() == (frozenset({"shop"}), False)


# -- publishers --------------------------------------------------------------------------


def test_publishers_receive_events_after_listeners(d):
    order: list[str] = []
    d.connect(lambda e: order.append("listener"), "a::b")
    d.add_publisher(lambda e: order.append(f"publisher:{e.name}"))
    d.dispatch("a::b")
    d.dispatch("z::unheard")
    assert order == ["listener", "publisher:a::b", "publisher:z::unheard"]


async def test_publishers_receive_adispatched_events(d):
    published: list[Event] = []
    d.add_publisher(published.append)
    event = await d.adispatch("a::b")
    assert published == [event]


def test_local_events_are_not_published(d):
    published: list[Event] = []
    listener = Recorder()
    d.connect(listener, "a::b")
    d.add_publisher(published.append)
    event = Event("a::b")
    event.local = True
    d.dispatch(event)
    assert published == []
    assert listener.calls == ["a::b"]


def test_failing_publisher_is_logged_and_others_still_run(d, errors):
    published: list[Event] = []

    def bad_publisher(event):
        raise Boom("publisher")

    d.add_publisher(bad_publisher)
    d.add_publisher(published.append)
    event = d.dispatch("a::b")
    assert published == [event]
    [record] = failures(errors)
    assert "a::b" in record.getMessage()


def test_publisher_failure_is_not_raised_in_strict_mode():
    d = Dispatcher(strict=True)
    d.add_publisher(lambda e: failing(e))
    d.dispatch("a::b")


def test_publisher_added_twice_is_called_once_and_can_be_removed(d):
    published: list[Event] = []
    d.add_publisher(published.append)
    d.add_publisher(published.append)
    d.dispatch("a::b")
    assert len(published) == 1
    d.remove_publisher(published.append)
    d.dispatch("a::b")
    assert len(published) == 1


def test_what_publishers_accept_is_asked_once_per_name(d):
    asked: list[str] = []
    published: list[Event] = []

    def accepts(event: Event) -> bool:
        asked.append(event.name)
        return event.name.startswith("a::")

    d.add_publisher(published.append, accepts=accepts)
    for _ in range(3):
        d.dispatch("a::b")
        d.dispatch("z::b")
    assert asked == ["a::b", "z::b"]
    assert [e.name for e in published] == ["a::b"] * 3


def test_publishers_changed_makes_the_dispatcher_ask_again(d):
    wanted = {"z"}
    published: list[Event] = []
    d.add_publisher(published.append, accepts=lambda e: e.namespace in wanted)
    d.dispatch("a::b")
    wanted.add("a")
    d.dispatch("a::b")
    assert published == []  # the answer for a::b is kept...
    d.publishers_changed()
    d.dispatch("a::b")
    assert [e.name for e in published] == ["a::b"]  # ...until told it changed


def test_adding_or_removing_a_publisher_asks_again(d):
    quiet: list[Event] = []
    loud: list[Event] = []
    d.add_publisher(quiet.append, accepts=lambda e: False)
    d.dispatch("a::b")
    d.add_publisher(loud.append)
    d.dispatch("a::b")
    assert [e.name for e in loud] == ["a::b"]
    assert [e.name for e in quiet] == ["a::b"]  # one publisher wants it: all get it
    d.remove_publisher(loud.append)
    d.dispatch("a::b")
    assert len(quiet) == 1


# -- muted() and taps -------------------------------------------------------------------


def test_muted_skips_listeners_and_publishers_but_not_taps(d):
    listener = Recorder()
    published: list[Event] = []
    tapped: list[str] = []
    d.connect(listener, "a::b")
    d.add_publisher(published.append)
    d.add_tap(lambda e: tapped.append(e.name))
    with d.muted():
        d.dispatch("a::b")
        with d.muted():
            d.dispatch("a::b")
        d.dispatch("a::b")
    assert listener.calls == []
    assert published == []
    assert tapped == ["a::b"] * 3
    d.dispatch("a::b")
    assert listener.calls == ["a::b"]
    assert len(published) == 1


async def test_muted_applies_to_adispatch(d):
    listener = Recorder()
    tapped: list[str] = []
    d.connect(listener, "a::b")
    d.add_tap(lambda e: tapped.append(e.name))
    with d.muted():
        await d.adispatch("a::b")
    assert listener.calls == []
    assert tapped == ["a::b"]


def test_remove_tap_with_a_bound_method(d):
    class Watcher:
        def __init__(self):
            self.seen = []

        def tap(self, event):
            self.seen.append(event.name)

    watcher = Watcher()
    d.add_tap(watcher.tap)
    d.remove_tap(watcher.tap)
    d.dispatch("a::b")
    assert watcher.seen == []


def test_taps_see_events_before_listeners_and_can_be_removed(d):
    order: list[str] = []

    def tap(event):
        order.append("tap")

    d.connect(lambda e: order.append("listener"), "a::b")
    d.add_tap(tap)
    d.dispatch("a::b")
    d.remove_tap(tap)
    d.dispatch("a::b")
    assert order == ["tap", "listener", "listener"]


def test_taps_mutes_and_debug_set_after_events_flowed_take_effect(d, caplog):
    # Events that already went through set up dispatch()'s short path; each
    # later change must still be seen by the very next event.
    caplog.set_level(logging.INFO, logger="channels_events")
    listener = Recorder()
    tapped: list[str] = []
    d.connect(listener, "a::.*")
    d.dispatch("a::1")
    d.dispatch("a::2")
    with d.muted():
        d.dispatch("a::3")
    d.dispatch("a::4")
    with override_settings(CHANNELS_EVENTS={"DEBUG": True}):
        d.dispatch("a::5")
    d.dispatch("a::6")

    def tap(event: Event) -> None:
        tapped.append(event.name)

    d.add_tap(tap)
    d.dispatch("a::7")
    d.remove_tap(tap)
    with d.muted():
        with d.muted():
            d.dispatch("a::8")
        d.dispatch("a::9")
    d.dispatch("a::10")
    assert listener.calls == ["a::1", "a::2", "a::4", "a::5", "a::6", "a::7", "a::10"]
    assert tapped == ["a::7"]
    logged = [r.getMessage() for r in caplog.records if r.name == "channels_events"]
    assert len(logged) == 1 and "'a::5'" in logged[0]


def test_strict_set_after_events_flowed_applies_to_the_next_event(d, errors):
    d.connect(failing, "a::b")
    d.dispatch("a::b")
    d.dispatch("a::b")
    d.strict = True
    with pytest.raises(Boom):
        d.dispatch("a::b")
    d.strict = False
    d.dispatch("a::b")
    assert len(failures(errors)) == 3


# -- after commit ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_after_commit_listener_waits_for_commit(d):
    listener, immediate = Recorder("late"), Recorder("now")
    d.connect(listener, "a::b", after_commit=True)
    d.connect(immediate, "a::b")
    with transaction.atomic():
        d.dispatch("a::b")
        assert immediate.calls == ["now"]
        assert listener.calls == []
    assert listener.calls == ["late"]


@pytest.mark.django_db(transaction=True)
def test_async_after_commit_listener_waits_for_commit_under_adispatch(d):
    from asgiref.sync import async_to_sync

    heard: list[str] = []

    async def late(event: Event) -> None:
        heard.append("late")

    async def now(event: Event) -> None:
        heard.append("now")

    d.connect(late, "a::b", after_commit=True)
    d.connect(now, "a::b")
    with transaction.atomic():
        async_to_sync(d.adispatch)("a::b")
        assert heard == ["now"]
    assert heard == ["now", "late"]


@pytest.mark.django_db(transaction=True)
def test_after_commit_listener_skipped_on_rollback(d):
    listener = Recorder()
    d.connect(listener, "a::b", after_commit=True)
    with pytest.raises(Boom), transaction.atomic():
        d.dispatch("a::b")
        raise Boom("rollback")
    assert listener.calls == []


@pytest.mark.django_db(transaction=True)
def test_after_commit_listener_runs_at_once_outside_transaction(d):
    listener = Recorder()
    d.connect(listener, "a::b", after_commit=True)
    d.dispatch("a::b")
    assert listener.calls == ["a::b"]


@pytest.mark.django_db(transaction=True)
def test_failing_after_commit_listener_is_logged_in_strict_mode_too(errors):
    d = Dispatcher(strict=True)
    d.connect(failing, "a::b", after_commit=True)
    with transaction.atomic():
        d.dispatch("a::b")
    [record] = failures(errors)
    assert "a::b" in record.getMessage()


class CommittedEvent(Event):
    name = "tdispatch::committed"
    publish_on_commit = True


@pytest.mark.django_db(transaction=True)
def test_publish_on_commit_events_wait_for_commit(d):
    published: list[Event] = []
    d.add_publisher(published.append)
    with transaction.atomic():
        event = d.dispatch(CommittedEvent())
        assert published == []
    assert published == [event]
    with pytest.raises(Boom), transaction.atomic():
        d.dispatch(CommittedEvent())
        raise Boom("rollback")
    assert published == [event]
