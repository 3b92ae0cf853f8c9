"""Helpers for testing code that dispatches events.

``capture_events()`` records what is dispatched inside a block,
``muted_listeners()`` does the same while keeping listeners and publishers
from running, and ``assert_dispatched`` / ``assert_not_dispatched`` check the
record. ``drain()`` waits for background listeners. The same tools are
pytest fixtures: ``captured_events``, ``muted_events``, ``strict_events``
and ``background_listeners`` (registered as a pytest plugin when the package
is installed).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from ._background import drain
from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._names import compile_pattern
from ._registry import PatternLike, pattern_text

__all__ = [
    "CapturedEvents",
    "assert_dispatched",
    "assert_not_dispatched",
    "capture_events",
    "drain",
    "muted_listeners",
    "strict_dispatch",
]


class CapturedEvents(list[Event]):
    """A list of dispatched events, in dispatch order, with lookup helpers."""

    @property
    def names(self) -> list[str]:
        """Return the names of the captured events, in order."""
        return [event.name for event in self]

    def matching(self, pattern: PatternLike) -> list[Event]:
        """Return the captured events whose name fully matches ``pattern``."""
        regex = compile_pattern(pattern_text(pattern))
        return [event for event in self if regex.fullmatch(event.name)]


@contextlib.contextmanager
def capture_events(
    pattern: PatternLike = ".*", *, dispatcher: Dispatcher | None = None
) -> Iterator[CapturedEvents]:
    """Yield a list that collects every event matching ``pattern`` dispatched in the block.

    Listeners still run; see :func:`muted_listeners` to stop them.
    """
    regex = compile_pattern(pattern_text(pattern))
    captured = CapturedEvents()
    target = dispatcher or get_dispatcher()

    def tap(event: Event) -> None:
        if regex.fullmatch(event.name):
            captured.append(event)

    target.add_tap(tap)
    try:
        yield captured
    finally:
        target.remove_tap(tap)


@contextlib.contextmanager
def muted_listeners(
    pattern: PatternLike = ".*", *, dispatcher: Dispatcher | None = None
) -> Iterator[CapturedEvents]:
    """Capture events like :func:`capture_events` while no listener or publisher runs."""
    target = dispatcher or get_dispatcher()
    with capture_events(pattern, dispatcher=target) as captured, target.muted():
        yield captured


@contextlib.contextmanager
def strict_dispatch(dispatcher: Dispatcher | None = None) -> Iterator[Dispatcher]:
    """Make listener exceptions propagate to the dispatching code inside the block."""
    target = dispatcher or get_dispatcher()
    previous = target._strict_override
    target.strict = True
    try:
        yield target
    finally:
        target.strict = previous


# Seconds the background_listeners fixture waits for leftover work.
_TEARDOWN_DRAIN = 30.0


def _describe(events: list[Event]) -> str:
    if not events:
        return "no events were dispatched"
    return "dispatched: " + ", ".join(repr(event.name) for event in events)


def _payload_matches(event: Event, expected: Mapping[str, Any]) -> bool:
    actual = event.payload
    return all(key in actual and actual[key] == value for key, value in expected.items())


def assert_dispatched(
    events: list[Event],
    pattern: PatternLike,
    *,
    count: int | None = None,
    payload: Mapping[str, Any] | None = None,
) -> list[Event]:
    """Assert that an event matching ``pattern`` (and ``payload``'s items) was captured.

    With ``count``, assert exactly that many matched. Return the matching events.
    """
    source = pattern_text(pattern)
    regex = compile_pattern(source)
    found = [event for event in events if regex.fullmatch(event.name)]
    if payload is not None:
        found = [event for event in found if _payload_matches(event, payload)]
    what = f"{source!r}" + (f" with payload items {dict(payload)!r}" if payload else "")
    if count is None and not found:
        raise AssertionError(f"Expected an event matching {what}; {_describe(events)}.")
    if count is not None and len(found) != count:
        raise AssertionError(
            f"Expected {count} event(s) matching {what}, got {len(found)}; {_describe(events)}."
        )
    return found


def assert_not_dispatched(events: list[Event], pattern: PatternLike) -> None:
    """Assert that no captured event's name fully matches ``pattern``."""
    source = pattern_text(pattern)
    regex = compile_pattern(source)
    found = [event for event in events if regex.fullmatch(event.name)]
    if found:
        raise AssertionError(
            f"Expected no event matching {source!r}; got {[e.name for e in found]!r}."
        )


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed for the fixtures
    pass
else:

    @pytest.fixture
    def captured_events() -> Iterator[CapturedEvents]:
        """Capture every event the test dispatches through the default dispatcher."""
        with capture_events() as captured:
            yield captured

    @pytest.fixture
    def muted_events() -> Iterator[CapturedEvents]:
        """Capture every event the test dispatches, with listeners and publishers muted."""
        with muted_listeners() as captured:
            yield captured

    @pytest.fixture
    def background_listeners() -> Iterator[Callable[..., bool]]:
        """Give the test ``drain`` to wait for background listeners; drain again at teardown.

        The teardown drain keeps one test's background work from running
        into the next.
        """
        yield drain
        assert drain(_TEARDOWN_DRAIN), "background listeners still running after the test"

    @pytest.fixture
    def strict_events() -> Iterator[Dispatcher]:
        """Make listener exceptions fail the test instead of being logged."""
        with strict_dispatch() as dispatcher:
            yield dispatcher
