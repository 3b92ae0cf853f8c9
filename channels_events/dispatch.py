"""The dispatcher: delivers each event to the listeners the registry finds for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeAlias

from asgiref.sync import async_to_sync, sync_to_async

from .conf import events_settings
from .events import Event
from .registry import (
    ListenerCallable,
    PatternLike,
    Registration,
    Registry,
)

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

Publisher: TypeAlias = "Callable[[Event], None]"
CommitHook: TypeAlias = "Callable[[Event, Callable[[], None]], None]"

# Set by the ORM layer (apps.py) to run a callable when the current
# transaction commits; the core itself never imports django.db.
_commit_hook: CommitHook | None = None


def set_commit_hook(hook: CommitHook | None) -> None:
    """Install the function that defers work until the current transaction commits."""
    global _commit_hook
    _commit_hook = hook


class Dispatcher(Registry):
    """Hold listeners and deliver each event to those whose pattern fully matches its name.

    Listeners run by priority (higher first), then in registration order. The
    list of listeners for an event name is computed once and cached (bounded
    by the ``CACHE_SIZE`` setting) until a listener connects or disconnects,
    so dispatch cost does not grow with the number of patterns.

    A listener that raises is logged on the ``channels_events`` logger and the
    others still run; in strict mode the exception propagates instead.
    """

    def __init__(self, *, strict: bool | None = None, debug: bool | None = None) -> None:
        super().__init__()
        self._strict_override = strict
        self._debug_override = debug
        self._settings_version = -1
        self._strict = False
        self._debug = False
        self._muted = 0
        self._taps: list[Callable[[Event], None]] = []
        self._publishers: list[Publisher] = []
        self._accepts: list[Callable[[Event], bool] | None] = []
        # Per event name: whether any publisher accepts it (see publishers_changed).
        self._wanted: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def would_receive(self, name: str) -> bool:
        """Return whether a listener or a tap would see ``name``, muted or not."""
        return bool(self._taps) or bool(self.listeners_for(name))

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
        # A name no publisher wants (cached) costs no call.
        if self._publishers and not self._muted and self._wanted.get(event.name) is not False:
            self.publish(event)
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
        # A name no publisher wants (cached) costs no call.
        if self._publishers and not self._muted and self._wanted.get(event.name) is not False:
            self.publish(event)
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
        wanted = self._wanted.get(event.name)
        if wanted is None:
            wanted = self._publishers_want(event)
        if not wanted:
            return  # no publisher wants it: defer nothing to the commit
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
