"""The per-process hub: the dispatcher's link to the channel layer, both ways.

A :class:`Hub` is composed of a loop runner (``_loop.py``: the ASGI
server's loop, or a thread of its own), a sender (``_sender.py``: events
leaving the process), a receiver (``_receiver.py``: other processes' events)
and a subscriber index (``_subscribers.py``: this process's websockets),
sharing the channel layer held by a ``LayerLink`` (``_layer.py``), and
this process's side of presence (``_presence.py``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from ._background import get_pool
from ._conf import events_settings
from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._history import History
from ._layer import BATCH_TYPE, EVENT_TYPE, LayerLink, group_name
from ._loop import LoopRunner
from ._presence import Presence
from ._receiver import Receiver
from ._sender import Sender
from ._subscribers import Subscriber, SubscriberIndex
from ._writer import BACKLOG_KEY, server_backlog

__all__ = [
    "BATCH_TYPE",
    "EVENT_TYPE",
    "Hub",
    "HubMiddleware",
    "Lifespan",
    "LifespanState",
    "Subscriber",
    "get_hub",
    "group_name",
    "start_hub",
]

logger = logging.getLogger("channels_events.hub")

# Seconds stop() waits for the hub's tasks, and for its thread to end.
_STOP_TIMEOUT = 5.0


class Hub:
    """Connect this process's dispatcher to the channel layer, both ways."""

    def __init__(self, dispatcher: Dispatcher | None = None, alias: str | None = None) -> None:
        self.dispatcher = dispatcher or get_dispatcher()
        self._alias = alias
        self._build()

    def _build(self) -> None:
        """Make every part afresh: on creation, and in a forked child."""
        self.origin = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runner = LoopRunner(self._on_bind)
        self.link = LayerLink(self._alias, self._close_soon)
        self.subscribers = SubscriberIndex(self._namespaces_changed)
        self.sender = Sender(
            self.runner, self.link, self.subscribers, self.origin, self._start_sending_thread
        )
        self.receiver = Receiver(
            self.runner, self.link, self.dispatcher, self.subscribers, self.origin, owner=self
        )
        self.presence = Presence(self)
        self.dispatcher.publishers_changed()

    # -- what the parts share ------------------------------------------------

    @property
    def layer(self) -> Any:
        """Return the channel layer in use, or None when publication is off."""
        return self.link.layer

    @property
    def history(self) -> History | None:
        """Return where published events are kept for catching up, or None (see _history.py)."""
        return self.link.history

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """Return the loop the hub runs on, once started."""
        return self.runner.loop

    @property
    def receiving(self) -> bool:
        """Return whether the hub is receiving other processes' events."""
        return self.receiver.running

    @property
    def joined_groups(self) -> frozenset[str]:
        """Return the channel-layer groups this process is in."""
        return self.receiver.joined

    @property
    def queued(self) -> int:
        """Return how many published events wait to be sent to the channel layer."""
        return self.sender.queued

    @property
    def received(self) -> int:
        """Return how many events this process received from others."""
        return self.receiver.received

    @property
    def losses(self) -> int:
        """Return how many times this process found that events may not have reached it.

        Each is also sent as the ``events_lost`` signal; see ``_loss.py``.
        """
        return self.receiver.losses

    @property
    def lost_events(self) -> int:
        """Return how many events from other processes are known not to have reached this one."""
        return self.receiver.lost_events

    @property
    def dropped(self) -> int:
        """Return how many events were dropped because the outbox was full."""
        return self.sender.dropped

    @property
    def unencodable(self) -> int:
        """Return how many events were dropped because the channel layer could not encode them."""
        return self.sender.unencodable

    def _on_bind(self) -> None:
        # On the newly bound loop: tasks of a previous, closed loop are dead.
        self.receiver.forget()
        self.presence.reset()
        self.sender.start()

    def _namespaces_changed(self) -> None:
        # Without a channel layer, what accepts() says depends on the subscribers.
        self.dispatcher.publishers_changed()
        self.receiver.groups_changed()

    def _close_soon(self, history: History) -> None:
        # A history that settings replaced: its connections belong to the
        # hub's loop, so it is closed there.
        async def close() -> None:
            with contextlib.suppress(Exception):
                await history.close()

        if self.runner.is_current():
            asyncio.get_running_loop().create_task(close())
        else:
            self.runner.submit(close())

    def _start_sending_thread(self) -> None:
        self.start_thread(receive=False)

    # -- starting and stopping ---------------------------------------------

    async def attach(self, *, receive: bool = True) -> None:
        """Run the hub on the running loop (an ASGI server's); start receiving if asked.

        Daphne has no lifespan events, so ASGI processes call this on first
        use; calling it again is cheap.
        """
        self.runner.bind_running()
        if receive and not self.receiver.running:
            await self.runner.run(self._start_receiving)

    async def _start_receiving(self) -> None:
        self.receiver.start()

    def start_thread(self, *, receive: bool = True) -> None:
        """Run the hub on a background thread with its own loop (non-ASGI processes).

        Returns once the loop is running. Calling it again is cheap.
        """
        self.runner.start_thread()
        if receive:
            self.runner.call_soon(self.receiver.start)

    async def stop(self) -> None:
        """Stop receiving and sending (pending events stay queued for :meth:`flush`).

        A hub on a thread of its own is stopped on that thread, which then
        ends; the next event published or :meth:`attach` starts it afresh.
        """
        if self.runner.alive:
            with contextlib.suppress(Exception):
                await self.runner.run(self._stop_here, timeout=_STOP_TIMEOUT)
        await self.runner.stop_thread(_STOP_TIMEOUT)

    async def _stop_here(self) -> None:
        await self.receiver.stop()
        await self.sender.stop()
        with contextlib.suppress(Exception):
            await self.presence.stop()
        history = self.link.history
        if history is not None:
            with contextlib.suppress(Exception):
                await history.close()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued event was handed to the channel layer; return success."""
        return self.sender.flush(timeout)

    def _after_fork(self) -> None:
        """Start afresh in a forked child: no thread, no loop, a new origin.

        The parent's loop and threads do not exist in the child, and the
        events it had queued are the parent's to send. The parent's Redis
        connections must outlive the reset: finalizing one in the child
        would unregister its socket from the event-loop selector that parent
        and child share, and the parent would wait for the reply for ever.
        """
        _inherited.append(self.link.abandon())
        self._build()

    # -- publishing ----------------------------------------------------------

    def accepts(self, event: Event) -> bool:
        """Return whether :meth:`publish` would do anything with ``event``."""
        return self.sender.accepts(event)

    def publish(self, event: Event) -> None:
        """Queue ``event`` for the channel layer; never waits for the network."""
        self.sender.publish(event)

    # -- receiving -----------------------------------------------------------

    def add_subscriber(self, subscriber: Subscriber) -> None:
        """Deliver events of ``subscriber.namespaces()`` to it, joining groups as needed.

        Call again whenever its namespaces change. The subscriber gets every
        event published in this process and every event received from
        others, in batches of one namespace, on the hub's loop.
        """
        self.subscribers.add(subscriber)

    def remove_subscriber(self, subscriber: Subscriber) -> None:
        """Stop delivering to ``subscriber``."""
        self.subscribers.remove(subscriber)

    async def fan_out(self, namespace: str, events: list[Event]) -> None:
        """Hand events of ``namespace`` to this process's subscribers, on the hub's loop."""
        await self.subscribers.fan_out(namespace, events)

    async def joined(self, namespace: str, timeout: float) -> bool:
        """Wait until this process is in ``namespace``'s group; return whether it is.

        From then on, every event other processes publish in the namespace
        reaches it. Without a channel layer nothing comes from elsewhere, so
        there is nothing to wait for.
        """
        if self.layer is None:
            return True
        return await self.receiver.wait_joined(namespace, timeout)

    def wanted_namespaces(self) -> set[str]:
        """Return the namespaces this process needs events of."""
        return self.receiver.wanted_namespaces()

    def groups_changed(self, *args: Any) -> None:
        """Ask the hub to recompute which groups to be in (thread-safe)."""
        self.receiver.groups_changed()

    async def deliver_to_listeners(self, events: list[Event]) -> None:
        """Run local listeners for events from other processes (see :meth:`Receiver.deliver`)."""
        await self.receiver.deliver(events)


class HubMiddleware:
    """ASGI middleware that runs this process's hub on the server's loop: wrap the whole app.

    Under a server that sends ASGI lifespan events (uvicorn, hypercorn), the
    hub starts at ``lifespan.startup``, before the application's own
    start-up, and is flushed and stopped at ``lifespan.shutdown``, after the
    application's own shut-down; an application that does not handle
    lifespan has it answered here. Daphne sends no lifespan events: there
    the hub starts at the first connection. A websocket's scope gets, under
    daphne, a look at the server's write buffer for that connection (see
    ``_writer.server_backlog``): middleware further in may wrap ``send``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        hub = get_hub()
        if scope["type"] == "lifespan":
            return await Lifespan(hub, receive, send).run(self.app, scope)
        if not hub.receiving:
            await hub.attach()
        if scope["type"] == "websocket":
            backlog = server_backlog(send)
            if backlog is not None:
                scope = {**scope, BACKLOG_KEY: backlog}
        return await self.app(scope, receive, send)


