"""The dispatcher: delivers each event to the listeners the registry finds for it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async

from . import _publishing
from ._conf import events_settings
from ._events import Event
from ._publishing import Publisher, Publishing, set_commit_hook
from ._registry import (
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


class Dispatcher(Registry, Publishing):
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
        # The settings version under which dispatch() may take its short path
        # (no taps, not muted, not in debug mode), or -1: one comparison on
        # every dispatch instead of four. See _plain_changed().
        self._plain_version = -1
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

    def _plain_changed(self) -> None:
        """Recompute whether dispatch() may take its short path; call with the lock held.

        The version is read before the flags: _refresh_settings() writes the
        flags first, so a refresh running meanwhile on another thread leaves
        either an old version (the next dispatch refreshes) or new flags.
        """
        version = self._settings_version
        plain = not (self._taps or self._muted or self._debug)
        self._plain_version = version if plain else -1

    @property
    def strict(self) -> bool:
        """Return whether listener exceptions propagate instead of being logged."""
        self._refresh_settings()
        return self._strict

    @strict.setter
    def strict(self, value: bool | None) -> None:
        with self._lock:
            self._strict_override = value
            self._settings_version = self._plain_version = -1

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
        # No taps, no mute, no debug log and settings as last read (the usual
        # case) cost one comparison here and two tests of a local below.
        if self._plain_version == events_settings.version:
            muted = False
        else:
            muted = self._before_listeners(event, registrations)
        for registration in () if muted else registrations:
            if registration.plain:
                try:
                    registration.callback(event)
                except Exception:
                    self._failed(registration, event)
            else:
                self._deliver_sync(registration, event)
        # A name no publisher wants (cached) costs no call.
        if self._publishers and not muted and self._wanted.get(event.name) is not False:
            self.publish(event)
        return event

    def _before_listeners(self, event: Event, registrations: tuple[Registration, ...]) -> bool:
        """Do what dispatch() skips in the usual case; return whether the dispatcher is muted.

        Reads changed settings, decides whether the next dispatch can skip
        this again, runs the taps (which see events even when muted) and
        writes the debug log.
        """
        if self._settings_version != events_settings.version:
            self._refresh_settings()
        if not (self._taps or self._muted or self._debug):
            with self._lock:
                self._plain_changed()
        for tap in self._taps:
            tap(event)
        if self._debug:
            self._log_dispatch(event, registrations)
        return bool(self._muted)

    def _deliver_sync(self, registration: Registration, event: Event) -> None:
        if not self._admit(registration, event):
            return
        commit_hook = _publishing.commit_hook
        if registration.after_commit and commit_hook is not None:
            commit_hook(event, lambda: self._call_now(registration, event, deferred=True))
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
        if self._debug:
            self._log_dispatch(event, registrations)
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
            "Dispatching %r to %d listener(s)%s%s",
            event.name,
            len(registrations),
            ": " if registrations else "",
            ", ".join(r.description for r in registrations),
        )

    # -- testing support ---------------------------------------------------

    def add_tap(self, tap: Callable[[Event], None]) -> None:
        """Call ``tap`` with every dispatched event, before listeners, even when muted."""
        with self._lock:
            self._taps = [*self._taps, tap]
            self._plain_changed()
            self._invalidate()

    def remove_tap(self, tap: Callable[[Event], None]) -> None:
        """Stop calling a tap added with :meth:`add_tap`."""
        with self._lock:
            self._taps = [t for t in self._taps if t != tap]
            self._plain_changed()
            self._invalidate()

    @contextlib.contextmanager
    def muted(self) -> Iterator[None]:
        """Skip listeners and publishers inside the block; taps still see every event."""
        with self._lock:
            self._muted += 1
            self._plain_changed()
        try:
            yield
        finally:
            with self._lock:
                self._muted -= 1
                self._plain_changed()


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
