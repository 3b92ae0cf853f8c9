"""The per-process hub: publishes events to the channel layer and receives other processes'.

One hub per process owns one event loop (the ASGI server's, or a background
thread's) and, on it, one channel-layer channel. Publishing (outbox.py)
queues envelopes from any thread and sends them from that loop, coalescing
bursts of one namespace into one message (PROTOCOL.md section 3). Receiving
(inbox.py) joins ``<GROUP_PREFIX>.<namespace>`` for every namespace something
in the process listens to, and hands each batch of remote events to the local
listeners and to registered subscribers (websocket connections). This module
holds the loop, the thread, start and stop.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._conf import events_settings
from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._history import History, history_for
from ._receiver import Inbox, Subscriber
from ._sender import (
    BATCH_TYPE,
    EVENT_TYPE,
    Outbox,
    _running_loop,
    group_name,
)

__all__ = [
    "BATCH_TYPE",
    "EVENT_TYPE",
    "Hub",
    "HubMiddleware",
    "Subscriber",
    "get_hub",
    "group_name",
    "start_hub",
]

logger = logging.getLogger("channels_events.hub")

# Seconds stop() waits for the hub's tasks, and for its thread to end.
_STOP_TIMEOUT = 5.0


class Hub(Inbox, Outbox):  # Inbox first: its _fan_out is the one Outbox's stub names
    """Connect this process's dispatcher to the channel layer, both ways."""

    def __init__(self, dispatcher: Dispatcher | None = None, alias: str | None = None) -> None:
        self.dispatcher = dispatcher or get_dispatcher()
        self._alias = alias
        self._reset()

    def _reset(self) -> None:
        """Set every piece of state to its start: on creation, and in a forked child."""
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._layer: Any = None
        self._history: History | None = None
        self._layer_version = -1
        self._outbox: collections.deque[tuple[str, Event]] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._wake_pending = False
        self._idle = threading.Event()
        self._idle.set()
        self._room = threading.Event()
        self._failing = False
        self._sender: asyncio.Task[None] | None = None
        self._pending: tuple[str, list[dict[str, Any]]] | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._remote: asyncio.Queue[list[Event]] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self.dropped_remote = 0
        self._receiver: asyncio.Task[None] | None = None
        # The layer the receiver reads and joined groups on.
        self._receiving_layer: Any = None
        self._refresher: asyncio.Task[None] | None = None
        self._channel: str | None = None
        self._joined: set[str] = set()
        # Subscribers indexed by the namespaces they asked for.
        self._subscribers: dict[Subscriber, frozenset[str]] = {}
        self._by_namespace: dict[str, set[Subscriber]] = {}
        self._groups_dirty: asyncio.Event | None = None
        self._warned_open = False
        self.dropped = 0
        self.unrecorded = 0
        self.received = 0
        self.dispatcher.publishers_changed()

    # -- the loop ----------------------------------------------------------

    @property
    def layer(self) -> Any:
        """Return the channel layer in use, or None when publication is off."""
        if self._layer_version != events_settings.version:
            from channels.layers import get_channel_layer

            alias = self._alias or events_settings.CHANNEL_LAYER
            self._layer = get_channel_layer(alias) if alias else None
            replaced = self._history
            self._history = history_for(alias, int(events_settings.HISTORY_SIZE))
            self._layer_version = events_settings.version
            loop = self._loop
            if replaced is not None and loop is not None and not loop.is_closed():
                # Its connections belong to the hub's loop: close them there.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._close_history, replaced)
        return self._layer

    def _close_history(self, history: History) -> None:
        async def close() -> None:
            with contextlib.suppress(Exception):
                await history.close()

        self._track(asyncio.get_running_loop().create_task(close()))

    @property
    def history(self) -> History | None:
        """Return where published events are kept for catching up, or None (see history.py)."""
        if self._layer_version != events_settings.version:
            self.layer  # noqa: B018 - refreshes both
        return self._history if self._layer is not None else None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """Return the loop the hub runs on, once started."""
        return self._loop

    @property
    def receiving(self) -> bool:
        """Return whether the hub is receiving other processes' events."""
        return self._receiver is not None and not self._receiver.done()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called with self._lock held, on any thread. Tasks of a previous,
        # closed loop are dead: forget them, and the channel they read.
        self._loop = loop
        self._wake = None
        self._sender = self._receiver = self._refresher = self._deliverer = None
        self._receiving_layer = None
        self._remote = None
        self._channel = None
        self._joined = set()
        self._wake_pending = False
        if _running_loop() is loop:
            self._start_sender()
        else:
            loop.call_soon_threadsafe(self._start_sender)

    def _start_sender(self) -> None:
        self._wake = asyncio.Event()
        self._groups_dirty = asyncio.Event()
        if self._outbox:
            self._wake.set()
        self._sender = asyncio.get_running_loop().create_task(self._send_forever())

    async def attach(self, *, receive: bool = True) -> None:
        """Run the hub on the running loop (an ASGI server's); start receiving if asked.

        Daphne has no lifespan events, so ASGI processes call this on first
        use; calling it again is cheap.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                self._bind(loop)
        if receive:
            await self._run_on_loop(self._start_receiving)

    def start_thread(self, *, receive: bool = True) -> None:
        """Run the hub on a background thread with its own loop (non-ASGI processes).

        Returns once the loop is running. Calling it again is cheap.
        """
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    try:
                        loop.run_forever()
                    finally:
                        loop.close()

                self._thread = threading.Thread(target=run, name="channels-events-hub", daemon=True)
                self._thread.start()
                ready.wait()
                self._bind(loop)
        if receive:
            hub_loop = self._loop
            assert hub_loop is not None
            hub_loop.call_soon_threadsafe(self._start_receiving)

    async def _run_on_loop(self, func: Any) -> None:
        loop = self._loop
        assert loop is not None
        if _running_loop() is loop:
            func()
        else:
            done = asyncio.get_running_loop().create_future()
            caller = asyncio.get_running_loop()

            def call() -> None:
                try:
                    func()
                finally:
                    caller.call_soon_threadsafe(done.set_result, None)

            loop.call_soon_threadsafe(call)
            await done

    def _track(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _after_fork(self) -> None:
        """Start afresh in a forked child: no thread, no loop, a new origin.

        The parent's loop and threads do not exist in the child, and the
        events it had queued are the parent's to send. The parent's Redis
        connections must outlive the reset here: finalizing one in the child
        would unregister its socket from the event-loop selector that parent
        and child share, and the parent would wait for the reply for ever.
        """
        if self._history is not None:
            _inherited.append(self._history)
        self._reset()

    async def stop(self) -> None:
        """Stop receiving and sending (pending events stay queued for :meth:`flush`).

        A hub on a thread of its own is stopped on that thread, which then
        ends; the next event published or :meth:`attach` starts it afresh.
        """
        self.dispatcher.unwatch(self.groups_changed)
        loop = self._loop
        if loop is not None and loop is not _running_loop() and not loop.is_closed():
            # The tasks, the groups' subscriptions and the history's
            # connections all belong to the hub's loop: let go of them there.
            try:
                done = asyncio.run_coroutine_threadsafe(self._stop_here(), loop)
            except RuntimeError:  # the loop closed meanwhile
                pass
            else:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.wrap_future(done), _STOP_TIMEOUT)
            thread = self._thread
            if thread is not None:
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(loop.stop)
                await asyncio.get_running_loop().run_in_executor(None, thread.join, _STOP_TIMEOUT)
        else:
            await self._stop_here()
        if self._workers is not None:
            self._workers.shutdown(wait=False)
            self._workers = None
        with self._lock:
            self._loop = None
            self._thread = None

    async def _stop_here(self) -> None:
        tasks = [
            task
            for task in (self._receiver, self._refresher, self._sender, self._deliverer)
            if task is not None and task is not asyncio.current_task()
        ]
        for task in tasks:
            task.cancel()
        self._receiver = self._refresher = self._sender = self._deliverer = None
        self._remote = None
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
        # Groups were joined on the layer the receiver started with, which a
        # settings change since may have replaced.
        layer = self._receiving_layer or self.layer
        if self._channel is not None and layer is not None:
            for group in self._joined:
                with contextlib.suppress(Exception):
                    await layer.group_discard(group, self._channel)
        self._joined = set()
        self._channel = None
        self._receiving_layer = None
        if self._history is not None:
            with contextlib.suppress(Exception):
                await self._history.close()


class HubMiddleware:
    """ASGI middleware that starts the hub on the server's loop at the first connection.

    Daphne has no lifespan events, so this is how an ASGI process starts
    receiving other processes' events: wrap the whole application with it.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        hub = get_hub()
        if not hub.receiving:
            await hub.attach()
        return await self.app(scope, receive, send)


