"""Tests that the public API is exactly what the package promises."""

from __future__ import annotations

import importlib
import importlib.metadata
import pathlib
import re

import channels_events

EXPECTED = [
    "ChannelsEventsError",
    "Dispatcher",
    "Event",
    "EventClassError",
    "EventManager",
    "EventQuerySet",
    "EventTooLarge",
    "HubMiddleware",
    "InvalidConnectionId",
    "InvalidEventName",
    "InvalidFilter",
    "InvalidPattern",
    "InvalidPayload",
    "Listener",
    "ModelEvent",
    "Namespace",
    "Observer",
    "ObserverError",
    "ProtocolError",
    "TaskListenerError",
    "TaskOptions",
    "ToOthersMiddleware",
    "UnknownEventKey",
    "UnknownSetting",
    "adispatch",
    "alatest_event_id",
    "apresence",
    "connect",
    "disconnect",
    "dispatch",
    "drain",
    "emit_bulk_event",
    "events_lost",
    "get_dispatcher",
    "get_hub",
    "latest_event_id",
    "listen",
    "muted_model_events",
    "observe",
    "presence",
    "signal_to_event",
    "start_hub",
    "to_others",
    "unobserve",
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
        "drain",
        "muted_listeners",
        "strict_dispatch",
    ]


def test_every_error_class_lives_in_exceptions_and_subclasses_a_builtin():
    import inspect

    import channels_events.exceptions as exceptions

    package = pathlib.Path(channels_events.__file__).parent
    for path in package.rglob("*.py"):
        source = path.read_text()
        for match in re.finditer(r"^class (\w+)\((.*)\):", source, re.M):
            name, bases = match.groups()
            if "Error" in bases or "Exception" in bases or name.endswith("Error"):
                assert path.name == "exceptions.py", f"{name} is defined in {path.name}"
    for name in exceptions.__all__:
        error = getattr(exceptions, name)
        assert issubclass(error, exceptions.ChannelsEventsError), name
        builtins = [b for b in inspect.getmro(error) if b.__module__ == "builtins"]
        assert builtins[0] is not Exception or error is exceptions.ChannelsEventsError, name


def test_consumers_module_exports_the_consumers():
    import channels_events.consumers as consumers

    assert consumers.__all__ == ["EventConsumerMixin", "EventStreamConsumer"]


def test_compat_exports_django_event_systems_names():
    import channels_events.compat as compat
    import channels_events.compat.events.utils as utils

    assert compat.__all__ == [
        "CompatEvent",
        "Dispatcher",
        "Event",
        "EventListener",
        "GetPathFromClass",
        "Observer",
        "RegisterSignalsFor",
        "SignalToEvent",
    ]
    assert utils.__all__ == ["GetPathFromClass", "RegisterSignalsFor", "SignalToEvent"]


#: Every module users may import, by path in the package; the rest start with "_".
PUBLIC_MODULES = {
    "__init__.py",
    "apps.py",
    "compat/__init__.py",
    "compat/events/__init__.py",
    "compat/events/utils.py",
    "consumers.py",
    "exceptions.py",
    "management/__init__.py",
    "management/commands/__init__.py",
    "management/commands/events.py",
    "ops_urls.py",
    "testing.py",
    "views.py",
}


def test_private_modules_are_marked_private():
    package = pathlib.Path(channels_events.__file__).parent
    public = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).parts
        names = [*parts[:-1], path.stem] if path.name != "__init__.py" else list(parts[:-1])
        if not any(name.startswith("_") for name in names):
            public.add("/".join(parts))
    assert public == PUBLIC_MODULES
