"""Tests for channels_events.testing: capture tools, assertions and pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from channels_events import Dispatcher, Event, get_dispatcher
from channels_events.testing import (
    CapturedEvents,
    assert_dispatched,
    assert_not_dispatched,
    capture_events,
    muted_listeners,
    strict_dispatch,
)


class Boom(Exception):
    """Raised by failing test listeners."""


class StockLow(Event):
    name = "ttesting::stock::low"
    sku: str


def local(name: str, payload: dict[str, Any] | None = None) -> Event:
    """Return an event that stays in this process (no channel layer involved)."""
    event = Event(name, payload)
    event.local = True
    return event


@pytest.fixture
def publisher() -> Iterator[list[Event]]:
    """Add a recording publisher to the default dispatcher for the test."""
    published: list[Event] = []

    def record(event: Event) -> None:
        published.append(event)

    dispatcher = get_dispatcher()
    dispatcher.add_publisher(record)
    yield published
    dispatcher.remove_publisher(record)


# -- capture_events ----------------------------------------------------------------


def test_capture_events_records_in_order_and_listeners_still_run(default_dispatcher):
    calls: list[str] = []
    default_dispatcher.connect(lambda e: calls.append(e.name), "ttesting::.*")
    with capture_events() as captured:
        first = default_dispatcher.dispatch(local("ttesting::a", {"n": 1}))
        second = default_dispatcher.dispatch(local("ttesting::b"))
    assert isinstance(captured, CapturedEvents)
    assert captured == [first, second]
    assert captured.names == ["ttesting::a", "ttesting::b"]
    assert calls == ["ttesting::a", "ttesting::b"]


def test_capture_events_filters_by_pattern():
    d = Dispatcher()
    with capture_events("shop::Order::.*", dispatcher=d) as captured:
        d.dispatch("shop::Order::created")
        d.dispatch("shop::Customer::created")
        d.dispatch("shop::Order")
    assert captured.names == ["shop::Order::created"]


def test_capture_events_with_event_class():
    d = Dispatcher()
    with capture_events(StockLow, dispatcher=d) as captured:
        d.dispatch(StockLow(sku="A1"))
        d.dispatch("ttesting::stock::high")
    assert [type(e) for e in captured] == [StockLow]


def test_capture_events_stops_at_the_end_of_the_block():
    d = Dispatcher()
    with capture_events(dispatcher=d) as captured:
        d.dispatch("a::b")
    d.dispatch("a::c")
    assert captured.names == ["a::b"]


async def test_capture_events_sees_adispatch():
    d = Dispatcher()
    with capture_events(dispatcher=d) as captured:
        await d.adispatch("a::b")
    assert captured.names == ["a::b"]


def test_captured_matching():
    d = Dispatcher()
    with capture_events(dispatcher=d) as captured:
        d.dispatch("shop::a")
        d.dispatch("billing::a")
        d.dispatch("shop::b")
    assert [e.name for e in captured.matching("shop::.*")] == ["shop::a", "shop::b"]
    assert captured.matching("none::.*") == []


# -- muted_listeners -------------------------------------------------------------------


def test_muted_listeners_captures_without_running_listeners_or_publishers(
    default_dispatcher, publisher
):
    calls: list[str] = []
    default_dispatcher.connect(lambda e: calls.append(e.name), "ttesting::.*")
    with muted_listeners() as captured:
        event = default_dispatcher.dispatch("ttesting::muted")
    assert captured == [event]
    assert calls == []
    assert publisher == []
    # Outside the block everything runs again.
    after = default_dispatcher.dispatch(local("ttesting::muted"))
    assert calls == ["ttesting::muted"]
    assert captured == [event]
    assert after not in captured


def test_muted_listeners_with_pattern_still_mutes_everything():
    d = Dispatcher()
    calls: list[str] = []
    d.connect(lambda e: calls.append(e.name), ".*")
    with muted_listeners("shop::.*", dispatcher=d) as captured:
        d.dispatch("shop::a")
        d.dispatch("billing::a")
    assert captured.names == ["shop::a"]
    assert calls == []


# -- assert_dispatched / assert_not_dispatched --------------------------------------------


@pytest.fixture
def record() -> CapturedEvents:
    d = Dispatcher()
    with capture_events(dispatcher=d) as captured:
        d.dispatch("shop::Order::created", {"pk": 1, "status": "new"})
        d.dispatch("shop::Order::created", {"pk": 2, "status": "paid"})
        d.dispatch("shop::Order::deleted", {"pk": 1})
        d.dispatch(StockLow(sku="A1"))
    return captured


def test_assert_dispatched_returns_matches(record):
    found = assert_dispatched(record, "shop::Order::.*")
    assert [e.payload["pk"] for e in found] == [1, 2, 1]


def test_assert_dispatched_with_event_class(record):
    [event] = assert_dispatched(record, StockLow)
    assert event.sku == "A1"


def test_assert_dispatched_count(record):
    assert len(assert_dispatched(record, "shop::Order::created", count=2)) == 2
    with pytest.raises(AssertionError, match=r"Expected 1 event.*got 2"):
        assert_dispatched(record, "shop::Order::created", count=1)
    assert assert_dispatched(record, "shop::Order::paid", count=0) == []


def test_assert_dispatched_payload_subset(record):
    [event] = assert_dispatched(record, "shop::Order::created", payload={"status": "paid"})
    assert event.payload["pk"] == 2
    assert_dispatched(record, "shop::Order::.*", payload={"pk": 1}, count=2)
    with pytest.raises(AssertionError, match="payload"):
        assert_dispatched(record, "shop::Order::created", payload={"status": "cancelled"})
    with pytest.raises(AssertionError):
        assert_dispatched(record, "shop::Order::deleted", payload={"missing": None})


def test_assert_dispatched_is_a_full_match(record):
    with pytest.raises(AssertionError):
        assert_dispatched(record, "shop::Order")


def test_assert_dispatched_failure_lists_what_was_dispatched(record):
    with pytest.raises(AssertionError) as info:
        assert_dispatched(record, "billing::.*")
    message = str(info.value)
    assert "'billing::.*'" in message
    assert "'shop::Order::created'" in message
    assert "'shop::Order::deleted'" in message
    assert "'ttesting::stock::low'" in message


def test_assert_dispatched_failure_on_empty_record():
    with pytest.raises(AssertionError, match="no events were dispatched"):
        assert_dispatched([], "a::b")


def test_assert_not_dispatched(record):
    assert_not_dispatched(record, "billing::.*")
    assert_not_dispatched(record, "shop::Order")
    with pytest.raises(AssertionError) as info:
        assert_not_dispatched(record, "shop::Order::deleted")
    assert "shop::Order::deleted" in str(info.value)


# -- strict_dispatch ------------------------------------------------------------------------


def test_strict_dispatch_restores_previous_mode():
    d = Dispatcher(strict=False)

    def failing(event):
        raise Boom

    d.connect(failing, "a::b")
    with strict_dispatch(d):
        assert d.strict is True
        with pytest.raises(Boom):
            d.dispatch("a::b")
    assert d.strict is False
    d.dispatch("a::b")


# -- pytest fixtures (loaded through the pytest11 entry point) -------------------------------


def test_captured_events_fixture(captured_events, default_dispatcher):
    calls: list[str] = []
    default_dispatcher.connect(lambda e: calls.append(e.name), "ttesting::.*")
    event = default_dispatcher.dispatch(local("ttesting::fixture", {"a": 1}))
    assert captured_events == [event]
    assert calls == ["ttesting::fixture"]
    assert_dispatched(captured_events, "ttesting::fixture", payload={"a": 1}, count=1)


def test_muted_events_fixture(muted_events, default_dispatcher, publisher):
    calls: list[str] = []
    default_dispatcher.connect(lambda e: calls.append(e.name), "ttesting::.*")
    event = default_dispatcher.dispatch("ttesting::fixture")
    assert muted_events == [event]
    assert calls == []
    assert publisher == []


def test_strict_events_fixture(strict_events, default_dispatcher):
    assert strict_events is get_dispatcher()
    assert strict_events.strict is True

    def failing(event):
        raise Boom

    default_dispatcher.connect(failing, "ttesting::strict")
    with pytest.raises(Boom):
        default_dispatcher.dispatch(local("ttesting::strict"))


def test_default_dispatcher_is_not_strict_after_strict_events_fixture():
    assert get_dispatcher().strict is False


def test_fixtures_leave_no_taps_behind():
    assert get_dispatcher()._taps == ()
