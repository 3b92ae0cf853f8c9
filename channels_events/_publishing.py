"""Where events leave the process: the dispatcher's publishers, after commit when asked.

Publishers (the hub, in practice) get every event that is not local. Model
events wait for the transaction to commit: the ORM side installs the hook
that defers them (:func:`set_commit_hook`, from apps.py), so that the core
never imports ``django.db``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeAlias

from ._events import Event

__all__ = ["CommitHook", "Publisher", "Publishing", "set_commit_hook"]

logger = logging.getLogger("channels_events")

Publisher: TypeAlias = "Callable[[Event], None]"
CommitHook: TypeAlias = "Callable[[Event, Callable[[], None]], None]"

#: Runs a callable when the current transaction commits (None: right away).
commit_hook: CommitHook | None = None


def set_commit_hook(hook: CommitHook | None) -> None:
    """Install the function that defers work until the current transaction commits."""
    global commit_hook
    commit_hook = hook


class Publishing:
    """Hand events to the publishers (mixed into Dispatcher)."""

    # Set up by Dispatcher.__init__ and Registry.__init__.
    _lock: threading.RLock
    _publishers: list[Publisher]
    _accepts: list[Callable[[Event], bool] | None]
    _wanted: dict[str, bool]
    _cache_size: int

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
        if event.publish_on_commit and commit_hook is not None:
            commit_hook(event, lambda: self._publish_now(event))
        else:
            self._publish_now(event)

    def _publish_now(self, event: Event) -> None:
        for publisher in self._publishers:
            try:
                publisher(event)
            except Exception:
                logger.exception("Publisher %r failed on event %r.", publisher, event.name)
