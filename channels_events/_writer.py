"""The connection writer: every frame a websocket sends, in order, through one bounded queue.

A :class:`ConnectionWriter` is what the hub delivers a connection's events
to, and what the connection hands its answers to. Frames go out in the order
they were handed over, control frames (``subscribed``, ``error``, ``pong``,
...) and event frames alike. In the usual case (nothing queued) a frame is
handed to the server at once, on the hub's loop; otherwise it waits in the
queue, where a ``lagged`` marker stands for the events dropped once the
queue is full. While a subscription catches up with ``since``, live events
wait behind the replay from the history (PROTOCOL.md section 6).

What a connection holds is bounded, in frames (``BUFFER_SIZE``) and in
bytes (``BUFFER_BYTES``), whatever the server. Under daphne an ASGI ``send``
never waits: the frame goes to Twisted's write buffer at once, however much
the client has yet to read. The writer reads that buffer's size (see
:func:`server_backlog`), counts it against ``BUFFER_BYTES``, and stops
handing frames over while it is full: events then wait in the queue, and
past the bound they are dropped and the client is told it ``lagged``.
Under servers whose ``send`` waits for the client (uvicorn, hypercorn), the
writer's own task does the waiting, never the hub. A replay from the
history counts against the same bound. A client that keeps asking while it
reads nothing has its answers queued up to a small allowance past the
bound, and is then closed with :data:`CLOSE_SLOW`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

from ._events import Event
from ._frames import event_frame
from ._json import encode
from ._metrics import metrics
from ._policy import Policy
from ._subscriptions import Subscriptions
from ._tracing import written as trace_written

__all__ = [
    "BACKLOG_KEY",
    "CLOSE_SLOW",
    "REPLAY_OVERLAP",
    "ConnectionWriter",
    "WriterState",
    "server_backlog",
]

logger = logging.getLogger("channels_events.consumers")

#: Seconds after a catch-up during which a live copy of a replayed event is
#: not sent again to the subscriptions that had it in the replay.
REPLAY_OVERLAP = 60.0

#: Closes a connection that keeps sending requests while it reads none of
#: the answers, once they no longer fit: the client resumes with ``since``.
CLOSE_SLOW = 4010
# Control frames (answers) a full queue still takes, past BUFFER_SIZE: a
# client reading slowly may have a burst of requests in flight.
_CONTROL_ROOM = 64
# ... and bytes, past BUFFER_BYTES.
_CONTROL_BYTES = 256 * 1024
# Seconds between looks at the server's write buffer while it is full:
# Twisted tells a transport's producer when the buffer drains, but daphne's
# HTTP channel holds that place, so the writer looks (only while it is full).
_DRAIN_POLL = 0.05
# Seconds a close frame may wait for a server whose send waits for the client.
_CLOSE_TIMEOUT = 5.0
# What an event frame adds to the envelope's text, besides the ids.
_FRAME_BYTES = 48

Send: TypeAlias = Callable[[dict[str, Any]], Awaitable[None]]
Backlog: TypeAlias = Callable[[], int]
#: The scope key under which HubMiddleware puts :func:`server_backlog` of the
#: server's own ``send``, before other middleware wraps it.
BACKLOG_KEY = "channels_events.backlog"


def server_backlog(send: Send) -> Backlog | None:
    """Return a function giving the bytes daphne holds unsent for this connection, or None.

    daphne hands an application ``send`` as ``partial(server.handle_reply,
    protocol)`` (HubMiddleware, outermost, sees it so; session middleware
    wraps it); the protocol's Twisted transport keeps what the socket has
    not taken yet in ``dataBuffer`` (from ``offset`` on) and the writes since
    its last flush (``_tempDataLen`` bytes). None for any other server: a
    server whose ``send`` waits for the client needs no look (uvicorn,
    hypercorn), and an unknown one is bounded by the queue alone.
    """
    if not isinstance(send, functools.partial) or not send.args:
        return None
    server = getattr(send.func, "__self__", None)
    if type(server).__module__ != "daphne.server":
        return None
    protocol = send.args[0]

    def backlog() -> int:
        transport: Any = getattr(protocol, "transport", None)
        try:
            held: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        except (AttributeError, TypeError):
            # Gone (the connection ended), or wrapped (TLS): nothing to count.
            return 0
        return held

    transport = getattr(protocol, "transport", None)
    if not all(hasattr(transport, name) for name in ("dataBuffer", "offset", "_tempDataLen")):
        return None
    return backlog


class WriterState(enum.Enum):
    """What a connection's writer does with the next frame it is handed."""

    #: Nothing is queued: a frame is handed to the server at once.
    IDLE = "idle"
    #: Frames wait in the queue; one drain (the hub's, for events it just
    #: delivered, or the writer's own task) writes them in order.
    WRITING = "writing"
    #: A subscription is catching up with ``since``: event frames wait in the
    #: queue behind the replay to come; the answers of the catch-up itself
    #: (``subscribed``, ``gap``) go out at once, ahead of them.
    CATCHING_UP = "catching up"
    #: The connection has ended, or its close frame was sent: frames are dropped.
    CLOSED = "closed"


