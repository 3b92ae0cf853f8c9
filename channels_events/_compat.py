"""django-event-system's API over channels-events, for projects moving from one to the other.

A project switches by changing ``from events import ...`` to
``from channels_events.compat import ...``; docs/migration.md then maps each
call to its channels-events counterpart, so the code can move over one call
at a time.

Nothing here delivers events by itself. A compat dispatch becomes a
:class:`CompatEvent`, a channels-events event that also carries the caller's
positional and keyword arguments as they are, dispatched through the default
:class:`~channels_events.Dispatcher`; a compat handler is a listener of that
dispatcher which unpacks the arguments again. So the registry matches,
orders and guards compat handlers like any listener, and channels-events
listeners hear compat dispatches too.

The arguments are Python objects, which cannot leave the process: compat
events are local unless the ``COMPAT_PUBLISH`` setting is on (then their
payload, the plain data among the arguments, is published), and compat
handlers hear the events of their own process only.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from asgiref.sync import iscoroutinefunction
from django.db import models
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save
from django.dispatch import Signal

from ._conf import events_settings
from ._dispatcher import get_dispatcher
from ._events import Event as ChannelsEvent
from ._model_events import ACTIONS, LOCAL_ACTIONS, is_muted
from ._names import SEPARATOR, validate_name
from ._signals import OMITTED, plain_items, plain_value, signal_to_event
from .exceptions import InvalidEventName

__all__ = [
    "CompatEvent",
    "CompatModelEvent",
    "Dispatcher",
    "Event",
    "EventListener",
    "GetPathFromClass",
    "Observer",
    "RegisterSignalsFor",
    "SignalToEvent",
]

F = TypeVar("F", bound=Callable[..., Any])
CE = TypeVar("CE", bound="CompatEvent")
E = TypeVar("E", bound="Event")
#: A django-event-system handler: ``handler(name, *args, **kwargs)``.
Handler = Callable[..., Any]


class CompatEvent(ChannelsEvent):
    """A dispatch made through the compat API, as a channels-events event.

    ``args`` and ``kwargs`` are the objects the caller gave, unchanged, for
    handlers in this process. The payload is ``{"args": [...], "kwargs":
    {...}}`` with the plain data among them (see :func:`_payload`), which is
    what channels-events listeners can rely on and, with ``COMPAT_PUBLISH``,
    what other processes get.
    """

    # Not annotated in the class body, where an annotation declares a field.
    if TYPE_CHECKING:
        args: tuple[Any, ...]
        kwargs: dict[str, Any]
    else:
        args = ()
        kwargs = None


class CompatModelEvent(CompatEvent):
    """A compat model event: published, if at all, once the transaction commits."""

    publish_on_commit = True
    if TYPE_CHECKING:
        using: str | None
    else:
        using = None


def _payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return the plain data among a dispatch's arguments.

    A positional argument that is not plain data travels as None (so the
    others keep their places), an Event as its plain attributes, a model
    instance as its pk; keyword arguments that are not plain data, or whose
    names look secret (``SENSITIVE_FIELDS``), are left out.
    """
    values: list[Any] = []
    for value in args:
        if isinstance(value, Event):
            values.append(plain_items(getattr(value, "__dict__", {})))
            continue
        found = plain_value(value)
        values.append(None if found is OMITTED else found)
    return {"args": values, "kwargs": plain_items(kwargs)}