class LifespanState(enum.Enum):
    """Where one ASGI lifespan conversation stands."""

    #: ``lifespan.startup`` not received yet.
    NEW = "new"
    #: ``lifespan.startup`` received, not answered yet.
    STARTING = "starting"
    #: Start-up answered with ``complete``; ``lifespan.shutdown`` not received yet.
    RUNNING = "running"
    #: ``lifespan.shutdown`` received, not answered yet.
    STOPPING = "stopping"
    #: Shut-down answered, or start-up failed: nothing more to say.
    DONE = "done"


class Lifespan:
    """One ASGI lifespan conversation between a server and the app that HubMiddleware wraps.

    The app sees the server's messages through :meth:`receive` and answers
    through :meth:`send`, which start and stop the hub around them. An app
    that raises or returns before answering anything does not handle
    lifespan (as the ASGI spec reads it); :meth:`run` then carries the
    conversation on from where it stands.
    """

    def __init__(self, hub: Hub, receive: Any, send: Any) -> None:
        self.hub = hub
        self.state = LifespanState.NEW
        self._receive = receive
        self._send = send
        self._app_answered = False

    async def run(self, app: Any, scope: Any) -> None:
        """Let ``app`` handle the lifespan scope, then finish whatever it left unanswered."""
        try:
            await app(scope, self.receive, self.send)
        except Exception as exc:
            if self._app_answered:
                if self.state is LifespanState.STOPPING:
                    await self._stop_hub()
                raise
            logger.debug("The application does not handle lifespan (%r); the hub answers it.", exc)
        while self.state is not LifespanState.DONE:
            if self.state is LifespanState.STARTING:
                await self.send({"type": "lifespan.startup.complete"})
            elif self.state is LifespanState.STOPPING:
                await self.send({"type": "lifespan.shutdown.complete"})
            else:
                await self.receive()

    async def receive(self) -> Any:
        """Return the server's next message, starting the hub before ``lifespan.startup``."""
        message = await self._receive()
        kind = message.get("type")
        if kind == "lifespan.startup":
            # Before the app's own start-up, so what it dispatches goes out on this loop.
            await self.hub.attach()
            self.state = LifespanState.STARTING
        elif kind == "lifespan.shutdown":
            self.state = LifespanState.STOPPING
        return message

    async def send(self, message: Any) -> None:
        """Pass an answer to the server, stopping the hub before the last one."""
        self._app_answered = True
        kind = message.get("type")
        if kind == "lifespan.startup.complete":
            self.state = LifespanState.RUNNING
        elif kind in (
            "lifespan.startup.failed",
            "lifespan.shutdown.complete",
            "lifespan.shutdown.failed",
        ):
            # After the app's own shut-down: what it dispatched there is sent too.
            await self._stop_hub()
            self.state = LifespanState.DONE
        await self._send(message)

    async def _stop_hub(self) -> None:
        hub = self.hub
        # Background listeners first: what they dispatch is published below.
        pool = get_pool()
        if pool.pending:
            timeout = events_settings.BACKGROUND_EXIT_TIMEOUT
            if not await asyncio.to_thread(pool.drain, timeout):
                logger.error(
                    "%d background listener call(s) did not finish before shut-down "
                    "(BACKGROUND_EXIT_TIMEOUT=%ss).",
                    pool.pending,
                    timeout,
                )
        # flush() waits on a thread of its own: the hub's sender runs on this loop.
        if hub.queued and not await asyncio.to_thread(hub.flush):
            logger.error(
                "%d event(s) were not published before shut-down (FLUSH_TIMEOUT=%ss).",
                hub.queued,
                events_settings.FLUSH_TIMEOUT,
            )
        await hub.stop()


