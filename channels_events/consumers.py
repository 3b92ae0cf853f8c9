"""The browser's event stream: ``EventStreamConsumer`` speaks PROTOCOL.md sections 4-7.

A connection registers its writer (``_writer.py``) with the process's hub
instead of joining channel-layer groups itself, so a daphne process holds the
same Redis connections for one browser or ten thousand, and each event is
encoded to JSON once per process. ``EventConsumerMixin`` (``_mixin.py``), for
consumers of your own, is imported from here too.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, ClassVar

from channels.generic.websocket import AsyncWebsocketConsumer

from ._conf import events_settings
from ._dispatcher import get_dispatcher
from ._events import Event
from ._filters import Filter, parse_filter
from ._frames import (
    MAX_ID_LENGTH,
    Subscription,
    is_message_id,
    peek_reply_id,
    reply_id,
    subscription_matches,
)
from ._history import TIMEOUT as HISTORY_TIMEOUT
from ._history import recorded_events
from ._hub import Hub, get_hub
from ._json import parse
from ._metrics import metrics
from ._mixin import EventConsumerMixin
from ._names import compile_client_pattern, validate_name
from ._policy import Policy, get_policy
from ._presence import Membership, member_of, validate_topic
from ._subscriptions import Subscriptions
from ._writer import ConnectionWriter
from .exceptions import ChannelsEventsError, EventTooLarge, InvalidFilter, ProtocolError

__all__ = ["EventConsumerMixin", "EventStreamConsumer"]

logger = logging.getLogger("channels_events.consumers")

PROTOCOL_VERSION = 1
#: Closes a connection that keeps sending faster than the rate limit.
CLOSE_POLICY = 4008
#: Closes a connection whose frame is far past the size limit. RFC 6455 has
#: 1009 for this, but a server may only send 1000 or 3000-4999 (daphne turns
#: anything else into an error and 1011), so it is 1009 in the private range.
CLOSE_TOO_BIG = 4009
# A client that reads too slowly is closed by its writer: _writer.CLOSE_SLOW (4010).
# A frame this many times over the size limit closes the connection.
_FAR_TOO_LARGE = 4
# Seconds to wait for the hub to join a namespace's group before a subscribe
# with ``since`` is answered with ``gap`` (history reads: _history.TIMEOUT).
JOIN_TIMEOUT = 5.0


class _RateLimit:
    """A connection's token bucket: ``rate`` messages a second, in bursts of up to ``burst``.

    Each message refused is a strike. Strikes are forgiven only once the
    bucket is full again, when the client has kept under the rate long
    enough to earn a whole burst back: a client that keeps sending faster
    than the rate, by however little, gathers strikes until it is closed.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._refilled = time.monotonic()
        #: Messages refused since the bucket was last full.
        self.strikes = 0

    def take(self) -> bool:
        """Take a token for one message; return False (a strike) when there is none."""
        now = time.monotonic()
        tokens = min(self.burst, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        if tokens >= self.burst:
            self.strikes = 0
        if tokens >= 1:
            self._tokens = tokens - 1
            return True
        self._tokens = tokens
        self.strikes += 1
        return False

    @property
    def exceeded(self) -> bool:
        """Return whether more than ``burst`` messages were refused since the bucket was full."""
        return self.strikes > self.burst


class _ReplayBudget:
    """A connection's allowance of events replayed from the history: ``per_minute``, in one bucket.

    A ``subscribe`` with ``since`` needs some allowance left; what the
    history then hands over is taken from it, even past zero, so a client
    that loops on ``since`` gets as many events a minute as the budget and
    no more, however it spreads its subscriptions.
    """

    def __init__(self, per_minute: int) -> None:
        self.size = per_minute
        self._left = float(per_minute)
        self._refilled = time.monotonic()

    def available(self) -> bool:
        """Return whether a replay may start now."""
        now = time.monotonic()
        self._left = min(self.size, self._left + (now - self._refilled) * self.size / 60.0)
        self._refilled = now
        return self._left >= 1

    def spend(self, events: int) -> None:
        """Take ``events`` replayed events from the allowance."""
        self._left -= events


class EventStreamConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """Stream events to a browser over a websocket (PROTOCOL.md sections 4-7).

    Route it at ``/ws/events/`` behind ``AllowedHostsOriginValidator`` and
    ``AuthMiddlewareStack``. What a connection may do is decided by the
    policies in settings (see ``channels_events._policy``); with none
    configured nothing is open. Limits come from settings: ``MAX_FRAME_BYTES``,
    ``MAX_SUBSCRIPTIONS``, ``MAX_PATTERN_LENGTH``, ``RATE_LIMIT`` and
    ``RATE_BURST`` (messages per second and bucket size), ``BUFFER_SIZE``
    and ``BUFFER_BYTES`` (frames and bytes waiting to be written before the
    client is told it ``lagged``), ``REPLAY_BUDGET`` (events replayed with
    ``since`` per minute).
    """

    # Events arrive through the hub, so a connection needs no channel-layer
    # channel of its own: none means no per-connection receive on Redis.
    # Subclasses that also want group messages can set an alias back.
    channel_layer_alias: str | None = None

    async def connect(self) -> None:
        """Accept, greet with ``welcome``, and register with the hub."""
        self.connection_id = uuid.uuid4().hex
        self._policy: Policy = get_policy()
        self._subscriptions = Subscriptions()
        self._rate = _RateLimit(float(events_settings.RATE_LIMIT), events_settings.RATE_BURST)
        self._replay_budget = _ReplayBudget(events_settings.REPLAY_BUDGET)
        self._hub: Hub = get_hub()
        await self._hub.attach()
        self._writer: ConnectionWriter = ConnectionWriter(
            self.base_send,
            self._subscriptions,
            self._policy,
            self.scope,
            events_settings.BUFFER_SIZE,
            events_settings.BUFFER_BYTES,
            connection_id=self.connection_id,
        )
        self._joins: dict[str, Membership] = {}
        await self.accept()
        await self._writer.send(
            {"type": "welcome", "protocol": PROTOCOL_VERSION, "connection": self.connection_id}
        )

    async def disconnect(self, code: int) -> None:
        """Unregister from the hub and stop writing."""
        self._stop()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the consumer; unregister from the hub however it ends.

        A server that gives up on a connection cancels it without a
        ``websocket.disconnect``: the hub must not keep feeding it.
        """
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._stop()

    def _stop(self) -> None:
        # connect() may have failed before the writer existed.
        writer: ConnectionWriter | None = getattr(self, "_writer", None)
        if writer is not None:
            self._hub.remove_subscriber(writer)
            writer.close()
            # A connection that ends leaves every topic it joined.
            joins, self._joins = self._joins, {}
            for membership in joins.values():
                self._hub.presence.leave_soon(membership)

    # -- the client's messages ---------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Handle one client frame; a bad one gets an ``error`` and changes nothing."""
        if not self._rate.take():
            if self._rate.exceeded:
                await self._writer.send_close(CLOSE_POLICY)
                return
            await self._error(
                "rate_limited", "Too many messages; slow down.", peek_reply_id(text_data)
            )
            return
        if text_data is None:
            await self._error("bad_request", "Binary frames are not part of the protocol.")
            return
        limit = events_settings.MAX_FRAME_BYTES
        # surrogatepass: a server that does not check UTF-8 may hand over lone surrogates.
        size = (
            len(text_data.encode("utf-8", "surrogatepass"))
            if len(text_data) * 4 > limit
            else len(text_data)
        )
        if size > limit:
            if size > limit * _FAR_TOO_LARGE:
                await self._writer.send_close(CLOSE_TOO_BIG)
                return
            await self._error("too_large", f"Frames are limited to {limit} bytes; got {size}.")
            return
        try:
            message = parse(text_data)
        except (ValueError, RecursionError):
            await self._error("bad_json", "The frame is not valid JSON.")
            return
        try:
            if not isinstance(message, dict):
                raise ProtocolError("bad_request", "A frame must be a JSON object.")
            kind = message.get("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise ProtocolError(
                    "bad_request",
                    f"Unknown or missing type {kind!r}; expected one of "
                    f"{', '.join(sorted(self._handlers))}.",
                )
            await handler(self, message)
        except ProtocolError as error:
            await self._error(error.code, error.message, reply_id(message))

    async def _subscribe(self, message: dict[str, Any]) -> None:
        sid = _message_id(message)
        pattern = _field(message, "pattern", str)
        since = message.get("since")
        if since is not None and not isinstance(since, str):
            raise ProtocolError("bad_request", "since must be an event id (a string).")
        where = _where(message)
        if sid in self._subscriptions or sid in self._joins:
            raise ProtocolError("duplicate_id", f"Subscription id {sid!r} is already in use.")
        if len(self._subscriptions) >= events_settings.MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                "too_many_subscriptions",
                f"At most {events_settings.MAX_SUBSCRIPTIONS} subscriptions per connection.",
            )
        try:
            compiled = compile_client_pattern(pattern, events_settings.MAX_PATTERN_LENGTH)
        except ChannelsEventsError as exc:
            raise ProtocolError("invalid_pattern", str(exc)) from None
        imposed = await self._subscribe_filter(compiled.namespace, pattern)
        if imposed is None:
            metrics.refused("subscribe")
            raise ProtocolError(
                "forbidden", f"Subscribing to namespace {compiled.namespace!r} is not allowed."
            )
        # The policy's filter holds whatever the client asks: ``where`` narrows it.
        entry = (sid, compiled, imposed.narrow(where) or None)
        subscribed = {"type": "subscribed", "id": sid, "namespace": compiled.namespace}
        if since is not None and not self._replay_budget.available():
            # Nothing changes: the client asks again later (events.js does).
            raise ProtocolError(
                "rate_limited",
                f"At most {self._replay_budget.size} events a minute are replayed with "
                "since on one connection; ask again later.",
            )
        await self._start(entry, since, subscribed)

    async def _subscribe_filter(self, namespace: str, pattern: str) -> Filter | None:
        """Ask the subscribe policy: its filter (empty for none), or None for a refusal."""
        try:
            return await self._policy.subscribe_filter(self.scope, namespace, pattern)
        except Exception:
            logger.exception("A channels-events policy raised; treating it as a refusal.")
            return None

    async def _start(
        self, entry: Subscription, since: str | None, subscribed: dict[str, Any]
    ) -> None:
        """Subscribe; with ``since``, send what the history kept after it ahead of live events.

        ``subscribed`` carries ``last``, the newest recorded event of the
        namespace once the subscription hears live events: a client that
        has seen nothing resumes from there after a reconnect.
        """
        sid, compiled, where = entry
        writer = self._writer
        # Live events queue from here on, held back until ``subscribed`` and
        # the history after ``since`` are in front of them (PROTOCOL.md
        # section 6).
        await writer.begin_catch_up()
        replay: list[Event] | None = None
        try:
            self._subscriptions.add(sid, compiled, where)
            self._hub.add_subscriber(writer)
            last = await self._latest(compiled.namespace)
            await writer.send({**subscribed, "last": last})
            if since is None:
                return
            replay = await self._replay(entry, since)
            if replay is None:
                # Nothing kept after ``since``, or no history at all: it is gone.
                await writer.send({"type": "gap", "subscription": sid, "since": since})
        finally:
            writer.end_catch_up(sid, since, replay)

    async def _latest(self, namespace: str) -> str | None:
        """Return the id of the newest recorded event of ``namespace``, or None if unknown."""
        history = self._hub.history
        if history is None:
            return None
        try:
            # Events after the one returned must reach this connection live:
            # only once this process is in the namespace's group do they.
            if not await self._hub.joined(namespace, JOIN_TIMEOUT):
                logger.warning("Not in the group of %r yet: answering last with null.", namespace)
                return None
            return await asyncio.wait_for(history.newest(namespace), HISTORY_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning(
                "Reading the history of %r timed out: answering last with null.", namespace
            )
        except Exception:
            logger.exception(
                "Reading the history of %r failed: answering last with null.", namespace
            )
        return None

    async def _replay(self, entry: Subscription, since: str) -> list[Event] | None:
        """Return the recorded events after ``since`` that match, or None if it is not kept."""
        found = await self._read_history(entry[1].namespace, since)
        if found is None:
            return None
        # Reading costs what was read, whatever the pattern keeps of it.
        self._replay_budget.spend(len(found))
        return [event for event in recorded_events(found) if subscription_matches(entry, event)]

    async def _read_history(self, namespace: str, since: str) -> list[dict[str, Any]] | None:
        history = self._hub.history
        if history is None:
            return None
        try:
            # Only once this process hears the namespace's live events can
            # what the history holds and what arrives next meet without a hole.
            if not await self._hub.joined(namespace, JOIN_TIMEOUT):
                logger.warning("Not in the group of %r yet: answering since with gap.", namespace)
                return None
            return await asyncio.wait_for(history.after(namespace, since), HISTORY_TIMEOUT)
        except asyncio.TimeoutError:
            logger.warning("Reading the history of %r timed out: answering gap.", namespace)
        except Exception:
            logger.exception("Reading the history of %r failed: answering gap.", namespace)
        return None

    async def _unsubscribe(self, message: dict[str, Any]) -> None:
        sid = _message_id(message)
        if self._subscriptions.remove(sid) is None:
            raise ProtocolError("unknown_subscription", f"No subscription with id {sid!r}.")
        writer = self._writer
        # Frames still queued for it go without its id: after ``unsubscribed``
        # no frame names it, even if the client reuses the id at once.
        writer.forget(sid)
        self._hub.add_subscriber(writer)
        await writer.send({"type": "unsubscribed", "id": sid})

    async def _ping(self, message: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"type": "pong"}
        if "id" in message:
            reply["id"] = _message_id(message)
        await self._writer.send(reply)

    async def _emit(self, message: dict[str, Any]) -> None:
        name = _field(message, "name", str)
        payload = _field(message, "payload", dict)
        try:
            validate_name(name)
        except ChannelsEventsError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        # The policy first: a client it refuses learns nothing of the name's
        # event class from a payload that would not fit it.
        if not await self._ask(self._policy.may_emit, name, payload):
            metrics.refused("emit")
            raise ProtocolError("forbidden", f"Emitting {name!r} is not allowed.")
        try:
            # A name an Event subclass declares builds that class, and a
            # payload that does not fit it is refused here.
            event = Event(name, payload)
            # A browser's event is meant for other clients: it must travel.
            event._payload_json()
        except EventTooLarge as exc:
            raise ProtocolError("too_large", str(exc)) from None
        except ChannelsEventsError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        await get_dispatcher().adispatch(event)
        await self._writer.send({"type": "emitted", "id": event.id})

    async def _join(self, message: dict[str, Any]) -> None:
        join_id = _message_id(message)
        topic = _field(message, "topic", str)
        try:
            validate_topic(topic)
        except ChannelsEventsError as exc:
            raise ProtocolError("bad_request", str(exc)) from None
        # Joins and subscriptions share one id space: an id names one thing.
        if join_id in self._joins or join_id in self._subscriptions:
            raise ProtocolError("duplicate_id", f"Id {join_id!r} is already in use.")
        if len(self._joins) >= events_settings.MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                "too_many_subscriptions",
                f"At most {events_settings.MAX_SUBSCRIPTIONS} joins per connection.",
            )
        try:
            member = member_of(await self._policy.member(self.scope, topic))
        except Exception:
            logger.exception("The presence policy raised; treating it as a refusal.")
            member = None
        if member is None:
            raise ProtocolError("forbidden", f"Joining {topic!r} is not allowed.")
        membership = Membership(join_id, topic, member, self._writer.send)
        self._joins[join_id] = membership
        presence = self._hub.presence
        members = await self._hub.runner.run(lambda: presence.join(membership))
        if self._joins.get(join_id) is not membership:
            return  # the connection ended meanwhile
        await self._writer.send(
            {"type": "presence", "id": join_id, "topic": topic, "members": members}
        )
        membership.open()

    async def _leave(self, message: dict[str, Any]) -> None:
        join_id = _message_id(message)
        membership = self._joins.pop(join_id, None)
        if membership is None:
            raise ProtocolError("unknown_subscription", f"No join with id {join_id!r}.")
        membership.close()
        presence = self._hub.presence
        await self._hub.runner.run(lambda: presence.leave(membership))
        await self._writer.send({"type": "left", "id": join_id})

    _handlers: ClassVar[dict[str, Any]] = {
        "subscribe": _subscribe,
        "unsubscribe": _unsubscribe,
        "ping": _ping,
        "emit": _emit,
        "join": _join,
        "leave": _leave,
    }

    async def _ask(self, question: Any, *args: Any) -> bool:
        try:
            return bool(await question(self.scope, *args))
        except Exception:
            logger.exception("A channels-events policy raised; treating it as a refusal.")
            return False

    async def _error(self, code: str, message: str, answers: str | None = None) -> None:
        metrics.protocol_error(code)
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if answers is not None:
            frame["id"] = answers
        await self._writer.send(frame)


def _message_id(message: dict[str, Any]) -> str:
    """Return the message's ``id``, which must be a string of 1-64 characters."""
    sid = message.get("id")
    if not is_message_id(sid):
        raise ProtocolError(
            "bad_request",
            f"{message.get('type')} needs 'id' as a string of 1-{MAX_ID_LENGTH} characters.",
        )
    return str(sid)


def _where(message: dict[str, Any]) -> Filter | None:
    """Return the filter of a subscribe's ``where``, or None when it has none."""
    where = message.get("where")
    if where is None:
        return None
    try:
        return parse_filter(where) or None
    except InvalidFilter as exc:
        raise ProtocolError("bad_request", str(exc)) from None


def _field(message: dict[str, Any], key: str, kind: type) -> Any:
    value = message.get(key)
    if not isinstance(value, kind):
        raise ProtocolError(
            "bad_request", f"{message.get('type')} needs {key!r} as a {kind.__name__}."
        )
    return value
