"""The background pool: listeners declared ``background=True`` run here, off the caller's thread.

One :class:`BackgroundPool` per process holds a bounded number of pending
calls (``BACKGROUND_QUEUE_SIZE``) and runs them on at most
``BACKGROUND_WORKERS`` daemon threads, started as work arrives. Each
listener has a lane of its own: its calls run one at a time, in dispatch
order, while different listeners' lanes run side by side. The caller's
cost is one append under a lock.

A call that finds the pool full is refused, and the refusal logged with the
listener, the event's name and its id: the caller is never blocked (it may
be an event loop, or a background listener dispatching in turn) and the
calls already queued keep their order. Work that must not be lost belongs
in a task listener (``task=True``).

Pending calls are finished at a normal exit (``atexit``, within
``BACKGROUND_EXIT_TIMEOUT``) and when :class:`HubMiddleware` answers
``lifespan.shutdown``; :func:`drain` waits for them on demand (tests).

A call runs in the trace context that was current when it was queued (the
span active at ``dispatch()``, or a remote event's delivery span), inside a
span of its own (``_tracing.py``). Failures and refusals are counted
(``_metrics.py``): a failure as a listener failure, a refusal as a drop of
cause ``background_queue_full``.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from ._conf import events_settings
from ._metrics import metrics
from ._tracing import current as current_trace
from ._tracing import run_in as run_traced

if TYPE_CHECKING:
    from ._events import Event
    from ._registry import Registration

__all__ = ["BackgroundPool", "drain", "get_pool"]

logger = logging.getLogger("channels_events")

#: A listener, its event, and the trace context to run it in (None: no span was active).
Call = tuple["Registration", "Event", Any]


class BackgroundPool:
    """Run queued listener calls on a few threads, in order per listener."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Listener key -> its calls not started yet; a key is here while its
        #: lane is waiting in ``_ready`` or being run by a thread.
        self._lanes: dict[Hashable, collections.deque[Call]] = {}
        #: Lanes with work that no thread is running, oldest first.
        self._ready: collections.deque[Hashable] = collections.deque()
        #: Calls queued or running.
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._exit_registered = False
        self._refused = 0

    @property
    def pending(self) -> int:
        """Return how many calls are queued or running."""
        return self._pending

    @property
    def refused(self) -> int:
        """Return how many calls were refused because the pool was full (since start)."""
        return self._refused

    def submit(self, registration: Registration, event: Event) -> bool:
        """Queue one call of ``registration``'s listener; return False if the pool is full."""
        trace_context = current_trace()
        with self._cond:
            if self._pending >= events_settings.BACKGROUND_QUEUE_SIZE:
                self._refused += 1
                full = True
            else:
                full = False
                key = registration.key
                lane = self._lanes.get(key)
                if lane is None:
                    lane = self._lanes[key] = collections.deque()
                    self._ready.append(key)
                lane.append((registration, event, trace_context))
                self._pending += 1
                if self._idle:
                    self._cond.notify()
                elif len(self._threads) < events_settings.BACKGROUND_WORKERS:
                    self._start_thread()
        if full:
            metrics.dropped("background_queue_full")
            logger.error(
                "Background listener %s not run for event %r (id %s): %d call(s) already "
                "queued (BACKGROUND_QUEUE_SIZE).",
                registration.description,
                event.name,
                event.id,
                events_settings.BACKGROUND_QUEUE_SIZE,
            )
            return False
        return True

    def _start_thread(self) -> None:
        """Start one more worker thread; call with the lock held."""
        thread = threading.Thread(
            target=self._work, name=f"channels-events-background-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        if not self._exit_registered:
            # Registered after the hub's own exit hook (get_hub() runs at
            # start-up), so it runs first: what the listeners dispatch at
            # exit is still published.
            atexit.register(_finish_at_exit)
            self._exit_registered = True
        thread.start()

    def _work(self) -> None:
        current = threading.current_thread()
        _pool_threads.add(current)
        cond = self._cond
        while True:
            with cond:
                while not self._ready:
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                key = self._ready.popleft()
                lane = self._lanes[key]
                registration, event, trace_context = lane.popleft()
            try:
                self._run(registration, event, trace_context)
            finally:
                with cond:
                    if lane:
                        # Back of the line: one busy listener does not starve others.
                        self._ready.append(key)
                        cond.notify()
                    else:
                        del self._lanes[key]
                    self._pending -= 1
                    if not self._pending:
                        cond.notify_all()

    def _run(self, registration: Registration, event: Event, trace_context: Any) -> None:
        try:
            run_traced(
                trace_context,
                "background",
                registration.description,
                event,
                lambda: self._call(registration, event),
            )
        except Exception:
            metrics.listener_failed(event)
            logger.exception(
                "Background listener %s failed on event %r (id %s).",
                registration.description,
                event.name,
                event.id,
            )
        finally:
            # As after a request: a listener's database connection does not
            # outlive CONN_MAX_AGE, nor a broken one the next call.
            from django.db import close_old_connections

            close_old_connections()

    @staticmethod
    def _call(registration: Registration, event: Event) -> None:
        if registration.is_async:
            async_to_sync(registration.callback)(event)
        else:
            registration.callback(event)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every call queued so far has run; return False on timeout."""
        if threading.current_thread() in _pool_threads:
            raise RuntimeError(
                "drain() was called from a background listener; it would wait for itself."
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def _after_fork(self) -> None:
        # The parent's threads do not exist in the child, and its queued
        # calls are the parent's to run.
        self._cond = threading.Condition()
        self._lanes = {}
        self._ready = collections.deque()
        self._pending = 0
        self._threads = []
        self._idle = 0


_pool_threads: set[threading.Thread] = set()
_pool = BackgroundPool()


def get_pool() -> BackgroundPool:
    """Return this process's background pool."""
    return _pool


def drain(timeout: float | None = None) -> bool:
    """Wait until every background listener call queued so far has run.

    Return False if ``timeout`` seconds passed first. Calls queued while
    waiting are waited for too. Raise RuntimeError from a background
    listener, which would wait for itself.
    """
    return _pool.drain(timeout)


def _finish_at_exit() -> None:
    pool = _pool
    if not pool.pending:
        return
    timeout = events_settings.BACKGROUND_EXIT_TIMEOUT
    if not pool.drain(timeout):
        logger.error(
            "%d background listener call(s) did not finish before exit "
            "(BACKGROUND_EXIT_TIMEOUT=%ss).",
            pool.pending,
            timeout,
        )


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_pool._after_fork)