class _Expectations:
    """The event names a test expects, and which of them were dispatched."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.expected: set[str] = set()
        self.seen: set[str] = set()

    def expect(self, name: str) -> None:
        with self._lock:
            self.expected.add(name)

    def hold(self, name: str) -> bool:
        """Return whether ``name`` is expected (and so held back), recording that it came."""
        if name not in self.expected:
            return False
        with self._lock:
            self.seen.add(name)
        return True

    def missing(self) -> list[str]:
        with self._lock:
            return sorted(self.expected - self.seen)


# The expectations of the test running under @Dispatcher.MocksDispatch, if
# any. Process-wide, not per thread: a test's events may be dispatched by a
# server thread (LiveServerTestCase) or a thread the code under test starts.
_expectations: _Expectations | None = None
_expectations_lock = threading.Lock()


@contextlib.contextmanager
def _expecting() -> Iterator[_Expectations]:
    """Hold back expected events inside the block; fail if one never came."""
    global _expectations
    with _expectations_lock:
        previous = _expectations
        current = _expectations = _Expectations()
    try:
        yield current
    finally:
        with _expectations_lock:
            _expectations = previous
    missing = current.missing()
    if missing:
        raise AssertionError(
            f"Expected event(s) {', '.join(map(repr, missing))} were never dispatched."
        )


def _event(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], cls: type[CE]) -> CE | None:
    """Build the event of a compat dispatch; None if a test holds it back."""
    expectations = _expectations
    if expectations is not None and expectations.hold(name):
        return None
    event = cls(name, _payload(args, kwargs))
    event.args = args
    event.kwargs = kwargs
    if not events_settings.COMPAT_PUBLISH:
        event.local = True
    return event


def GetPathFromClass(klass: type) -> str:
    """Return ``<module path, with :: for .>::<class name>``: a class's event name by default."""
    return f"{klass.__module__.replace('.', SEPARATOR)}{SEPARATOR}{klass.__name__}"


def _name_of(event: object, caller: str) -> str:
    """Return the event name given as a str or as an Event class or instance."""
    if isinstance(event, Event) or (isinstance(event, type) and issubclass(event, Event)):
        return event.GetEventName()
    if isinstance(event, str):
        return validate_name(event)
    raise TypeError(f"{caller} takes an event name or an Event class, got {event!r}.")


def _pattern(pattern: object, caller: str) -> str | re.Pattern[str]:
    """Return a regex for a pattern given as a regex or as an Event class (its exact name)."""
    if isinstance(pattern, type) and issubclass(pattern, Event):
        return re.escape(pattern.GetEventName())
    if isinstance(pattern, (str, re.Pattern)):
        return pattern
    raise TypeError(f"{caller} takes regexes and Event classes, got {pattern!r}.")


def _refuse_async(func: object, what: str) -> None:
    if iscoroutinefunction(func):
        raise TypeError(
            f"{what} is async; compat handlers are called synchronously. "
            "Connect it with channels_events.listen() instead."
        )


def _named_like(wrapper: Callable[..., Any], module: str, qualname: str) -> None:
    """Name a listener after what it calls, for logs and ``manage.py events list``."""
    wrapper.__module__ = module
    wrapper.__qualname__ = qualname


def _handler(handler: Handler) -> Callable[[ChannelsEvent], None]:
    """Return a listener that calls ``handler(name, *args, **kwargs)`` for each event.

    An event dispatched with channels-events itself reaches the handler as
    ``(name, event)``.
    """

    def deliver(event: ChannelsEvent) -> None:
        if isinstance(event, CompatEvent):
            handler(event.name, *event.args, **event.kwargs)
        else:
            handler(event.name, event)

    module = getattr(handler, "__module__", None) or type(handler).__module__
    qualname = getattr(handler, "__qualname__", None) or type(handler).__qualname__
    _named_like(deliver, module, qualname)
    return deliver


