"""The registry of listeners and the dispatcher that delivers events to them."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import threading
import types
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async

from .conf import events_settings
from .events import Event
from .exceptions import InvalidPattern
from .names import compile_pattern, literal_namespace, validate_name, validate_namespace

__all__ = [
    "Dispatcher",
    "PatternLike",
    "Registration",
    "adispatch",
    "connect",
    "disconnect",
    "dispatch",
    "get_dispatcher",
    "set_commit_hook",
]

logger = logging.getLogger("channels_events")

PatternLike: TypeAlias = "str | re.Pattern[str] | type[Event]"
ListenerCallable: TypeAlias = "Callable[[Event], Any]"
Publisher: TypeAlias = "Callable[[Event], None]"
CommitHook: TypeAlias = "Callable[[Event, Callable[[], None]], None]"

# Set by the ORM layer (apps.py) to run a callable when the current
# transaction commits; the core itself never imports django.db.
_commit_hook: CommitHook | None = None


def set_commit_hook(hook: CommitHook | None) -> None:
    """Install the function that defers work until the current transaction commits."""
    global _commit_hook
    _commit_hook = hook


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
    namespaces: frozenset[str] | None
    uid: Hashable
    #: The dispatch_uid, or the callback's identity: one call per event per key.
    key: Hashable
    seq: int
    active: bool = True
    #: True when none of once, filter, after_commit or async applies: the fast path.
    plain: bool = field(init=False)

    def __post_init__(self) -> None:
        self.plain = not (self.once or self.filter or self.after_commit or self.is_async)

    @property
    def description(self) -> str:
        """Return ``module.qualname`` of the callback, for logs and listings."""
        return _describe(self.callback)


class Dispatcher:
    """Hold listeners and deliver each event to those whose pattern fully matches its name.

    Listeners run by priority (higher first), then in registration order. The
    list of listeners for an event name is computed once and cached (bounded
    by the ``CACHE_SIZE`` setting) until a listener connects or disconnects,
    so dispatch cost does not grow with the number of patterns.

    A listener that raises is logged on the ``channels_events`` logger and the
    others still run; in strict mode the exception propagates instead.
    """

    def __init__(self, *, strict: bool | None = None, debug: bool | None = None) -> None:
        self._lock = threading.RLock()
        self._registrations: list[Registration] = []
        self._by_uid: dict[Hashable, Registration] = {}
        self._cache: dict[str, tuple[Registration, ...]] = {}
        self._generation = 0
        self._seq = itertools.count()
        self._strict_override = strict
        self._debug_override = debug
        self._settings_version = -1
        self._strict = False
        self._debug = False
        self._cache_size = 4096
        self._muted = 0
        self._taps: list[Callable[[Event], None]] = []
        self._publishers: list[Publisher] = []
        self._accepts: list[Callable[[Event], bool] | None] = []
        # Per event name: whether any publisher accepts it (see publishers_changed).
        self._wanted: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchers: list[Callable[[Dispatcher], None]] = []

    # -- registry ---------------------------------------------------------

    def connect(
        self,
        callback: ListenerCallable,
        pattern: PatternLike | Iterable[PatternLike],
        *,
        priority: int = 0,
        once: bool = False,
        filter: Callable[[Event], bool] | None = None,
        after_commit: bool = False,
        namespaces: Iterable[str] | None = None,
        dispatch_uid: Hashable | None = None,
    ) -> list[Registration]:
        """Connect ``callback`` to every event whose name fully matches ``pattern``.

        ``pattern`` may be a regex string, a compiled regex, an Event subclass or
        a list of those. Connecting the same callback to the same pattern again
        (or reusing a ``dispatch_uid``) replaces the earlier registration rather
        than adding a second one. ``namespaces`` declares which namespaces a
        pattern whose namespace part is not literal (``.*``) can match, so the
        hub knows which groups to join. ``after_commit`` delays the call until
        the current database transaction commits (sync dispatch only).
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
        registrations = []
        key = ("uid", dispatch_uid) if dispatch_uid is not None else _callback_id(callback)
        with self._lock:
            if dispatch_uid is not None:
                # Reusing a dispatch_uid replaces everything connected under it.
                for old in [r for r in self._registrations if r.key == key]:
                    self._remove(old)
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
                    namespaces=frozenset({literal}) if literal is not None else declared,
                    uid=uid,
                    key=key,
                    seq=next(self._seq),
                )
                replaced = self._by_uid.get(uid)
                if replaced is not None:
                    self._remove(replaced)
                self._by_uid[uid] = registration
                self._registrations.append(registration)
                registrations.append(registration)
            self._registrations.sort(key=lambda r: (-r.priority, r.seq))
            self._invalidate()
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
        with self._lock:
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
                self._remove(registration)
            if doomed:
                self._invalidate()
            return bool(doomed)

    def clear(self) -> None:
        """Disconnect every listener."""
        with self._lock:
            for registration in self._registrations:
                registration.active = False
            self._registrations.clear()
            self._by_uid.clear()
            self._invalidate()

    def _remove(self, registration: Registration) -> None:
        if registration.active:
            registration.active = False
            self._registrations.remove(registration)
            if self._by_uid.get(registration.uid) is registration:
                del self._by_uid[registration.uid]

    def _invalidate(self) -> None:
        self._generation += 1
        self._cache = {}
        for callback in self._watchers:
            callback(self)

    def watch(self, callback: Callable[[Dispatcher], None]) -> None:
        """Call ``callback(dispatcher)`` whenever listeners or taps change.

        Producers use it to stay unhooked from a source (a Django signal, say)
        while nothing would receive its events.
        """
        with self._lock:
            if callback not in self._watchers:
                self._watchers = [*self._watchers, callback]

    def unwatch(self, callback: Callable[[Dispatcher], None]) -> None:
        """Stop calling a callback given to :meth:`watch`."""
        with self._lock:
            self._watchers = [w for w in self._watchers if w != callback]

    def would_receive(self, name: str) -> bool:
        """Return whether a listener or a tap would see ``name``, muted or not."""
        return bool(self._taps) or bool(self.listeners_for(name))

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """Return every registration, in delivery order."""
        return tuple(self._registrations)

    def namespaces(self) -> tuple[frozenset[str], bool]:
        """Return the namespaces listeners are confined to, and whether any pattern is open.

        The flag is true when some pattern's namespace is neither literal nor
        declared, so it could match any namespace.
        """
        found: set[str] = set()
        open_pattern = False
        for registration in self._registrations:
            if registration.namespaces is None:
                open_pattern = True
            else:
                found.update(registration.namespaces)
        return frozenset(found), open_pattern

    def listeners_for(self, name: str) -> tuple[Registration, ...]:
        """Return the registrations an event with this name reaches, in order (cached)."""
        registrations = self._cache.get(name)
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
        with self._lock:
            # A connect or disconnect while we scanned makes the result stale.
            if generation == self._generation:
                self._refresh_settings()
                if len(self._cache) >= self._cache_size:
                    self._cache = {}
                self._cache[name] = found
        return found

    def has_receivers(self, name: str) -> bool:
        """Return whether dispatching ``name`` would reach a listener or a tap.

        Lets producers skip building payloads for local events nobody hears.
        """
        if self._taps:
            return True
        if self._muted:
            return False
        registrations = self._cache.get(name)
        if registrations is None:
            registrations = self.listeners_for(name)
        return bool(registrations)

    # -- settings ----------------------------------------------------------

    def _refresh_settings(self) -> None:
        version = events_settings.version
        if version == self._settings_version:
            return
        strict = self._strict_override
        debug = self._debug_override
        self._strict = bool(events_settings.STRICT) if strict is None else strict
        self._debug = bool(events_settings.DEBUG) if debug is None else debug
        self._cache_size = max(1, int(events_settings.CACHE_SIZE))
        self._settings_version = version
        # Publishers read settings too (the channel layer, local namespaces).
        self.publishers_changed()

    @property
    def strict(self) -> bool:
        """Return whether listener exceptions propagate instead of being logged."""
        self._refresh_settings()
        return self._strict

    @strict.setter
    def strict(self, value: bool | None) -> None:
        self._strict_override = value
        self._settings_version = -1

    # -- dispatch ----------------------------------------------------------

    def _coerce(self, event: Event | str, payload: Mapping[str, Any] | None) -> Event:
        if isinstance(event, Event):
            if payload is not None:
                raise TypeError(
                    f"dispatch() got an Event {event.name!r} and a payload; "
                    "the payload belongs in the Event."
                )
            return event
        return Event(event, payload)

    def dispatch(self, event: Event | str, payload: Mapping[str, Any] | None = None) -> Event:
        """Deliver an event to matching listeners, then hand it to the publishers.

        Works from any thread. Async listeners run through ``async_to_sync``,
        except on a thread whose event loop is running, where they are
        scheduled as tasks on that loop (so this call never blocks the loop;
        their exceptions are logged, even in strict mode).
        """
        if type(event) is str:
            # The common case, kept short: a cache hit means the name is valid.
            registrations = self._cache.get(event)
            if registrations is None:
                registrations = self.listeners_for(event)
            event = Event._adhoc(event, payload) if type(payload) is dict else Event(event, payload)
        else:
            if payload is not None or not isinstance(event, Event):
                event = self._coerce(event, payload)
            registrations = self._cache.get(event.name)
            if registrations is None:
                registrations = self.listeners_for(event.name)
        if self._settings_version != events_settings.version:
            self._refresh_settings()
        for tap in self._taps:
            tap(event)
        if registrations and not self._muted:
            for registration in registrations:
                if registration.plain:
                    try:
                        registration.callback(event)
                    except Exception:
                        self._failed(registration, event)
                else:
                    self._deliver_sync(registration, event)
        if self._debug:
            self._log_dispatch(event, registrations)
        if self._publishers and not self._muted and not event.local:
            wanted = self._wanted.get(event.name)
            if wanted is None:
                wanted = self._publishers_want(event)
            if wanted:
                self._hand_over(event)
        return event

    def _deliver_sync(self, registration: Registration, event: Event) -> None:
        if not self._admit(registration, event):
            return
        if registration.after_commit and _commit_hook is not None:
            _commit_hook(event, lambda: self._call_now(registration, event, deferred=True))
            return
        self._call_now(registration, event)

    def _call_now(self, registration: Registration, event: Event, deferred: bool = False) -> None:
        try:
            if not registration.is_async:
                registration.callback(event)
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                async_to_sync(registration.callback)(event)
            else:
                task = loop.create_task(self._run_task(registration, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except Exception:
            if deferred:
                # Raising inside on_commit would abort the remaining commit hooks.
                logger.exception(
                    "Listener %s failed on event %r after commit.",
                    registration.description,
                    event.name,
                )
            else:
                self._failed(registration, event)

    async def _run_task(self, registration: Registration, event: Event) -> None:
        try:
            await registration.callback(event)
        except Exception:
            logger.exception(
                "Listener %s failed on event %r.", registration.description, event.name
            )

    def _admit(self, registration: Registration, event: Event) -> bool:
        if registration.filter is not None:
            try:
                if not registration.filter(event):
                    return False
            except Exception:
                self._failed(registration, event, what="Filter of listener")
                return False
        if registration.once:
            with self._lock:
                if not registration.active:
                    return False
                self._remove(registration)
                self._invalidate()
        return True

    def _failed(self, registration: Registration, event: Event, what: str = "Listener") -> None:
        if self._strict:
            raise
        logger.exception("%s %s failed on event %r.", what, registration.description, event.name)

    async def adispatch(
        self, event: Event | str, payload: Mapping[str, Any] | None = None
    ) -> Event:
        """Deliver an event from async code, awaiting every listener in order.

        Async listeners are awaited on the running loop; runs of consecutive
        sync listeners are called through ``sync_to_async`` (thread-sensitive,
        as Django's ``Signal.asend`` does), so they may use the ORM.
        """
        event = self._coerce(event, payload)
        registrations = self.listeners_for(event.name)
        if self._settings_version != events_settings.version:
            self._refresh_settings()
        for tap in self._taps:
            tap(event)
        if registrations and not self._muted:
            pending: list[Registration] = []
            for registration in registrations:
                if registration.is_async:
                    if pending:
                        await sync_to_async(self._run_sync_batch)(pending, event)
                        pending = []
                    if self._admit(registration, event):
                        try:
                            await registration.callback(event)
                        except Exception:
                            self._failed(registration, event)
                else:
                    pending.append(registration)
            if pending:
                await sync_to_async(self._run_sync_batch)(pending, event)
        if self._debug:
            self._log_dispatch(event, registrations)
        if self._publishers and not self._muted and not event.local:
            wanted = self._wanted.get(event.name)
            if wanted is None:
                wanted = self._publishers_want(event)
            if wanted:
                self._hand_over(event)
        return event

    def _run_sync_batch(self, registrations: list[Registration], event: Event) -> None:
        for registration in registrations:
            if self._admit(registration, event):
                try:
                    registration.callback(event)
                except Exception:
                    self._failed(registration, event)

    async def drain(self) -> None:
        """Wait for async listeners that sync ``dispatch()`` scheduled on this loop."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _log_dispatch(self, event: Event, registrations: tuple[Registration, ...]) -> None:
        logger.info(
            "Dispatched %r to %d listener(s)%s%s",
            event.name,
            len(registrations),
            ": " if registrations else "",
            ", ".join(r.description for r in registrations),
        )

    # -- publication -------------------------------------------------------

    def add_publisher(
        self, publisher: Publisher, accepts: Callable[[Event], bool] | None = None
    ) -> None:
        """Register a callable that receives every event meant to leave the process.

        ``accepts(event)``, if given, says cheaply whether the publisher wants
        an event at all; when no publisher does, nothing is deferred to the
        end of the transaction for it. Its answer must depend on the event's
        name only: the dispatcher keeps it per name until settings change,
        a publisher is added or removed, or :meth:`publishers_changed` is
        called.
        """
        with self._lock:
            if publisher not in self._publishers:
                self._publishers = [*self._publishers, publisher]
                self._accepts = [*self._accepts, accepts]
            self.publishers_changed()

    def remove_publisher(self, publisher: Publisher) -> None:
        """Unregister a publisher added with :meth:`add_publisher`."""
        with self._lock:
            kept = [
                (p, a)
                for p, a in zip(self._publishers, self._accepts, strict=True)
                if p != publisher
            ]
            self._publishers = [p for p, _ in kept]
            self._accepts = [a for _, a in kept]
            self.publishers_changed()

    def publishers_changed(self) -> None:
        """Forget what publishers said they accept; call it when their answer changes.

        Thread-safe. The hub calls it when its websockets start or stop
        listening to a namespace.
        """
        self._wanted = {}

    def _publishers_want(self, event: Event) -> bool:
        # Kept in the dict that was current when we started: if publishers
        # changed meanwhile, the answer lands in a dict nobody reads any more.
        cache = self._wanted
        wanted = any(accepts is None or accepts(event) for accepts in self._accepts)
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[event.name] = wanted
        return wanted

    def publish(self, event: Event) -> None:
        """Hand an event to the publishers, after commit if the event asks for it.

        This is the one place where events leave the process. Model events set
        ``publish_on_commit``: inside a transaction they are handed over when
        it commits, and never if it rolls back.
        """
        if event.local or not self._publishers:
            return
        if any(accepts is None or accepts(event) for accepts in self._accepts):
            self._hand_over(event)

    def _hand_over(self, event: Event) -> None:
        if event.publish_on_commit and _commit_hook is not None:
            _commit_hook(event, lambda: self._publish_now(event))
        else:
            self._publish_now(event)

    def _publish_now(self, event: Event) -> None:
        for publisher in self._publishers:
            try:
                publisher(event)
            except Exception:
                logger.exception("Publisher %r failed on event %r.", publisher, event.name)

    # -- testing support ---------------------------------------------------

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """Call ``tap`` with every dispatched event, before listeners, even when muted."""
        with self._lock:
            self._taps = [*self._taps, tap]
            self._invalidate()

    def remove_tap(self, tap: Callable[[Event], None]) -> None:
        """Stop calling a tap added with :meth:`add_tap`."""
        with self._lock:
            self._taps = [t for t in self._taps if t != tap]
            self._invalidate()

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """Skip listeners and publishers inside the block; taps still see every event."""
        with self._lock:
            self._muted += 1
        try:
            yield
        finally:
            with self._lock:
                self._muted -= 1


_default = Dispatcher()


def get_dispatcher() -> Dispatcher:
    """Return the process-wide dispatcher that the module-level functions use."""
    return _default


def connect(
    callback: ListenerCallable,
    pattern: PatternLike | Iterable[PatternLike],
    **options: Any,
) -> list[Registration]:
    """Connect a listener to the default dispatcher; see :meth:`Dispatcher.connect`."""
    return _default.connect(callback, pattern, **options)


def disconnect(
    callback: ListenerCallable | None = None,
    pattern: PatternLike | None = None,
    *,
    dispatch_uid: Hashable | None = None,
) -> bool:
    """Disconnect a listener from the default dispatcher; see :meth:`Dispatcher.disconnect`."""
    return _default.disconnect(callback, pattern, dispatch_uid=dispatch_uid)


def dispatch(event: Event | str, payload: Mapping[str, Any] | None = None) -> Event:
    """Dispatch an event (or a name and payload) through the default dispatcher."""
    return _default.dispatch(event, payload)


def adispatch(event: Event | str, payload: Mapping[str, Any] | None = None) -> Awaitable[Event]:
    """Dispatch an event from async code through the default dispatcher."""
    return _default.adispatch(event, payload)