class _Lagged:
    """The place in the queue where events were dropped, and how many."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0


class _Control:
    """A control frame (or the close) waiting in the queue."""

    __slots__ = ("last", "message")

    def __init__(self, message: dict[str, Any], last: bool) -> None:
        self.message = message
        self.last = last


class _CatchUp:
    """The place in the queue where a catch-up begins: what follows waits for its replay."""

    __slots__ = ("started",)

    def __init__(self, started: asyncio.Future[None]) -> None:
        self.started = started


# An event frame (the event and the ids of the subscriptions it matched), or one of the above.
_Item: TypeAlias = "tuple[Event, tuple[str, ...]] | _Lagged | _Control | _CatchUp"


def _gap(sid: str, since: str | None) -> dict[str, Any]:
    return {"type": "gap", "subscription": sid, "since": since}


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _item_bytes(item: _Item) -> int:
    """Return about how many bytes a queued item will be on the wire."""
    if isinstance(item, tuple):
        event, ids = item
        try:
            text = event.encoded
        except Exception:
            return 0  # never sent (event_frame logs it)
        return len(text) + _FRAME_BYTES + sum(len(sid) + 3 for sid in ids)
    if isinstance(item, _Control):
        return len(item.message.get("text") or "")
    return 0


class ConnectionWriter:
    """Send one websocket's frames, control and event alike, in order, through one queue.

    The hub delivers events through :meth:`deliver` (a writer is the
    connection's hub subscriber); the connection sends its answers with
    :meth:`send`, and closes the socket with :meth:`send_close`. Events
    matching ``subscriptions`` are queued while the queue holds fewer than
    ``buffer_size`` frames and the queue and the server's write buffer
    together fewer than ``buffer_bytes`` bytes: past that, events are
    dropped and the client is told it ``lagged``. ``policy`` (the receive
    policy, asked with ``scope``) decides per event.
    """

    def __init__(
        self,
        send: Send,
        subscriptions: Subscriptions,
        policy: Policy,
        scope: dict[str, Any],
        buffer_size: int,
        buffer_bytes: int,
        connection_id: str = "",
    ) -> None:
        self.state = WriterState.IDLE
        #: Events whose ``skip_connections`` name this id are not sent here.
        self.connection_id = connection_id
        self._send = send
        self._subscriptions = subscriptions
        self._policy = policy
        self._scope = scope
        self._buffer_size = buffer_size
        self._buffer_bytes = buffer_bytes
        # HubMiddleware finds it, outside middleware that wraps ``send``.
        self._backlog: Backlog | None = scope.get(BACKLOG_KEY) or server_backlog(send)
        # Only a send that never waits for the client (daphne's) may be
        # awaited by the hub: one slow client must not hold up the others.
        self._hub_writes = self._backlog is not None
        self._queue: collections.deque[_Item] = collections.deque()
        #: About how many bytes the queued frames make.
        self.queued_bytes = 0
        #: Events dropped for this connection because it did not keep up.
        self.dropped = 0
        self._lagged: _Lagged | None = None
        # Event id -> the subscriptions a replay from the history sent it to:
        # a live copy is not sent to them again (for REPLAY_OVERLAP seconds).
        self._replayed: dict[str, frozenset[str]] = {}
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run())
        metrics.connections(1)

    def __repr__(self) -> str:
        return f"<ConnectionWriter {self.state.value}, {len(self._queue)} queued>"

    def _held(self) -> int:
        """Return the bytes the server holds for this client, where it says (daphne)."""
        backlog = self._backlog
        return 0 if backlog is None else backlog()

    def _server_full(self) -> bool:
        backlog = self._backlog
        return backlog is not None and backlog() >= self._buffer_bytes

    async def _write(self, message: dict[str, Any]) -> None:
        """Hand one message to the server: every frame this connection sends goes through here.

        An ASGI server takes the frame when ``send`` is called (awaiting it
        only waits for room in the transport), so frames go out in the order
        of the calls. When the server refuses the frame because the
        connection is closing, the writer stops, and the consumer hears of
        the disconnect in its own time.
        """
        try:
            await self._send(message)
        except (RuntimeError, OSError) as exc:
            # Servers refuse frames for a connection that is closing: daphne
            # from the client's close frame until the disconnect reaches the
            # consumer ("Attempt to send on a closed protocol", a
            # RuntimeError), others with an OSError. A client leaving is no
            # error, and needs no traceback; anything else is raised.
            if self.state is not WriterState.CLOSED:
                logger.info("A websocket stopped taking frames (%r); it gets no more.", exc)
                self.close()

    # -- the hub's side ----------------------------------------------------

    def namespaces(self) -> Iterable[str]:
        """Return the namespaces the connection has subscriptions in."""
        return self._subscriptions.namespaces()

    def deliver(self, events: list[Event]) -> Awaitable[None] | None:
        """Send or queue the events that match a subscription; return a write for the hub to await.

        Called by the hub on its loop. When that is not this connection's
        loop, the receive policy is async (it may be slow), or the server's
        ``send`` may wait for the client, the writer's own task writes
        instead, so that nobody else waits for it.
        """
        if asyncio.get_running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self._take, events, False)
            return None
        if (
            self.state is WriterState.IDLE
            and self._hub_writes
            and len(events) == 1
            and not self._replayed
            and self._policy.receive is None
            and not self._server_full()
        ):
            # The usual case: nothing queued, one event, no per-connection
            # verdict to wait for. The frame goes straight to the server.
            skipped = events[0].skip_connections
            if skipped and self.connection_id in skipped:
                return None
            text = self._subscriptions.frame(events[0])
            if text is None:
                return None
            metrics.delivered(events[0])
            trace_written(events[0])
            return self._write({"type": "websocket.send", "text": text})
        return self._take(events, self._hub_writes)

    def missed(self, namespace: str, since: str | None) -> Awaitable[None] | None:
        """Tell each subscription in ``namespace`` that events after ``since`` were lost (``gap``).

        Called by the hub on its loop when it could not catch up from the
        history. The frames take their place after what is queued; they
        never wait for room.
        """
        frames = [
            {"type": "websocket.send", "text": encode(_gap(sid, since))}
            for sid in self._subscriptions.ids_in(namespace)
        ]
        if not frames or self.state is WriterState.CLOSED:
            return None
        if asyncio.get_running_loop() is not self._loop or self.state is WriterState.WRITING:
            self._loop.call_soon_threadsafe(self._queue_controls, frames)
            return None
        # Idle, or catching up (held live events follow the catch-up's answers).
        return self._write_all(frames)

    def _queue_controls(self, frames: list[dict[str, Any]]) -> None:
        if self.state is WriterState.CLOSED:
            return
        self._queue.extend(_Control(frame, False) for frame in frames)
        if self.state is WriterState.IDLE:
            self.state = WriterState.WRITING
            self._wake.set()

    async def _write_all(self, frames: list[dict[str, Any]]) -> None:
        for frame in frames:
            await self._write(frame)

    def _take(self, events: list[Event], hub_waits: bool) -> Awaitable[None] | None:
        """Queue the frames of ``events``; start writing them if nothing else is."""
        self._queue_events(events)
        if self.state is not WriterState.IDLE or not self._queue:
            return None
        self.state = WriterState.WRITING
        if hub_waits and not self._policy.receive_is_async and not self._server_full():
            return self._drain(hub=True)
        self._wake.set()
        return None

    def _full(self, held: int) -> bool:
        return (
            len(self._queue) >= self._buffer_size or self.queued_bytes + held >= self._buffer_bytes
        )

    def _drop(self, count: int) -> None:
        """Count ``count`` events dropped at the end of the queue, behind one ``lagged`` marker."""
        # A marker at the point of loss: the client hears ``lagged`` after
        # the frames queued before it, not ahead of them.
        if self._lagged is None:
            self._lagged = _Lagged()
            self._queue.append(self._lagged)
        self._lagged.dropped += count
        self.dropped += count
        metrics.dropped("lagged", count)

    def _queue_events(self, events: list[Event]) -> None:
        if self.state is WriterState.CLOSED:
            return
        queue = self._queue
        held = self._held()
        for event in events:
            skipped = event.skip_connections
            if skipped and self.connection_id in skipped:
                continue
            ids = self._subscriptions.matching(event)
            if ids is not None and self._replayed:
                sent = self._replayed.get(event.id)
                if sent:
                    ids = tuple(i for i in ids if i not in sent) or None
            if ids is None:
                continue
            if self._full(held):
                self._drop(1)
                continue
            item = (event, ids)
            queue.append(item)
            self.queued_bytes += _item_bytes(item)

    # -- the connection's side ---------------------------------------------

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a control frame after every frame handed over before it.

        A client that reads none of its answers while it keeps asking is
        closed with :data:`CLOSE_SLOW` once they no longer fit.
        """
        await self._control({"type": "websocket.send", "text": encode(frame)}, last=False)

    async def send_close(self, code: int) -> None:
        """Close the websocket with ``code`` after every frame handed over before; send no more."""
        await self._control({"type": "websocket.close", "code": code}, last=True)

    async def _control(self, message: dict[str, Any], *, last: bool) -> None:
        state = self.state
        if state is WriterState.CLOSED:
            return
        if state is WriterState.IDLE and self._backlog is not None and self._server_full():
            # Nothing queued, but the server holds enough: wait in the queue.
            state = self.state = WriterState.WRITING
            self._wake.set()
        if state is WriterState.WRITING:
            queue = self._queue
            if (
                len(queue) >= self._buffer_size + _CONTROL_ROOM
                or self.queued_bytes + self._held() >= self._buffer_bytes + _CONTROL_BYTES
            ):
                await self._close_slow()
                return
            item = _Control(message, last)
            queue.append(item)
            self.queued_bytes += _item_bytes(item)
            return
        # Idle: nothing is queued ahead of it. Catching up: what is queued
        # are live events, which follow the catch-up's own answers.
        await self._write(message)
        if last:
            self.close()

    async def _close_slow(self) -> None:
        """Close a client that does not read its answers; what it was owed is dropped."""
        logger.info(
            "A websocket reads too slowly (%d frames, about %d bytes waiting); closing it with %d.",
            len(self._queue),
            self.queued_bytes + self._held(),
            CLOSE_SLOW,
        )
        self.close()
        # daphne puts the close frame behind what it holds and ends the
        # connection when the client does not answer it; a server whose send
        # waits for the client is given a while.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                self._write({"type": "websocket.close", "code": CLOSE_SLOW}), _CLOSE_TIMEOUT
            )

    async def begin_catch_up(self) -> None:
        """Hold event frames back from now on, behind a replay that :meth:`end_catch_up` brings.

        Frames handed over before are written first.
        """
        if self.state is WriterState.IDLE:
            self.state = WriterState.CATCHING_UP
        elif self.state is WriterState.WRITING:
            mark = _CatchUp(self._loop.create_future())
            self._queue.append(mark)
            await mark.started

    def end_catch_up(self, sid: str, since: str | None, replay: list[Event] | None) -> None:
        """Put ``replay`` ahead of the event frames held back, and write them all.

        ``replay`` is what the history held after ``since`` that subscription
        ``sid`` matches, or None when there was nothing to replay (``gap``).
        An event both replayed and held is sent once, in the replay, listing
        every subscription it matched; a live copy arriving later (from
        another process) is not sent again to those subscriptions. The
        replay counts against the connection's bound: what does not fit is
        dropped, and the client is told it ``lagged`` right after the part
        that fits.
        """
        if self.state is not WriterState.CATCHING_UP:
            return
        queue = self._queue
        if replay is not None:
            replayed: list[tuple[Event, tuple[str, ...]]] = [(event, (sid,)) for event in replay]
            position = {event.id: index for index, event in enumerate(replay)}
            live: list[_Item] = []
            for item in queue:
                if isinstance(item, tuple) and item[0].id in position:
                    index = position[item[0].id]
                    event, ids = replayed[index]
                    replayed[index] = (event, ids + tuple(i for i in item[1] if i not in ids))
                else:
                    live.append(item)
            # What fits beside the live frames held back; the rest is dropped.
            frames = len(live)
            size = self._held() + sum(_item_bytes(item) for item in live)
            kept = 0
            for item in replayed:
                if frames >= self._buffer_size or size >= self._buffer_bytes:
                    break
                frames += 1
                size += _item_bytes(item)
                kept += 1
            dropped = len(replayed) - kept
            del replayed[kept:]
            queue.clear()
            queue.extend(replayed)
            if dropped:
                marker = _Lagged()
                marker.dropped = dropped
                self.dropped += dropped
                metrics.dropped("lagged", dropped)
                queue.append(marker)
            queue.extend(live)
            self.queued_bytes = sum(_item_bytes(item) for item in queue)
            sent = {event.id: frozenset(ids) for event, ids in replayed}
            if since is not None:
                sent[since] = frozenset({sid})
            for event_id, sids in sent.items():
                self._replayed[event_id] = self._replayed.get(event_id, frozenset()) | sids
            self._loop.call_later(REPLAY_OVERLAP, self._forget_replayed, sent)
        if queue:
            self.state = WriterState.WRITING
            self._wake.set()
        else:
            self.state = WriterState.IDLE

    def forget(self, sid: str) -> None:
        """Take subscription ``sid`` off every frame still queued: it was unsubscribed.

        A queued event left with no subscription is not sent. A later
        subscription that reuses the id has seen nothing yet.
        """
        if self._replayed:
            self._replayed = {
                event_id: sids - {sid} for event_id, sids in self._replayed.items() if sids != {sid}
            }
        queue = self._queue
        if not any(isinstance(item, tuple) and sid in item[1] for item in queue):
            return
        kept: list[_Item] = []
        for item in queue:
            if isinstance(item, tuple) and sid in item[1]:
                ids = tuple(i for i in item[1] if i != sid)
                if not ids:
                    continue
                item = (item[0], ids)
            kept.append(item)
        queue.clear()
        queue.extend(kept)
        self.queued_bytes = sum(_item_bytes(item) for item in queue)

    def close(self) -> None:
        """Stop: drop what is queued, release whoever waits on it, end the writer's task."""
        if self.state is WriterState.CLOSED:
            return
        self.state = WriterState.CLOSED
        metrics.connections(-1)
        metrics.subscriptions(-len(self._subscriptions))
        for item in self._queue:
            if isinstance(item, _CatchUp):
                _settle(item.started)
        self._queue.clear()
        self.queued_bytes = 0
        self._lagged = None
        self._replayed = {}
        self._task.cancel()

    # -- writing the queue -------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain(hub=False)

    async def _drain(self, hub: bool) -> None:
        """Write the queue, in order, while the state is WRITING (one drain at a time)."""
        try:
            await self._write_queue(hub)
        except asyncio.CancelledError:
            if self.state is WriterState.WRITING:
                # The hub was cancelled halfway: the writer's task carries on.
                self._wake.set()
            raise
        except Exception:
            logger.exception("Writing to a websocket failed; it gets no more frames.")
            self.close()

    async def _write_queue(self, hub: bool) -> None:
        queue = self._queue
        while queue and self.state is WriterState.WRITING:
            if self._server_full():
                if hub:
                    # The hub does not wait for one client: the writer's task does.
                    self._wake.set()
                    return
                # Twisted has no drain callback to spare (see _DRAIN_POLL): look again.
                while self._server_full() and self.state is WriterState.WRITING:  # noqa: ASYNC110
                    await asyncio.sleep(_DRAIN_POLL)
                continue
            item = queue.popleft()
            self.queued_bytes -= _item_bytes(item)
            if isinstance(item, tuple):
                text = await self._event_text(*item)
                if text is not None:
                    metrics.delivered(item[0])
                    trace_written(item[0])
                    await self._write({"type": "websocket.send", "text": text})
            elif isinstance(item, _Control):
                await self._write(item.message)
                if item.last:
                    self.close()
            elif isinstance(item, _Lagged):
                if item is self._lagged:
                    self._lagged = None
                frame = encode({"type": "lagged", "dropped": item.dropped})
                await self._write({"type": "websocket.send", "text": frame})
            else:
                # What follows in the queue waits for the replay.
                self.state = WriterState.CATCHING_UP
                _settle(item.started)
                return
        if self.state is WriterState.WRITING:
            self.state = WriterState.IDLE

    async def _event_text(self, event: Event, ids: tuple[str, ...]) -> str | None:
        """Return the frame of ``event`` for this connection, or None if it is not sent here."""
        policy = self._policy
        if policy.receive is not None:
            try:
                verdict = policy.may_receive_now(self._scope, event)
                if not isinstance(verdict, bool):
                    verdict = await verdict
            except Exception:
                # A policy that raises costs only this event, on this connection.
                logger.exception("The receive policy failed on event %r; not sent.", event.name)
                return None
            if not verdict:
                return None
        return event_frame(event, ids)

    def _forget_replayed(self, sent: dict[str, frozenset[str]]) -> None:
        for event_id in sent:
            self._replayed.pop(event_id, None)
