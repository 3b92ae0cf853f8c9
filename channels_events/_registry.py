"""The registry: listeners, their patterns, and who hears which event name."""

from __future__ import annotations

import itertools
import re
import threading
import types
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from asgiref.sync import iscoroutinefunction

from ._background import get_pool
from ._conf import events_settings, on_change
from ._events import Event
from ._names import compile_pattern, literal_namespace, validate_name, validate_namespace
from .exceptions import InvalidPattern, TaskListenerError

if TYPE_CHECKING:
    from ._tasks import TaskListener, TaskOptions

__all__ = ["ListenerCallable", "PatternLike", "Registration", "Registry", "pattern_text"]

PatternLike: TypeAlias = "str | re.Pattern[str] | type[Event]"
ListenerCallable: TypeAlias = "Callable[[Event], Any]"


def _as_list(pattern: PatternLike | Iterable[PatternLike]) -> list[PatternLike]:
    if isinstance(pattern, (str, re.Pattern, type)):
        return [pattern]
    try:
        return list(pattern)
    except TypeError:
        raise InvalidPattern(
            f"A pattern must be a str, a compiled regex, an Event subclass or a list of "
            f"those, got {pattern!r}."
        ) from None


def pattern_text(pattern: PatternLike) -> str:
    """Return the regex source for a pattern given as text, compiled regex or Event class."""
    if isinstance(pattern, str):
        return pattern
    if isinstance(pattern, re.Pattern):
        if pattern.flags & ~re.UNICODE:
            raise InvalidPattern(
                f"Compiled pattern {pattern.pattern!r} has flags; write them inline, e.g. '(?i)'."
            )
        return pattern.pattern
    if isinstance(pattern, type) and issubclass(pattern, Event):
        if pattern._fixed_name is None:
            raise InvalidPattern(
                f"{pattern.__qualname__} has no fixed name to listen for; give it name = '...'."
            )
        return re.escape(pattern._fixed_name)
    raise InvalidPattern(
        f"A pattern must be a str, a compiled regex or an Event subclass, got {pattern!r}."
    )


def _describe(callback: Callable[..., Any]) -> str:
    func = getattr(callback, "__func__", callback)
    module = getattr(func, "__module__", None) or ""
    qualname = getattr(func, "__qualname__", None) or repr(func)
    return f"{module}.{qualname}" if module else qualname


