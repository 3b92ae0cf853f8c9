"""The connection writer: every frame a websocket sends, in order, through one bounded queue.

A :class:`ConnectionWriter` is what the hub delivers a connection's events
to, and what the connection hands its answers to. Frames go out in the order
they were handed over, control frames (``subscribed``, ``error``, ``pong``,
...) and event frames alike. In the usual case (nothing queued) a frame is
handed to the server at once, on the hub's loop; otherwise it waits in the
queue, where a ``lagged`` marker stands for the events dropped once the
queue is full. While a subscription catches up with ``since``, live events
wait behind the replay from the history (PROTOCOL.md section 6).
"""

from __future__ import annotations

import asyncio
import collections
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

from ._events import Event
from ._frames import event_frame
from ._json import encode
from ._policy import Policy
from ._subscriptions import Subscriptions

__all__ = ["REPLAY_OVERLAP", "ConnectionWriter", "WriterState"]

logger = logging.getLogger("channels_events.consumers")

#: Seconds after a catch-up during which a live copy of a replayed event is
#: not sent again to the subscriptions that had it in the replay.
REPLAY_OVERLAP = 60.0

Send: TypeAlias = Callable[[dict[str, Any]], Awaitable[None]]


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


class ConnectionWriter:
    """Send one websocket's frames, control and event alike, in order, through one queue.

    The hub delivers events through :meth:`deliver` (a writer is the
    connection's hub subscriber); the connection sends its answers with
    :meth:`send`, and closes the socket with :meth:`send_close`. Events
    matching ``subscriptions`` are queued, at most ``buffer_size`` frames:
    past that, events are dropped and the client is told it ``lagged``.
    ``policy`` (the receive policy, asked with ``scope``) decides per event.
    """

    def __init__(
        self,
        send: Send,
        subscriptions: Subscriptions,
        policy: Policy,
        scope: dict[str, Any],
        buffer_size: int,
    ) -> None:
        self.state = WriterState.IDLE
        self._send = send
        self._subscriptions = subscriptions
        self._policy = policy
        self._scope = scope
        self._buffer_size = buffer_size
        self._queue: collections.deque[_Item] = collections.deque()
        self._lagged: _Lagged | None = None
        # Settled when the queue has room again, for a control frame that waits.
        self._room: asyncio.Future[None] | None = None
        # Event id -> the subscriptions a replay from the history sent it to:
        # a live copy is not sent to them again (for REPLAY_OVERLAP seconds).
        self._replayed: dict[str, frozenset[str]] = {}
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run())

    def __repr__(self) -> str:
        return f"<ConnectionWriter {self.state.value}, {len(self._queue)} queued>"

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
        loop, or the receive policy is async (it may be slow), the writer's
        own task writes instead, so that nobody else waits for it.
        """
        if asyncio.get_running_loop() is not self._loop:
            self._loop.call_soon_threadsafe(self._take, events, False)
            return None
        if (
            self.state is WriterState.IDLE
            and len(events) == 1
            and not self._replayed
            and self._policy.receive is None
        ):
            # The usual case: nothing queued, one event, no per-connection
            # verdict to wait for. The frame goes straight to the server.
            text = self._subscriptions.frame(events[0])
            if text is None:
                return None
            return self._write({"type": "websocket.send", "text": text})
        return self._take(events, True)

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
        if hub_waits and not self._policy.receive_is_async:
            return self._drain()
        self._wake.set()
        return None

    def _queue_events(self, events: list[Event]) -> None:
        if self.state is WriterState.CLOSED:
            return
        queue = self._queue
        for event in events:
            ids = self._subscriptions.matching(event)
            if ids is not None and self._replayed:
                sent = self._replayed.get(event.id)
                if sent:
                    ids = tuple(i for i in ids if i not in sent) or None
            if ids is None:
                continue
            if len(queue) >= self._buffer_size:
                # A marker at the point of loss: the client hears ``lagged``
                # after the frames queued before it, not ahead of them.
                if self._lagged is None:
                    self._lagged = _Lagged()
                    queue.append(self._lagged)
                self._lagged.dropped += 1
                continue
            queue.append((event, ids))

    # -- the connection's side ---------------------------------------------

    async def send(self, frame: dict[str, Any]) -> None:
        """Send a control frame after every frame handed over before it.

        When the queue is full this waits for room: the connection reads
        its client's next message only then, so a client that does not read
        its answers is not read either.
        """
        await self._control({"type": "websocket.send", "text": encode(frame)}, last=False)

    async def send_close(self, code: int) -> None:
        """Close the websocket with ``code`` after every frame handed over before; send no more."""
        await self._control({"type": "websocket.close", "code": code}, last=True)

    async def _control(self, message: dict[str, Any], *, last: bool) -> None:
        while self.state is WriterState.WRITING and len(self._queue) >= self._buffer_size:
            room = self._room
            if room is None:
                room = self._room = self._loop.create_future()
            await room
        state = self.state
        if state is WriterState.WRITING:
            self._queue.append(_Control(message, last))
        elif state is not WriterState.CLOSED:
            # Idle: nothing is queued ahead of it. Catching up: what is queued
            # are live events, which follow the catch-up's own answers.
            await self._write(message)
            if last:
                self.close()

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

    def end_catch_up(self, sid: str, since: str, replay: list[Event] | None) -> None:
        """Put ``replay`` ahead of the event frames held back, and write them all.

        ``replay`` is what the history held after ``since`` that subscription
        ``sid`` matches, or None when there was nothing to replay (``gap``).
        An event both replayed and held is sent once, in the replay, listing
        every subscription it matched; a live copy arriving later (from
        another process) is not sent again to those subscriptions.
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
            queue.clear()
            queue.extend(replayed)
            queue.extend(live)
            sent = {event.id: frozenset(ids) for event, ids in replayed}
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

    def close(self) -> None:
        """Stop: drop what is queued, release whoever waits on it, end the writer's task."""
        if self.state is WriterState.CLOSED:
            return
        self.state = WriterState.CLOSED
        for item in self._queue:
            if isinstance(item, _CatchUp):
                _settle(item.started)
        self._queue.clear()
        if self._room is not None:
            _settle(self._room)
        self._lagged = None
        self._task.cancel()

    # -- writing the queue -------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()

    async def _drain(self) -> None:
        """Write the queue, in order, while the state is WRITING (one drain at a time)."""
        try:
            await self._write_queue()
        except asyncio.CancelledError:
            if self.state is WriterState.WRITING:
                # The hub was cancelled halfway: the writer's task carries on.
                self._wake.set()
            raise
        except Exception:
            logger.exception("Writing to a websocket failed; it gets no more frames.")
            self.close()

    async def _write_queue(self) -> None:
        queue = self._queue
        while queue and self.state is WriterState.WRITING:
            item = queue.popleft()
            if self._room is not None and len(queue) < self._buffer_size:
                _settle(self._room)
                self._room = None
            if isinstance(item, tuple):
                text = await self._event_text(*item)
                if text is not None:
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