class Dispatcher:
    """django-event-system's ``Dispatcher``: class methods over the default channels-events one.

    Handlers are listeners of :func:`channels_events.get_dispatcher`: they run
    in registration order, in the thread that dispatches, before
    :meth:`Dispatch` returns; one that raises is logged on the
    ``channels_events`` logger and the others still run (in strict mode the
    exception propagates).
    """

    def __init__(self) -> None:
        raise TypeError("Dispatcher is used through its class methods; it has no instances.")

    @staticmethod
    def RegisterHandler(eventName: str | re.Pattern[str] | type[Event], handler: Handler) -> None:
        """Call ``handler(name, *args, **kwargs)`` for every event whose name fully matches.

        ``eventName`` is a regex (or an Event class, for its name). Each call
        is a registration of its own: a handler registered twice is called
        twice. The handler hears events dispatched in this process only.
        """
        if not callable(handler):
            raise TypeError(f"RegisterHandler() needs a callable handler, got {handler!r}.")
        _refuse_async(handler, f"Handler {handler!r}")
        pattern = _pattern(eventName, "RegisterHandler()")
        get_dispatcher().connect(_handler(handler), pattern, remote=False)

    @staticmethod
    def Dispatch(event: str | type[Event] | Event, /, *args: Any, **kwargs: Any) -> None:
        """Call every handler whose pattern matches with ``(name, *args, **kwargs)``, now.

        ``event`` is a name, an Event class (for its name) or an Event, which
        then goes to handlers first: ``(name, event, *args)``. Handlers get
        the very objects given here: nothing is copied or serialized.
        """
        if isinstance(event, Event):
            args = (event, *args)
        name = _name_of(event, "Dispatch()")
        found = _event(name, args, kwargs, CompatEvent)
        if found is not None:
            get_dispatcher().dispatch(found)

    @staticmethod
    def ClearQueue() -> None:
        """Return once everything dispatched so far has reached its handlers.

        There is no queue: :meth:`Dispatch` runs the handlers before it
        returns, so this returns at once.
        """

    @staticmethod
    def EnsureQueueIsCleared(func: F) -> F:
        """Decorate ``func`` to call :meth:`ClearQueue` once it has run."""
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                result = await func(*args, **kwargs)
                Dispatcher.ClearQueue()
                return result

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            result = func(*args, **kwargs)
            Dispatcher.ClearQueue()
            return result

        return cast(F, run)

    @staticmethod
    def MocksDispatch(func: F) -> F:
        """Decorate a test so that events it :meth:`Expect` s are recorded, not delivered.

        Inside the test, an expected event goes to no handler or listener and
        is not published; every other event is delivered as usual, and the
        handlers registered before the test stay. If an expected event was
        never dispatched, the test fails with an AssertionError naming it.
        The test's return value is returned.
        """
        if iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with _expecting():
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with _expecting():
                return func(*args, **kwargs)

        return cast(F, run)

    @staticmethod
    def Expect(event: str | type[Event] | Event) -> None:
        """Expect an event (a name, an Event class or Event) in this :meth:`MocksDispatch` test.

        The event must be dispatched before the test ends, and it reaches no
        handler.
        """
        expectations = _expectations
        if expectations is None:
            raise RuntimeError(
                "Dispatcher.Expect() works inside a test decorated with @Dispatcher.MocksDispatch."
            )
        expectations.expect(_name_of(event, "Expect()"))


class _EventType(type):
    """Give Event classes their event name as their text: ``str(OrderPaid)``."""

    def __str__(cls) -> str:
        return cast("type[Event]", cls).GetEventName()


class Event(metaclass=_EventType):
    """django-event-system's ``Event``: a class whose name is an event name.

    The name is ``<module path, with :: for .>::<class name>``, or ``Name``
    when the class sets it; ``str()`` of the class and of its instances is
    that name. Subclasses define ``__init__`` as they like, and
    ``OrderPaid.Dispatch(*args, **kwargs)`` builds an instance with those
    arguments and dispatches it.
    """

    Name: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.GetEventName()
        try:
            validate_name(name)
        except InvalidEventName as exc:
            raise InvalidEventName(
                f"{cls.__qualname__} would dispatch events named {name!r}, which is not a "
                f"valid event name: {exc} Set Name = '...' on the class."
            ) from None

    @classmethod
    def GetEventName(cls) -> str:
        """Return the name this class's events are dispatched under."""
        return cls.Name or GetPathFromClass(cls)

    @classmethod
    def Dispatch(cls: type[E], *args: Any, **kwargs: Any) -> E:
        """Build ``cls(*args, **kwargs)``, deliver it as ``(name, event)`` and return it."""
        event = cls(*args, **kwargs)
        Dispatcher.Dispatch(event)
        return event

    #: The same as :meth:`Dispatch`, which never waited for anything either.
    DispatchAsync = Dispatch

    @classmethod
    def AddListener(cls, handler: Handler) -> None:
        """Register ``handler`` for this class's events; see :meth:`Dispatcher.RegisterHandler`."""
        Dispatcher.RegisterHandler(cls, handler)

    def __str__(self) -> str:
        return self.GetEventName()