def _callback_id(callback: Callable[..., Any]) -> Hashable:
    # Bound methods (Python or builtin, such as list.append) are new objects
    # on every attribute access; identify them by owner and function.
    owner = getattr(callback, "__self__", None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        func = getattr(callback, "__func__", None)
        return (id(owner), id(func) if func is not None else getattr(callback, "__name__", ""))
    return id(callback)


def _where_it_runs(
    callback: Callable[..., Any],
    background: bool,
    task: bool | TaskOptions,
    task_path: str | None,
) -> tuple[str, TaskListener | None]:
    """Validate ``background`` and ``task``; return where the listener runs, and its task."""
    if not isinstance(background, bool):
        raise TypeError(f"background must be True or False, got {background!r}.")
    if task is False or task is None:
        return ("background" if background else "inline"), None
    if background:
        raise TaskListenerError(
            f"Listener {_describe(callback)} has both background=True and task; choose one."
        )
    # Imported here: the Tasks framework is an optional dependency.
    from ._tasks import TaskOptions, task_listener

    options = TaskOptions() if task is True else task
    return "task", task_listener(callback, options, task_path)


@dataclass(eq=False)
class Registration:
    """One listener connected to one pattern; returned by :meth:`Dispatcher.connect`."""

    callback: ListenerCallable
    pattern: str
    regex: re.Pattern[str]
    priority: int
    once: bool
    is_async: bool
    filter: Callable[[Event], bool] | None
    after_commit: bool
    #: Whether it hears events other processes published, as well as local ones.
    remote: bool
    namespaces: frozenset[str] | None
    uid: Hashable
    #: The dispatch_uid, or the callback's identity: one call per event per key.
    key: Hashable
    seq: int
    #: Where the listener runs: "inline" (in dispatch()), "background" (the
    #: process's background pool) or "task" (a Django task, in a worker).
    runs: str = "inline"
    #: How a task listener is enqueued (runs == "task").
    task: TaskListener | None = None
    active: bool = True
    #: True when none of once, filter, after_commit, async or a hand-off
    #: applies: the fast path.
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        self.plain = not (
            self.once or self.filter or self.after_commit or self.is_async or self.runs != "inline"
        )

    def hand_off(self, event: Event) -> None:
        """Queue a call for a background or task listener; the caller's whole cost."""
        if self.task is not None:
            self.task.enqueue(event)
        else:
            get_pool().submit(self, event)

    @property
    def description(self) -> str:
        """Return ``module.qualname`` of the callback, for logs and listings."""
        return _describe(self.callback)


class Registry:
    """Hold listeners and answer, with a cache, which ones an event name reaches.

    A :class:`~channels_events._dispatcher.Dispatcher` holds one. Thread-safe:
    listeners may connect from any thread. The cache of an event name's
    listeners is cleared on every connect and disconnect, and holds at most
    ``CACHE_SIZE`` names.
    """

    def __init__(self, owner: Any = None) -> None:
        #: Guards registrations; the dispatcher that holds the registry shares it.
        self.lock = threading.RLock()
        #: What watchers are called with (the dispatcher that holds the registry).
        self._owner = self if owner is None else owner
        self._registrations: list[Registration] = []
        self._by_uid: dict[Hashable, Registration] = {}
        #: Event name -> the registrations it reaches, as :meth:`lookup` found
        #: them. Read it, never write it: a miss means "ask lookup()".
        self.cache: dict[str, tuple[Registration, ...]] = {}
        self._generation = 0
        self._seq = itertools.count()
        self._watchers: list[Callable[[Any], None]] = []
        on_change(self._settings_changed)

    def _settings_changed(self) -> None:
        # CACHE_SIZE may be smaller now.
        self.cache = {}

    def connect(
        self,
        callback: ListenerCallable,
        pattern: PatternLike | Iterable[PatternLike],
        *,
        priority: int = 0,
        once: bool = False,
        filter: Callable[[Event], bool] | None = None,
        after_commit: bool = False,
        remote: bool = True,
        namespaces: Iterable[str] | None = None,
        dispatch_uid: Hashable | None = None,
        background: bool = False,
        task: bool | TaskOptions = False,
        task_path: str | None = None,
    ) -> list[Registration]:
        """Connect ``callback`` to every event whose name fully matches ``pattern``.

        ``pattern`` may be a regex string, a compiled regex, an Event subclass or
        a list of those. ``namespaces`` declares which namespaces a
        pattern whose namespace part is not literal (``.*``) can match, so the
        hub knows which groups to join. ``after_commit`` delays the call until
        the current database transaction commits (sync dispatch only).
        As with Django's signals, connecting a callback to a pattern it is
        already connected to, or reusing a ``dispatch_uid``, does nothing: the
        first registration stays (disconnect it first to change it).
        ``remote=False`` keeps the listener to events dispatched in this
        process; by default it also hears events other processes published.

        ``background=True`` runs the listener on the process's background pool
        instead of inside ``dispatch()``. ``task=True`` (or a
        :class:`~channels_events.TaskOptions`) enqueues a Django task per
        event instead, run by a worker that finds the listener by
        ``task_path`` (default: the callback's ``module:qualname``); a task
        listener hears this process's events only, so that each event is
        enqueued once.
        """
        if not callable(callback):
            raise TypeError(f"Listener must be callable, got {callback!r}.")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int, got {priority!r}.")
        if filter is not None and not callable(filter):
            raise TypeError(f"filter must be callable, got {filter!r}.")
        declared = None
        if namespaces is not None:
            if isinstance(namespaces, str):
                raise TypeError(f"namespaces must be a list of names, not the str {namespaces!r}.")
            declared = frozenset(validate_namespace(ns) for ns in namespaces)
        patterns = _as_list(pattern)
        if not patterns:
            raise InvalidPattern(f"No pattern given for listener {_describe(callback)}.")
        sources = [pattern_text(p) for p in patterns]
        compiled = [compile_pattern(source) for source in sources]
        is_async = iscoroutinefunction(callback)
        runs, task_listener = _where_it_runs(callback, background, task, task_path)
        if task_listener is not None:
            remote = False
        registrations = []
        key = ("uid", dispatch_uid) if dispatch_uid is not None else _callback_id(callback)
        with self.lock:
            if dispatch_uid is not None:
                existing = [r for r in self._registrations if r.key == key]
                if existing:
                    return existing
            for source, regex in zip(sources, compiled, strict=True):
                literal = literal_namespace(source)
                uid = (key, source)
                registration = Registration(
                    callback=callback,
                    pattern=source,
                    regex=regex,
                    priority=priority,
                    once=once,
                    is_async=is_async,
                    filter=filter,
                    after_commit=after_commit,
                    remote=bool(remote),
                    namespaces=frozenset({literal}) if literal is not None else declared,
                    uid=uid,
                    key=key,
                    seq=next(self._seq),
                    runs=runs,
                    task=task_listener,
                )
                kept = self._by_uid.get(uid)
                if kept is not None:
                    registrations.append(kept)
                    continue
                self._by_uid[uid] = registration
                self._registrations.append(registration)
                registrations.append(registration)
            self._registrations.sort(key=lambda r: (-r.priority, r.seq))
            self.changed()
        return registrations

    def disconnect(
        self,
        callback: ListenerCallable | None = None,
        pattern: PatternLike | None = None,
        *,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect a listener; return whether anything was disconnected.

        With ``dispatch_uid``, remove that registration. With a callback and a
        pattern, remove that pair. With a callback alone, remove every pattern
        it is connected to.
        """
        with self.lock:
            if dispatch_uid is not None:
                doomed = [r for r in self._registrations if r.key == ("uid", dispatch_uid)]
            elif callback is not None:
                key = _callback_id(callback)
                source = None if pattern is None else pattern_text(pattern)
                doomed = [
                    r
                    for r in self._registrations
                    if _callback_id(r.callback) == key and (source is None or r.pattern == source)
                ]
            else:
                raise TypeError("disconnect() needs a callback or a dispatch_uid.")
            for registration in doomed:
                self.remove(registration)
            if doomed:
                self.changed()
            return bool(doomed)

    def clear(self) -> None:
        """Disconnect every listener."""
        with self.lock:
            for registration in self._registrations:
                registration.active = False
            self._registrations.clear()
            self._by_uid.clear()
            self.changed()

    def remove(self, registration: Registration) -> None:
        """Remove one registration; call :meth:`changed` after, with the lock held."""
        if registration.active:
            registration.active = False
            self._registrations.remove(registration)
            if self._by_uid.get(registration.uid) is registration:
                del self._by_uid[registration.uid]

    def changed(self) -> None:
        """Forget cached answers and tell the watchers; call with the lock held."""
        self._generation += 1
        self.cache = {}
        for callback in self._watchers:
            callback(self._owner)

    def watch(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(dispatcher)`` whenever listeners or taps change.

        Producers use it to stay unhooked from a source (a Django signal, say)
        while nothing would receive its events.
        """
        with self.lock:
            if callback not in self._watchers:
                self._watchers = [*self._watchers, callback]

    def unwatch(self, callback: Callable[[Any], None]) -> None:
        """Stop calling a callback given to :meth:`watch`."""
        with self.lock:
            self._watchers = [w for w in self._watchers if w != callback]

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """Return every registration, in delivery order."""
        return tuple(self._registrations)

    def namespaces(self) -> tuple[frozenset[str], bool]:
        """Return the namespaces listeners are confined to, and whether any pattern is open.

        The flag is true when some pattern's namespace is neither literal nor
        declared, so it could match any namespace. Listeners connected with
        ``remote=False`` count for nothing: they never hear other processes.
        """
        found: set[str] = set()
        open_pattern = False
        for registration in self._registrations:
            if not registration.remote:
                continue
            if registration.namespaces is None:
                open_pattern = True
            else:
                found.update(registration.namespaces)
        return frozenset(found), open_pattern

    def lookup(self, name: str) -> tuple[Registration, ...]:
        """Return the registrations an event with this name reaches, in order (cached).

        Raise InvalidEventName for a name that is not valid.
        """
        registrations = self.cache.get(name)
        if registrations is not None:
            return registrations
        validate_name(name)
        generation = self._generation
        seen: set[Hashable] = set()
        matched = []
        for registration in list(self._registrations):
            # One call per listener per event, even when several of its
            # patterns match; the first (highest priority) wins.
            if registration.key not in seen and registration.regex.fullmatch(name):
                seen.add(registration.key)
                matched.append(registration)
        found = tuple(matched)
        with self.lock:
            # A connect or disconnect while we scanned makes the result stale.
            if generation == self._generation:
                if len(self.cache) >= events_settings.CACHE_SIZE:
                    self.cache = {}
                self.cache[name] = found
        return found
