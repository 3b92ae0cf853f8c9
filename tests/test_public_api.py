"""Tests that the public API is exactly what the package promises."""

from __future__ import annotations

import importlib
import importlib.metadata

import channels_events

EXPECTED = [
    "ChannelsEventsError",
    "Dispatcher",
    "Event",
    "EventClassError",
    "InvalidEventName",
    "InvalidPattern",
    "InvalidPayload",
    "Listener",
    "Namespace",
    "Observer",
    "UnknownEventKey",
    "adispatch",
    "connect",
    "disconnect",
    "dispatch",
    "get_dispatcher",
    "listen",
    "observe",
    "signal_to_event",
]


def test_all_is_exactly_the_expected_sorted_list():
    assert channels_events.__all__ == EXPECTED
    assert channels_events.__all__ == sorted(channels_events.__all__)


def test_every_public_name_is_importable():
    module = importlib.import_module("channels_events")
    for name in EXPECTED:
        assert getattr(module, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from channels_events import *", namespace)
    assert set(EXPECTED) <= set(namespace)


def test_exceptions_share_one_root_and_fitting_builtins():
    root = channels_events.ChannelsEventsError
    assert issubclass(channels_events.InvalidEventName, ValueError)
    assert issubclass(channels_events.InvalidPattern, ValueError)
    assert issubclass(channels_events.InvalidPayload, TypeError)
    assert issubclass(channels_events.EventClassError, TypeError)
    assert issubclass(channels_events.UnknownEventKey, AttributeError)
    for name in EXPECTED:
        obj = getattr(channels_events, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, root), name


def test_version_matches_the_installed_distribution():
    assert channels_events.__version__ == importlib.metadata.version("channels-events")


def test_testing_tools_are_importable():
    from channels_events.testing import (
        CapturedEvents,
        assert_dispatched,
        assert_not_dispatched,
        capture_events,
        muted_listeners,
        strict_dispatch,
    )

    assert callable(capture_events)
    assert callable(muted_listeners)
    assert callable(strict_dispatch)
    assert callable(assert_dispatched)
    assert callable(assert_not_dispatched)
    assert issubclass(CapturedEvents, list)


def test_testing_all():
    import channels_events.testing as testing

    assert testing.__all__ == [
        "CapturedEvents",
        "assert_dispatched",
        "assert_not_dispatched",
        "capture_events",
        "muted_listeners",
        "strict_dispatch",
    ]