def _listener(instance: EventListener) -> Callable[[ChannelsEvent], None]:
    """Return a listener that calls ``instance.handle``, looked up at each call.

    ``handle`` gets ``(event)`` when the dispatch carried an event (an Event
    class dispatched, or a channels-events event), else ``(name, *args,
    **kwargs)``.
    """

    def deliver(event: ChannelsEvent) -> None:
        handle = instance.handle
        if not isinstance(event, CompatEvent):
            handle(event)
        elif event.args and isinstance(event.args[0], Event):
            handle(*event.args, **event.kwargs)
        else:
            handle(event.name, *event.args, **event.kwargs)

    cls = type(instance)
    _named_like(deliver, cls.__module__, f"{cls.__qualname__}.handle")
    return deliver


class EventListener:
    """django-event-system's ``EventListener``: ``listensFor`` and ``handle``.

    ``listensFor`` lists regexes and Event classes; the class is instantiated
    once and registered when it is defined, and ``handle`` is called once
    for each event any of them matches. Defining the class again (a module
    reloaded) replaces the earlier one.
    """

    listensFor: ClassVar[Sequence[str | re.Pattern[str] | type[Event]]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        where = f"{cls.__qualname__}.listensFor"
        found: object = cls.listensFor
        if isinstance(found, (str, re.Pattern, type)) or not isinstance(found, Iterable):
            raise TypeError(f"{where} must be a list of regexes and Event classes, got {found!r}.")
        patterns = [_pattern(pattern, where) for pattern in found]
        if not patterns:
            raise TypeError(f"{where} must list at least one regex or Event class.")
        _refuse_async(cls.handle, f"{cls.__qualname__}.handle")
        dispatcher = get_dispatcher()
        uid = f"channels_events.compat:{cls.__module__}.{cls.__qualname__}"
        # A uid in use keeps its first registration: a class defined again
        # lets go of its predecessor first.
        dispatcher.disconnect(dispatch_uid=uid)
        dispatcher.connect(_listener(cls()), patterns, remote=False, dispatch_uid=uid)

    def handle(self, *args: Any, **kwargs: Any) -> None:
        """Handle one event; subclasses define it."""
        raise NotImplementedError(f"{type(self).__qualname__} must define handle().")


def _method(instance: Observer, action: str) -> Callable[[ChannelsEvent], None]:
    """Return a listener that calls the observer's method for ``action``, looked up at each call."""

    def call(name: str, *args: Any, **kwargs: Any) -> None:
        getattr(instance, action)(name, *args, **kwargs)

    deliver = _handler(call)
    cls = type(instance)
    _named_like(deliver, cls.__module__, f"{cls.__qualname__}.{action}")
    return deliver


class Observer:
    """django-event-system's ``Observer``: ``observes = Model`` and ``creating`` ... ``deleted``.

    Defining the class registers the model (:func:`RegisterSignalsFor`) and
    one instance of the class, whose method for each action is called with
    ``(name, instance)`` during the save or delete, in its transaction.
    Defining the class again (a module reloaded) replaces the earlier one.
    """

    observes: ClassVar[type[models.Model] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        model = cls.observes
        if model is None:
            raise TypeError(f"{cls.__qualname__}.observes must be set to the model it observes.")
        for action in ACTIONS:
            _refuse_async(getattr(cls, action), f"{cls.__qualname__}.{action}")
        names = RegisterSignalsFor(model)
        instance = cls()
        dispatcher = get_dispatcher()
        for action, name in names.items():
            uid = f"channels_events.compat:{cls.__module__}.{cls.__qualname__}.{action}"
            dispatcher.disconnect(dispatch_uid=uid)
            dispatcher.connect(
                _method(instance, action), re.escape(name), remote=False, dispatch_uid=uid
            )

    def creating(self, name: str, instance: Any) -> None:
        """Handle an instance about to be inserted."""

    def created(self, name: str, instance: Any) -> None:
        """Handle an instance just inserted."""

    def updating(self, name: str, instance: Any) -> None:
        """Handle an instance about to be updated."""

    def updated(self, name: str, instance: Any) -> None:
        """Handle an instance just updated."""

    def deleting(self, name: str, instance: Any) -> None:
        """Handle an instance about to be deleted."""

    def deleted(self, name: str, instance: Any) -> None:
        """Handle an instance just deleted."""


# Registered models: their event names by action, and how to disconnect them.
_models: dict[type[models.Model], tuple[dict[str, str], list[Callable[[], bool]]]] = {}
_models_lock = threading.Lock()


def _model_event(name: str, action: str, instance: Any, using: Any) -> CompatModelEvent | None:
    event = _event(name, (instance,), {}, CompatModelEvent)
    if event is not None:
        event.using = using
        if action in LOCAL_ACTIONS:
            # Before the write: nothing has happened yet that others could see.
            event.local = True
    return event


def RegisterSignalsFor(model: type[models.Model]) -> dict[str, str]:
    """Make ``model`` dispatch an event for each save and delete; return the names by action.

    The names are ``events::db::<module path>::<Model>::<action>`` for the
    actions ``creating``, ``created``, ``updating``, ``updated``,
    ``deleting`` and ``deleted``; handlers get ``(name, instance)``, during
    the save or delete. ``creating`` / ``updating`` follow
    ``instance._state.adding``, ``created`` / ``updated`` what the database
    did. Registering a model again changes nothing; ``muted_model_events()``
    silences these events too.
    """
    if not (isinstance(model, type) and issubclass(model, models.Model)) or model._meta.abstract:
        raise TypeError(f"RegisterSignalsFor() needs a concrete model class, got {model!r}.")
    with _models_lock:
        known = _models.get(model)
        if known is not None:
            return dict(known[0])
        prefix = f"events{SEPARATOR}db{SEPARATOR}{GetPathFromClass(model)}{SEPARATOR}"
        names = {action: prefix + action for action in ACTIONS}
        for name in names.values():
            try:
                validate_name(name)
            except InvalidEventName as exc:
                raise InvalidEventName(
                    f"{model.__qualname__}'s events would be named {name!r}, which is not a "
                    f"valid event name: {exc}"
                ) from None

        def on_save(sender: Any, instance: Any, **kwargs: Any) -> CompatModelEvent | None:
            if "created" in kwargs:
                action = "created" if kwargs["created"] else "updated"
            else:
                action = "creating" if instance._state.adding else "updating"
            if is_muted(sender):
                return None
            return _model_event(names[action], action, instance, kwargs.get("using"))

        def on_delete(sender: Any, instance: Any, **kwargs: Any) -> CompatModelEvent | None:
            action = "deleting" if kwargs["signal"] is pre_delete else "deleted"
            if is_muted(sender):
                return None
            return _model_event(names[action], action, instance, kwargs.get("using"))

        undo = [
            signal_to_event(signal, hook=hook, sender=model)
            for signal, hook in (
                (pre_save, on_save),
                (post_save, on_save),
                (pre_delete, on_delete),
                (post_delete, on_delete),
            )
        ]
        _models[model] = (names, undo)
    return dict(names)


def forget_model(model: type[models.Model]) -> bool:
    """Undo :func:`RegisterSignalsFor` (tests use it); return whether the model was registered."""
    with _models_lock:
        known = _models.pop(model, None)
    if known is None:
        return False
    for disconnect in known[1]:
        disconnect()
    return True


def SignalToEvent(
    signal: Signal,
    event: str | type[Event] | None = None,
    sender: Any = None,
    hook: Callable[..., str | type[Event] | Event | None] | None = None,
) -> Callable[[], bool]:
    """Dispatch an event each time ``signal`` is sent (by ``sender``, if given).

    Handlers get ``(name, sender, **kwargs)``, the signal's own arguments
    (``signal`` among them). With ``hook``, ``hook(sender, signal=signal,
    **kwargs)`` decides the event: a name or an Event class, dispatched with
    those arguments, an Event, dispatched as ``Event.Dispatch`` does, or None
    for none. Each call connects anew. Return a function that disconnects it.
    """
    if event is None and hook is None:
        raise TypeError("SignalToEvent() needs event= (a name or an Event class) or hook=.")
    name = None if event is None else _name_of(event, "SignalToEvent()")
    if hook is not None and not callable(hook):
        raise TypeError(f"SignalToEvent() needs a callable hook, got {hook!r}.")

    def build(sender: Any, **kwargs: Any) -> CompatEvent | None:
        result = name if hook is None else hook(sender, **kwargs)
        if result is None:
            return None
        if isinstance(result, Event):
            return _event(result.GetEventName(), (result,), {}, CompatEvent)
        return _event(_name_of(result, "A SignalToEvent() hook"), (sender,), kwargs, CompatEvent)

    return signal_to_event(signal, hook=build, sender=sender)