_hub: Hub | None = None
_hub_lock = threading.Lock()


def get_hub() -> Hub:
    """Return this process's hub, creating it (not starting it) on first call."""
    global _hub
    if _hub is None:
        with _hub_lock:
            if _hub is None:
                _warn_unless_installed()
                _hub = Hub()
                atexit.register(_flush_at_exit)
    return _hub


def _warn_unless_installed() -> None:
    """Log, once per process, that ``channels_events`` is missing from INSTALLED_APPS.

    The system checks cannot say it: without the app they are never
    registered. Every ASGI process gets here, through HubMiddleware or a
    consumer; so do workers calling start_hub().
    """
    from django.apps import apps

    if apps.apps_ready and not apps.is_installed("channels_events"):
        logger.warning(
            "'channels_events' is not in INSTALLED_APPS, so events never leave the "
            "process that dispatches them, the apps' listeners.py and observers.py "
            "modules are not imported, after-commit listeners run before the commit, "
            "the JS client is not served as a static file, manage.py events does not "
            "exist and the system checks of channels-events do not run. "
            "Add 'channels_events' to INSTALLED_APPS."
        )


def start_hub() -> Hub:
    """Receive other processes' events in a non-ASGI process (a worker, a command).

    Runs the hub on a background thread; call once at start-up, for instance
    in ``AppConfig.ready()`` of a worker. ASGI processes need not call it:
    the hub starts on the server's loop on first use.
    """
    hub = get_hub()
    hub.start_thread(receive=True)
    return hub


def _flush_at_exit() -> None:
    hub = _hub
    if hub is None or not hub.queued:
        return
    started = time.monotonic()
    if hub.flush():
        logger.debug("Flushed events at exit in %.3fs.", time.monotonic() - started)
    else:
        logger.error(
            "%d event(s) were not published before exit (FLUSH_TIMEOUT=%ss).",
            hub.queued,
            events_settings.FLUSH_TIMEOUT,
        )


# What a forked child keeps of its parent's hub, never to be finalized.
_inherited: list[Any] = []


def _after_fork_in_child() -> None:
    if _hub is not None:
        _hub._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