_hub: Hub | None = None
_hub_lock = threading.Lock()


def get_hub() -> Hub:
    """Return this process's hub, creating it (not starting it) on first call."""
    global _hub
    if _hub is None:
        with _hub_lock:
            if _hub is None:
                _hub = Hub()
                atexit.register(_flush_at_exit)
    return _hub


def start_hub() -> Hub:
    """Receive other processes' events in a non-ASGI process (a worker, a command).

    Runs the hub on a background thread; call once at start-up, for instance
    in ``AppConfig.ready()`` of a Celery worker. ASGI processes need not call
    it: the hub starts on the server's loop on first use.
    """
    hub = get_hub()
    hub.start_thread(receive=True)
    return hub


def _flush_at_exit() -> None:
    hub = _hub
    if hub is not None and (hub._outbox or hub._pending):
        started = time.monotonic()
        if hub.flush():
            logger.debug("Flushed events at exit in %.3fs.", time.monotonic() - started)
        else:
            lost = len(hub._outbox) + len(hub._pending[1] if hub._pending else ())
            logger.error(
                "%d event(s) were not published before exit (FLUSH_TIMEOUT=%ss).",
                lost,
                events_settings.FLUSH_TIMEOUT,
            )


# What a forked child keeps of its parent's hub, never to be finalized.
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    if _hub is not None:
        _hub._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
