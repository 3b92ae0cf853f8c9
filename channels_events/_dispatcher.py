"""The dispatcher: runs each event's listeners under one set of rules, then publishes it.

A :class:`Dispatcher` holds a :class:`~channels_events._registry.Registry`
(who listens to which names) and its :class:`Publishers` (where events leave
the process: the hub, in practice). The rules a listener is run under
(priority across sync and async listeners, ``once``, ``filter``,
``after_commit``, ``remote``, muting, taps, strict mode) live here once, and
both ways of running listeners apply them: :meth:`Dispatcher.dispatch` from
sync code, and :meth:`Dispatcher.deliver` from async code, which
:meth:`Dispatcher.adispatch` and the hub's remote events use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import (
    Awaitable,
    Callable,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from typing import Any, TypeAlias

from asgiref.sync import async_to_sync, sync_to_async

from ._conf import events_settings, on_change
from ._events import Event, event_classes
from ._metrics import metrics
from ._others import skipped_connections
from ._registry import ListenerCallable, PatternLike, Registration, Registry
from ._tracing import capture as capture_trace

__all__ = [
    "CommitHook",
    "Dispatcher",
    "PatternLike",
    "Publisher",
    "Publishers",
    "Registration",
    "SyncRunner",
    "adispatch",
    "connect",
    "disconnect",
    "dispatch",
    "get_dispatcher",
    "set_commit_hook",
]

logger = logging.getLogger("channels_events")

Publisher: TypeAlias = "Callable[[Event], None]"
CommitHook: TypeAlias = "Callable[[Event, Callable[[], None]], None]"
Calls: TypeAlias = "list[tuple[Registration, Event]]"
#: Runs ``func(calls)`` on a thread where sync listeners may block (and use the ORM).
SyncRunner: TypeAlias = "Callable[[Callable[[Calls], None], Calls], Awaitable[None]]"

#: Runs a callable when the current transaction commits (None: right away).
_commit_hook: CommitHook | None = None


def set_commit_hook(hook: CommitHook | None) -> None:
    """Install the function that defers work until the current transaction commits.

    The ORM side (apps.py) installs it, so that the dispatcher never imports
    ``django.db``.
    """
    global _commit_hook
    _commit_hook = hook


async def _in_sync_thread(func: Callable[[Calls], None], calls: Calls) -> None:
    # Thread-sensitive, as Django's Signal.asend: sync listeners may use the ORM.
    await sync_to_async(func, thread_sensitive=True)(calls)


class Publishers:
    """The callables events leave the process through, and which names they want."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        #: The publishers and their ``accepts``, in the order they were added.
        self.entries: tuple[tuple[Publisher, Callable[[Event], bool] | None], ...] = ()
        #: Per event name: whether any publisher accepts it (see :meth:`want`).
        self.wanted: dict[str, bool] = {}

    def add(self, publisher: Publisher, accepts: Callable[[Event], bool] | None = None) -> None:
        """Register ``publisher``; ``accepts(event)`` says cheaply whether it wants an event.

        The answer of ``accepts`` must depend on the event's name only: it is
        kept per name until :meth:`changed` is called.
        """
        with self._lock:
            if all(p != publisher for p, _ in self.entries):
                self.entries = (*self.entries, (publisher, accepts))
            self.changed()

    def remove(self, publisher: Publisher) -> None:
        """Unregister a publisher."""
        with self._lock:
            self.entries = tuple((p, a) for p, a in self.entries if p != publisher)
            self.changed()

    def changed(self) -> None:
        """Forget what the publishers said they accept (thread-safe)."""
        self.wanted = {}

    def want(self, event: Event) -> bool:
        """Return whether any publisher accepts ``event``, asking once per name."""
        wanted = self.wanted.get(event.name)
        if wanted is None:
            # Kept in the dict current when we started: if publishers changed
            # meanwhile, the answer lands in a dict nobody reads any more.
            cache = self.wanted
            wanted = any(accepts is None or accepts(event) for _, accepts in self.entries)
            if len(cache) >= events_settings.CACHE_SIZE:
                cache.clear()
            cache[event.name] = wanted
        return wanted

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every publisher; one that raises is logged, the others still run."""
        for publisher, _ in self.entries:
            try:
                publisher(event)
            except Exception:
                logger.exception("Publisher %r failed on event %r.", publisher, event.name)


class Dispatcher:
    """Deliver each event to the listeners whose pattern fully matches its name.

    Listeners run by priority (higher first), then in registration order,
    sync and async alike. The listeners of an event name are found once and
    cached (``CACHE_SIZE`` names) until a listener connects or disconnects, so
    dispatch cost does not grow with the number of patterns.

    A listener that raises is logged on the ``channels_events`` logger and the
    others still run; in strict mode (the ``STRICT`` setting, or
    ``strict=True``) the exception propagates instead.
    """

    def __init__(self, *, strict: bool | None = None, debug: bool | None = None) -> None:
        self.registry = Registry(owner=self)
        self._lock = self.registry.lock
        self.publishers = Publishers(self._lock)
        self._strict_override = strict
        self._debug_override = debug
        self._strict = False
        self._debug = False
        self._settings_read = False
        # True when no tap, mute or debug log applies and settings are read:
        # then dispatch() applies no rule beyond the registrations' own.
        self._plain = False
        self._muted = 0
        self._taps: tuple[Callable[[Event], None], ...] = ()
        self._tasks: set[asyncio.Task[Any]] = set()
        on_change(self._settings_changed)

    # -- listeners ---------------------------------------------------------

    def connect(
        self,
        callback: ListenerCallable,
        pattern: PatternLike | Iterable[PatternLike],
        **options: Any,
    ) -> list[Registration]:
        """Connect a listener; see :meth:`Registry.connect` for the options."""
        return self.registry.connect(callback, pattern, **options)

    def disconnect(
        self,
        callback: ListenerCallable | None = None,
        pattern: PatternLike | None = None,
        *,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """Disconnect a listener; see :meth:`Registry.disconnect`."""
        return self.registry.disconnect(callback, pattern, dispatch_uid=dispatch_uid)

    def clear(self) -> None:
        """Disconnect every listener."""
        self.registry.clear()

    @property
    def registrations(self) -> tuple[Registration, ...]:
        """Return every registration, in delivery order."""
        return self.registry.registrations

    def listeners_for(self, name: str) -> tuple[Registration, ...]:
        """Return the registrations an event named ``name`` reaches, in order."""
        return self.registry.lookup(name)

    def namespaces(self) -> tuple[frozenset[str], bool]:
        """Return the namespaces listeners are confined to, and whether any pattern is open."""
        return self.registry.namespaces()

    def watch(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(dispatcher)`` whenever listeners or taps change."""
        self.registry.watch(callback)

    def unwatch(self, callback: Callable[[Any], None]) -> None:
        """Stop calling a callback given to :meth:`watch`."""
        self.registry.unwatch(callback)

    def would_receive(self, name: str) -> bool:
        """Return whether a listener or a tap would see ``name``, muted or not."""
        return bool(self._taps) or bool(self.registry.lookup(name))

    def has_receivers(self, name: str) -> bool:
        """Return whether dispatching ``name`` would reach a listener or a tap.

        Lets producers skip building payloads for local events nobody hears.
        """
        if self._taps:
            return True
        return not self._muted and bool(self.registry.lookup(name))

    # -- publishers --------------------------------------------------------

    def add_publisher(
        self, publisher: Publisher, accepts: Callable[[Event], bool] | None = None
    ) -> None:
        """Register a callable that receives every event meant to leave the process.

        See :meth:`Publishers.add`.
        """
        self.publishers.add(publisher, accepts)

    def remove_publisher(self, publisher: Publisher) -> None:
        """Unregister a publisher added with :meth:`add_publisher`."""
        self.publishers.remove(publisher)

    def publishers_changed(self) -> None:
        """Forget what publishers said they accept; call it when their answer changes."""
        self.publishers.changed()

    def publish(self, event: Event) -> None:
        """Hand an event to the publishers, after commit if the event asks for it.

        Local events and events no publisher accepts go nowhere. Model events
        set ``publish_on_commit``: inside a transaction they are handed over
        when it commits, and never if it rolls back.
        """
        if self._leaves(event):
            self._hand_over(event)

    def _leaves(self, event: Event) -> bool:
        """Return whether ``event`` would be handed to the publishers."""
        publishers = self.publishers
        return bool(publishers.entries) and not event.local and publishers.want(event)

    def _hand_over(self, event: Event) -> None:
        skipped = skipped_connections()
        if skipped:
            # Read at dispatch, while the request that caused the event is
            # handled: a model event is handed over later, on commit.
            event.skip_connections = event.skip_connections | skipped
        publishers = self.publishers
        if event.publish_on_commit and _commit_hook is not None:
            _commit_hook(event, lambda: publishers.publish(event))
        else:
            publishers.publish(event)

    # -- settings and rules --------------------------------------------------

    def _settings_changed(self) -> None:
        with self._lock:
            self._settings_read = False
            self._plain = False
        self.publishers.changed()

    def _read_settings(self) -> None:
        strict, debug = self._strict_override, self._debug_override
        self._strict = bool(events_settings.STRICT) if strict is None else strict
        self._debug = bool(events_settings.DEBUG) if debug is None else debug
        self._settings_read = True

    def _recompute_plain(self) -> None:
        """Decide whether dispatch() may skip the rules; call with the lock held."""
        if not self._settings_read:
            self._read_settings()
        self._plain = not (self._taps or self._muted or self._debug)

    @property
    def strict(self) -> bool:
        """Return whether listener exceptions propagate instead of being logged."""
        if not self._settings_read:
            with self._lock:
                self._read_settings()
        return self._strict

    @strict.setter
    def strict(self, value: bool | None) -> None:
        with self._lock:
            self._strict_override = value
            self._settings_read = False
            self._plain = False

    def _rules(
        self, event: Event, registrations: tuple[Registration, ...]
    ) -> tuple[Registration, ...]:
        """Apply what dispatch() skips when the dispatcher is plain; return who hears ``event``.

        Taps see every event, muted or not; the debug log names the listeners;
        a muted dispatcher runs none.
        """
        if not self._settings_read or not (self._taps or self._muted or self._debug):
            with self._lock:
                self._recompute_plain()
        for tap in self._taps:
            tap(event)
        if self._debug:
            logger.info(
                "Dispatching %r to %d listener(s)%s%s",
                event.name,
                len(registrations),
                ": " if registrations else "",
                ", ".join(r.description for r in registrations),
            )
        return () if self._muted else registrations

    def _listeners(self, event: Event) -> tuple[Registration, ...]:
        """Return the registrations that hear ``event``, in order, with every rule applied."""
        registrations = self.registry.lookup(event.name)
        if not self._plain:
            registrations = self._rules(event, registrations)
        if event.is_remote and registrations:
            registrations = tuple(r for r in registrations if r.remote)
        return registrations

    def _admit(self, registration: Registration, event: Event) -> bool:
        """Apply a registration's filter and ``once``; return whether it runs now."""
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
                self.registry.remove(registration)
                self.registry.changed()
        return True

    def _failed(self, registration: Registration, event: Event, what: str = "Listener") -> None:
        metrics.listener_failed(event)
        if self.strict:
            raise
        logger.exception("%s %s failed on event %r.", what, registration.description, event.name)

    def _call(self, registration: Registration, event: Event) -> None:
        """Run one admitted listener from sync code, after commit if it asks."""
        if registration.after_commit and _commit_hook is not None:
            _commit_hook(event, lambda: self._call_after_commit(registration, event))
            return
        try:
            self._run(registration, event)
        except Exception:
            self._failed(registration, event)

    def _run(self, registration: Registration, event: Event) -> None:
        if registration.runs != "inline":
            registration.hand_off(event)
        elif registration.is_async:
            self._run_async_from_sync(registration, event)
        else:
            registration.callback(event)

    def _call_after_commit(self, registration: Registration, event: Event) -> None:
        try:
            self._run(registration, event)
        except Exception:
            # Raising inside on_commit would abort the remaining commit hooks.
            metrics.listener_failed(event)
            logger.exception(
                "Listener %s failed on event %r after commit.", registration.description, event.name
            )

    def _run_async_from_sync(self, registration: Registration, event: Event) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            async_to_sync(registration.callback)(event)
            return
        # dispatch() was called on a running loop's thread: it must not block
        # the loop, so the listener runs as a task (see drain()).
        task = loop.create_task(self._run_task(registration, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_task(self, registration: Registration, event: Event) -> None:
        try:
            await registration.callback(event)
        except Exception:
            metrics.listener_failed(event)
            logger.exception(
                "Listener %s failed on event %r.", registration.description, event.name
            )

    def _call_all(self, calls: Calls) -> None:
        for registration, event in calls:
            if self._admit(registration, event):
                self._call(registration, event)

    # -- dispatch ----------------------------------------------------------

    def dispatch(self, event: Event | str, payload: Mapping[str, Any] | None = None) -> Event:
        """Deliver an event to matching listeners, then hand it to the publishers.

        ``event`` is an :class:`Event`, or a name with a ``payload`` dict (a
        name an Event subclass declares builds that subclass); a payload that
        cannot travel raises InvalidPayload, and an envelope over
        ``MAX_EVENT_BYTES`` EventTooLarge, before any listener runs. Works
        from any thread. Async listeners run through ``async_to_sync``, except on a
        thread whose event loop is running, where they are scheduled as tasks
        on that loop (so this call never blocks the loop; their exceptions are
        logged, even in strict mode).
        """
        # Attribute reads and dict look-ups, no calls, in the usual case: this
        # runs for every event (bench/dispatch.py).
        registry = self.registry
        if type(event) is str:
            registrations = registry.cache.get(event)
            if registrations is None:
                registrations = registry.lookup(event)  # validates the name
            if type(payload) is dict and event not in event_classes:
                event = Event._adhoc(event, payload)
            else:
                event = Event(event, payload)
        else:
            if payload is not None or not isinstance(event, Event):
                event = self._coerce(event, payload)
            registrations = registry.cache.get(event.name)
            if registrations is None:
                registrations = registry.lookup(event.name)
        publishers = self.publishers
        # A name no publisher wants (known per name) costs no call.
        wanted = publishers.wanted.get(event.name)
        leaves = (
            publishers.entries
            and wanted is not False
            and not self._muted
            and not event.local
            and (wanted or publishers.want(event))
        )
        if leaves:
            # A payload that cannot travel, or is too large, stops here,
            # before any listener: the one encoding step decides.
            event._payload_json()
            capture_trace(event)
        metrics.dispatched(event)
        if not self._plain:
            registrations = self._rules(event, registrations)
        for registration in registrations:
            if registration.plain:
                try:
                    registration.callback(event)
                except Exception:
                    self._failed(registration, event)
            elif self._admit(registration, event):
                self._call(registration, event)
        if leaves:
            self._hand_over(event)
        return event

    async def adispatch(
        self, event: Event | str, payload: Mapping[str, Any] | None = None
    ) -> Event:
        """Deliver an event from async code, awaiting every listener in order.

        Async listeners are awaited on the running loop; runs of consecutive
        sync listeners are called through ``sync_to_async`` (thread-sensitive,
        as Django's ``Signal.asend`` does), so they may use the ORM.
        """
        event = self._coerce(event, payload)
        leaves = not self._muted and self._leaves(event)
        if leaves:
            event._payload_json()  # refused here, before any listener
            capture_trace(event)
        metrics.dispatched(event)
        await self.deliver([event])
        if leaves:
            self._hand_over(event)
        return event

    async def deliver(self, events: Sequence[Event], run_sync: SyncRunner | None = None) -> None:
        """Run the listeners of each event, in order, under the same rules as dispatch().

        Async listeners are awaited here; consecutive sync listeners (across
        events too) are handed to ``run_sync`` as one batch, by default a
        thread-sensitive ``sync_to_async``. Nothing is published: this is how
        :meth:`adispatch` and events received from other processes reach
        listeners. Listeners connected with ``remote=False`` skip events whose
        ``is_remote`` is true.
        """
        runner = run_sync or _in_sync_thread
        calls: Calls = []
        for event in events:
            for registration in self._listeners(event):
                # after_commit listeners, async ones too, go where the
                # transaction is: the sync thread, which defers them. So do
                # background and task listeners (a task is enqueued with the
                # ORM, inside the caller's transaction or at its commit).
                if (
                    not registration.is_async
                    or registration.after_commit
                    or registration.runs != "inline"
                ):
                    calls.append((registration, event))
                    continue
                if calls:
                    await runner(self._call_all, calls)
                    calls = []
                if self._admit(registration, event):
                    try:
                        await registration.callback(event)
                    except Exception:
                        self._failed(registration, event)
        if calls:
            await runner(self._call_all, calls)

    def _coerce(self, event: Event | str, payload: Mapping[str, Any] | None) -> Event:
        if isinstance(event, Event):
            if payload is not None:
                raise TypeError(
                    f"dispatch() got an Event {event.name!r} and a payload; "
                    "the payload belongs in the Event."
                )
            return event
        return Event(event, payload)

    async def drain(self) -> None:
        """Wait for async listeners that sync ``dispatch()`` scheduled on this loop."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- testing support ---------------------------------------------------

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """Call ``tap`` with every event before its listeners, even when muted."""
        with self._lock:
            self._taps = (*self._taps, tap)
            self._recompute_plain()
            self.registry.changed()

    def remove_tap(self, tap: Callable[[Event], None]) -> None:
        """Stop calling a tap added with :meth:`add_tap`."""
        with self._lock:
            self._taps = tuple(t for t in self._taps if t != tap)
            self._recompute_plain()
            self.registry.changed()

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """Skip listeners and publishers inside the block; taps still see every event."""
        with self._lock:
            self._muted += 1
            self._recompute_plain()
        try:
            yield
        finally:
            with self._lock:
                self._muted -= 1
                self._recompute_plain()


_default = Dispatcher()


def get_dispatcher() -> Dispatcher:
    """Return the process-wide dispatcher that the module-level functions use."""
    return _default


def connect(
    callback: ListenerCallable,
    pattern: PatternLike | Iterable[PatternLike],
    **options: Any,
) -> list[Registration]:
    """Connect a listener to the default dispatcher; see :meth:`Registry.connect`."""
    return _default.connect(callback, pattern, **options)


def disconnect(
    callback: ListenerCallable | None = None,
    pattern: PatternLike | None = None,
    *,
    dispatch_uid: Hashable | None = None,
) -> bool:
    """Disconnect a listener from the default dispatcher; see :meth:`Registry.disconnect`."""
    return _default.disconnect(callback, pattern, dispatch_uid=dispatch_uid)


def dispatch(event: Event | str, payload: Mapping[str, Any] | None = None) -> Event:
    """Dispatch an event (or a name and payload) through the default dispatcher."""
    return _default.dispatch(event, payload)


def adispatch(event: Event | str, payload: Mapping[str, Any] | None = None) -> Awaitable[Event]:
    """Dispatch an event from async code through the default dispatcher."""
    return _default.adispatch(event, payload)
