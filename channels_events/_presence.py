"""Presence: who is on a topic, across every process (PROTOCOL.md sections 4, 5 and 6b).

A connection that ``join``s a topic becomes a member, as the presence policy
names it (an ``id`` and a JSON ``info``). A member with several connections,
in one process or in several, is present once: it joins with its first
connection and leaves after its last. Each process counts its own
connections per member; a :class:`Store` counts the processes that hold
each member: a Redis hash per topic when the channel layer is
``channels_redis`` (shared, with expiry), a dict otherwise (one process).

Every change of membership is dispatched as an event,
``<topic>::presence::joined`` or ``<topic>::presence::left`` with the
payload ``{"topic": ..., "member": {"id": ..., "info": ...}}``. Those events
are what carries presence between processes: each process keeps a mirror of
the members of the topics its connections joined, updated by the events of
that namespace, and tells its connections the difference. They reach
listeners and ``EventConsumerMixin`` consumers like any event, but never a
browser's event stream nor the history (``is_presence_event``): a browser
sees presence only through ``join``.

Each process with members sends a heartbeat to Redis, one script call per
interval whatever its member count. A process that stops sending it (killed
with SIGKILL) is found by the next heartbeat of another process, which takes
its members out and dispatches their ``left`` events: they leave within
``PRESENCE_TIMEOUT`` seconds, seen from every process.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from ._conf import events_settings, on_change
from ._events import Event
from ._json import encode, parse
from ._metrics import metrics
from ._names import MAX_NAME_LENGTH, namespace_of, validate_name
from ._redis import LoopClients
from .exceptions import InvalidEventName

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = [
    "DIFF_WINDOW",
    "JOINED",
    "LEFT",
    "MAX_MEMBER_ID_LENGTH",
    "Change",
    "Membership",
    "MemoryStore",
    "Presence",
    "RedisStore",
    "Store",
    "apresence",
    "is_presence_event",
    "member_of",
    "presence",
    "validate_topic",
]

logger = logging.getLogger("channels_events.presence")

#: The last segments of the events a join and a leave are dispatched as.
JOINED = "::presence::joined"
LEFT = "::presence::left"
#: Seconds a connection's presence changes wait for others to share their frame.
DIFF_WINDOW = 0.05
#: The longest member id a presence policy may give.
MAX_MEMBER_ID_LENGTH = 255
# The longest topic: its presence events' names must fit the name limit.
_MAX_TOPIC_LENGTH = MAX_NAME_LENGTH - len(JOINED)
# Seconds a join waits for this process to be in the topic's namespace group
# before it reads the members (a missed diff would leave the mirror wrong).
_JOIN_TIMEOUT = 5.0
# Seconds a presence()/apresence() read may take.
_READ_TIMEOUT = 5.0

Member: TypeAlias = dict[str, Any]
Frame: TypeAlias = dict[str, Any]


def is_presence_event(name: str) -> bool:
    """Return whether ``name`` is a presence event's (kept off browser streams and the history)."""
    return name.endswith(JOINED) or name.endswith(LEFT)


def validate_topic(topic: object) -> str:
    """Return ``topic`` if it is an event name short enough to carry presence events, else raise."""
    name = validate_name(topic)
    if len(name) > _MAX_TOPIC_LENGTH:
        raise InvalidEventName(
            f"Presence topic {name!r} is {len(name)} characters long; the limit is "
            f"{_MAX_TOPIC_LENGTH}, so that its presence events fit in a name."
        )
    if is_presence_event(name):
        raise InvalidEventName(f"Presence topic {name!r} names a presence event itself.")
    return name


def member_of(value: Any) -> Member | None:
    """Return the member a presence policy answered, ``{"id", "info"}``, or None for a refusal.

    A policy answers a dict with ``id`` (a string of 1-255 characters) and,
    optionally, ``info`` (JSON data); anything false is a refusal. Any other
    answer is a mistake of the policy: logged, and taken for a refusal.
    """
    if not value:
        return None
    if not isinstance(value, dict) or not set(value) <= {"id", "info"}:
        logger.error(
            "The presence policy answered %r; expected a dict with 'id' and 'info', or None.",
            value,
        )
        return None
    member_id = value.get("id")
    if not isinstance(member_id, str) or not 0 < len(member_id) <= MAX_MEMBER_ID_LENGTH:
        logger.error(
            "The presence policy gave the member id %r; expected a string of 1-%d characters.",
            member_id,
            MAX_MEMBER_ID_LENGTH,
        )
        return None
    info = value.get("info")
    try:
        # Kept as plain JSON data: it travels to other processes and browsers.
        info = parse(encode(info))
    except (TypeError, ValueError) as exc:
        logger.error("The presence policy gave info that is not JSON data (%s): %r", exc, info)
        return None
    return {"id": member_id, "info": info}


class Membership:
    """One connection's join of one topic: who it is, and where its frames go.

    Presence reports changes from the hub's loop; they are sent as
    ``presence_diff`` frames on the connection's own loop through ``send``,
    once :meth:`open` says the ``presence`` answer went out first. Changes
    within ``DIFF_WINDOW`` seconds of the first go out together in one
    frame: a crowd arriving costs each connection a few frames, not one per
    member (every member gets every diff, so one frame each would grow with
    the square of the crowd).
    """

    def __init__(
        self, join_id: str, topic: str, member: Member, send: Callable[[Frame], Awaitable[None]]
    ) -> None:
        self.join_id = join_id
        self.topic = topic
        self.member = member
        self._send = send
        self._loop = asyncio.get_running_loop()
        # Member id -> (joined, member), in arrival order. Presence reports a
        # member's joins and leaves alternately, so a second change of one
        # member before the frame goes cancels the first.
        self._pending: dict[str, tuple[bool, Member]] = {}
        self._opened = False
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"<Membership {self.join_id!r} of {self.member['id']!r} in {self.topic!r}>"

    def diff(self, joins: list[Member], leaves: list[Member]) -> None:
        """Report members who arrived and left, from any thread."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._note(joins, leaves)
        else:
            with contextlib.suppress(RuntimeError):  # the connection's loop is gone
                self._loop.call_soon_threadsafe(self._note, joins, leaves)

    def open(self) -> None:
        """Start sending diffs: the ``presence`` answer went out."""
        self._opened = True
        self._wake()

    def close(self) -> None:
        """Send no more diffs (the connection left the topic or ended)."""
        self._closed = True
        self._pending.clear()
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()

    def _note(self, joins: list[Member], leaves: list[Member]) -> None:
        if self._closed:
            return
        pending = self._pending
        for joined, members in ((False, leaves), (True, joins)):
            for member in members:
                if pending.pop(member["id"], None) is None:
                    pending[member["id"]] = (joined, member)
        self._wake()

    def _wake(self) -> None:
        if not self._opened or not self._pending or self._timer is not None:
            return
        if self._task is None or self._task.done():
            self._timer = self._loop.call_later(DIFF_WINDOW, self._start)

    def _start(self) -> None:
        self._timer = None
        if not self._closed and (self._task is None or self._task.done()):
            self._task = self._loop.create_task(self._drain())

    async def _drain(self) -> None:
        if self._pending and not self._closed:
            changes, self._pending = self._pending, {}
            frame = {
                "type": "presence_diff",
                "id": self.join_id,
                "joins": [member for joined, member in changes.values() if joined],
                "leaves": [member for joined, member in changes.values() if not joined],
            }
            await self._send(frame)
        # Changes that came while the frame was written wait for their window.
        self._task = None
        self._wake()


# -- where members are counted across processes ------------------------------


class Change:
    """One change a process records: it holds ``member`` on ``topic`` now, or no more."""

    __slots__ = ("future", "joined", "last", "member", "topic")

    def __init__(self, joined: bool, topic: str, member: Member, last: bool = False) -> None:
        self.joined = joined
        self.topic = topic
        self.member = member
        #: For a leave: the process's last member on the topic.
        self.last = last
        self.future: asyncio.Future[bool] | None = None


class Store(abc.ABC):
    """Count, per topic and member, the processes that hold the member."""

    @abc.abstractmethod
    async def add(self, origin: str, topic: str, member: Member) -> bool:
        """Record that process ``origin`` holds ``member``; return whether it is new there."""

    @abc.abstractmethod
    async def remove(self, origin: str, topic: str, member_id: str, last: bool) -> bool:
        """Record that ``origin`` holds the member no more; return whether it left the topic.

        ``last`` says it was the process's last member on the topic.
        """

    @abc.abstractmethod
    async def members(self, topic: str) -> list[Member]:
        """Return the members of ``topic``."""

    async def apply(self, origin: str, changes: list[Change]) -> list[bool]:
        """Record ``changes`` of process ``origin`` in order; return which changed their topic.

        A store that can sends them all at once.
        """
        done = []
        for change in changes:
            if change.joined:
                done.append(await self.add(origin, change.topic, change.member))
            else:
                done.append(
                    await self.remove(origin, change.topic, change.member["id"], change.last)
                )
        return done

    async def heartbeat(self, origin: str, timeout: float) -> tuple[bool, list[tuple[str, Member]]]:
        """Say that ``origin`` is alive; return whether it had been given up for dead,
        and the (topic, member) pairs that left with processes that stopped saying so."""
        return False, []

    async def close(self) -> None:  # noqa: B027 - a memory store holds no connection
        """Let go of this event loop's connections, if any."""


class MemoryStore(Store):
    """Members in this process: for the in-memory layer (one process) or no layer."""

    def __init__(self) -> None:
        self._topics: dict[str, dict[str, tuple[Any, int]]] = {}

    async def add(self, origin: str, topic: str, member: Member) -> bool:
        members = self._topics.setdefault(topic, {})
        info, count = members.get(member["id"], (member["info"], 0))
        members[member["id"]] = (info, count + 1)
        return count == 0

    async def remove(self, origin: str, topic: str, member_id: str, last: bool) -> bool:
        members = self._topics.get(topic, {})
        entry = members.get(member_id)
        if entry is None:
            return False
        if entry[1] > 1:
            members[member_id] = (entry[0], entry[1] - 1)
            return False
        del members[member_id]
        if not members:
            self._topics.pop(topic, None)
        return True

    async def members(self, topic: str) -> list[Member]:
        return [{"id": mid, "info": info} for mid, (info, _) in self._topics.get(topic, {}).items()]


# Keys, under <prefix>: "procs" (a sorted set: process -> time of its last
# heartbeat, in Redis's clock), "proc:<origin>" (a set of "topic\n member id"
# a process holds), "topics:<origin>" (a set of the topics it holds members
# on), "count:<topic>" (a hash: member id -> processes holding it) and
# "info:<topic>" (a hash: member id -> info as JSON). Every key expires;
# heartbeats renew the keys of the processes and topics in use.
_ADD = """
local p, origin, topic, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ttl = tonumber(ARGV[6])
local entry = topic .. "\\n" .. member
local mine = p .. ':proc:' .. origin
if redis.call('SADD', mine, entry) == 0 then return 0 end
redis.call('PEXPIRE', mine, ttl)
-- Known as alive from its first member on, not from its first heartbeat:
-- a process killed before that must be found too.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZADD', p .. ':procs', now, origin)
redis.call('PEXPIRE', p .. ':procs', ttl)
redis.call('SADD', p .. ':topics:' .. origin, topic)
redis.call('PEXPIRE', p .. ':topics:' .. origin, ttl)
local count_key, info_key = p .. ':count:' .. topic, p .. ':info:' .. topic
local count = redis.call('HINCRBY', count_key, member, 1)
if count == 1 then redis.call('HSET', info_key, member, ARGV[5]) end
redis.call('PEXPIRE', count_key, ttl)
redis.call('PEXPIRE', info_key, ttl)
return count
"""

_REMOVE = """
local p, origin, topic, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if ARGV[5] == '1' then redis.call('SREM', p .. ':topics:' .. origin, topic) end
if redis.call('SREM', p .. ':proc:' .. origin, topic .. "\\n" .. member) == 0 then return -1 end
local count_key = p .. ':count:' .. topic
local count = redis.call('HINCRBY', count_key, member, -1)
if count <= 0 then
  redis.call('HDEL', count_key, member)
  redis.call('HDEL', p .. ':info:' .. topic, member)
end
return count
"""

# One call per heartbeat: renew this process's entry and keys, and take the
# members of processes silent for longer than ``dead`` ms out of every topic.
_HEARTBEAT = """
local p, origin = ARGV[1], ARGV[2]
local dead, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local procs = p .. ':procs'
local revived = redis.call('ZADD', procs, now, origin)
redis.call('PEXPIRE', procs, ttl)
local mine = p .. ':proc:' .. origin
redis.call('PEXPIRE', mine, ttl)
redis.call('PEXPIRE', p .. ':topics:' .. origin, ttl)
for _, topic in ipairs(redis.call('SMEMBERS', p .. ':topics:' .. origin)) do
  redis.call('PEXPIRE', p .. ':count:' .. topic, ttl)
  redis.call('PEXPIRE', p .. ':info:' .. topic, ttl)
end
local left = {revived}
for _, other in ipairs(redis.call('ZRANGEBYSCORE', procs, '-inf', now - dead)) do
  if other ~= origin then
    redis.call('ZREM', procs, other)
    local theirs = p .. ':proc:' .. other
    for _, entry in ipairs(redis.call('SMEMBERS', theirs)) do
      local cut = string.find(entry, "\\n", 1, true)
      local topic, member = string.sub(entry, 1, cut - 1), string.sub(entry, cut + 1)
      local count_key, info_key = p .. ':count:' .. topic, p .. ':info:' .. topic
      if redis.call('HINCRBY', count_key, member, -1) <= 0 then
        local info = redis.call('HGET', info_key, member)
        redis.call('HDEL', count_key, member)
        redis.call('HDEL', info_key, member)
        table.insert(left, topic)
        table.insert(left, member)
        table.insert(left, info or 'null')
      end
    end
    redis.call('DEL', theirs, p .. ':topics:' .. other)
  end
end
return left
"""


class RedisStore(Store):
    """Members in Redis, shared by every process of a ``channels_redis`` layer.

    Each event loop gets its own client (as the history's do). The scripts
    run with EVALSHA, so a call is one round trip.
    """

    def __init__(self, host: dict[str, Any], prefix: str) -> None:
        self.host = host
        self.prefix = prefix
        self._redis = LoopClients(host, {"add": _ADD, "remove": _REMOVE, "heartbeat": _HEARTBEAT})

    async def _run(self, script: str, *args: Any) -> Any:
        return await self._redis.script(script)(args=[self.prefix, *args])

    @staticmethod
    def _ttl() -> int:
        # Long enough that a live process's keys never lapse between
        # heartbeats, short enough that nothing outlives a dead deployment.
        return int(float(events_settings.PRESENCE_TIMEOUT) * 4000)

    async def add(self, origin: str, topic: str, member: Member) -> bool:
        count = await self._run(
            "add", origin, topic, member["id"], encode(member["info"]), self._ttl()
        )
        return int(count) == 1

    async def remove(self, origin: str, topic: str, member_id: str, last: bool) -> bool:
        count = await self._run("remove", origin, topic, member_id, "1" if last else "0")
        return int(count) == 0

    async def apply(self, origin: str, changes: list[Change]) -> list[bool]:
        # One round trip for every change queued while the last one was out.
        client = self._redis.client()
        add, remove = self._redis.script("add"), self._redis.script("remove")
        ttl = self._ttl()
        async with client.pipeline(transaction=False) as pipe:
            for change in changes:
                member = change.member
                if change.joined:
                    args = [self.prefix, origin, change.topic, member["id"]]
                    await add(args=[*args, encode(member["info"]), ttl], client=pipe)
                else:
                    last = "1" if change.last else "0"
                    args = [self.prefix, origin, change.topic, member["id"], last]
                    await remove(args=args, client=pipe)
            counts = await pipe.execute()
        return [
            int(count) == (1 if change.joined else 0)
            for change, count in zip(changes, counts, strict=True)
        ]

    async def members(self, topic: str) -> list[Member]:
        found = await self._redis.client().hgetall(f"{self.prefix}:info:{topic}")
        return [
            {"id": member_id.decode(), "info": parse(info.decode())}
            for member_id, info in found.items()
        ]

    async def heartbeat(self, origin: str, timeout: float) -> tuple[bool, list[tuple[str, Member]]]:
        found = await self._run("heartbeat", origin, int(timeout * 750), self._ttl())
        revived = bool(int(found[0]))
        left = []
        for index in range(1, len(found) - 2, 3):
            topic, member_id, info = (part.decode() for part in found[index : index + 3])
            left.append((topic, {"id": member_id, "info": parse(info)}))
        return revived, left

    async def close(self) -> None:
        await self._redis.close()


def store_for(alias: str | None) -> Store:
    """Return the store that goes with the channel layer ``alias``."""
    from django.conf import settings

    config = getattr(settings, "CHANNEL_LAYERS", {}).get(alias) if alias else None
    if config and str(config.get("BACKEND", "")).startswith("channels_redis."):
        from channels_redis.utils import decode_hosts

        layer_config = config.get("CONFIG", {})
        # With several hosts (sharding), the first one keeps presence, as it keeps the history.
        host = decode_hosts(layer_config.get("hosts"))[0]
        prefix = f"{layer_config.get('prefix', 'asgi')}:presence:{events_settings.GROUP_PREFIX}"
        return RedisStore(host, prefix)
    return MemoryStore()


# -- this process's side -----------------------------------------------------


class _Topic:
    """What this process knows of one topic its connections joined."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        #: Everyone present, by member id: their info (the mirror).
        self.members: dict[str, Any] = {}
        #: This process's connections per member id.
        self.local: dict[str, int] = {}
        self.watchers: set[Membership] = set()
        #: Settled once the members were read; events until then wait in ``early``.
        self.loaded: asyncio.Future[None] = loop.create_future()
        self.early: list[tuple[list[Member], list[Member]]] = []


class Presence:
    """This process's members and mirrors, on the hub's loop; the hub holds one.

    It is a hub subscriber for the namespaces of the topics its connections
    joined: the presence events of those namespaces keep its mirrors right.
    """

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._topics: dict[str, _Topic] = {}
        #: Members of the mirrors, summed per namespace: the presence gauge.
        self._counts: dict[str, int] = {}
        self._store: Store | None = None
        self._lock: asyncio.Lock | None = None
        # Changes waiting to be recorded, in order (see _record).
        self._changes: list[Change] = []
        self._heartbeat: asyncio.Task[None] | None = None
        on_change(self.reset)

    # -- the hub's side ----------------------------------------------------

    def namespaces(self) -> set[str]:
        """Return the namespaces of the topics this process's connections joined."""
        return {namespace_of(topic) for topic in self._topics}

    def deliver(self, events: list[Event]) -> Awaitable[None] | None:
        """Take a batch of events of one namespace: apply its presence events to the mirrors."""
        changes: dict[str, tuple[list[Member], list[Member]]] = {}
        for event in events:
            name = event.name
            if not is_presence_event(name):
                continue
            payload = event.payload
            topic, member = payload.get("topic"), payload.get("member")
            if topic not in self._topics or not isinstance(member, dict):
                continue
            joins, leaves = changes.setdefault(topic, ([], []))
            (joins if name.endswith(JOINED) else leaves).append(member)
        for topic, (joins, leaves) in changes.items():
            state = self._topics.get(topic)
            if state is None:
                continue
            if not state.loaded.done():
                state.early.append((joins, leaves))
            else:
                self._apply(topic, state, joins, leaves)
        return None

    # -- the connections' side ---------------------------------------------

    @property
    def store(self) -> Store:
        """Return the store of the current settings, made on first use."""
        if self._store is None:
            self._store = store_for(self._hub.link.alias if self._hub.layer is not None else None)
        return self._store

    def reset(self) -> None:
        """Forget everything: settings changed (tests), or the hub starts afresh."""
        self._topics = {}
        for namespace in self._counts:
            metrics.presence_members(namespace, 0)
        self._counts = {}
        self._store = None
        self._lock = None
        self._changes = []
        if self._heartbeat is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed
                self._heartbeat.cancel()
            self._heartbeat = None

    async def join(self, membership: Membership) -> list[Member]:
        """Add ``membership``'s member to its topic; return everyone present, itself included.

        Runs on the hub's loop. The membership gets the diffs from now on
        (queued until it is opened).
        """
        topic, member = membership.topic, membership.member
        state = self._topics.get(topic)
        if state is None:
            state = self._topics[topic] = _Topic(asyncio.get_running_loop())
            await self._load(topic, state)
        else:
            await asyncio.shield(state.loaded)
        state = self._topics.get(topic, state)
        member_id = member["id"]
        count = state.local.get(member_id, 0)
        state.local[member_id] = count + 1
        # The member is present here at once, so the answer lists it; the
        # event of its arrival, when it comes back, changes nothing.
        self._apply(topic, state, [member], [])
        members = [{"id": mid, "info": info} for mid, info in state.members.items()]
        state.watchers.add(membership)
        self._start_heartbeat()
        if count == 0:
            await self._record(topic, member, joined=True)
        return members

    async def leave(self, membership: Membership) -> None:
        """Take ``membership`` off its topic; its member leaves after its last connection."""
        membership.close()
        topic = membership.topic
        state = self._topics.get(topic)
        if state is None or membership not in state.watchers:
            return
        state.watchers.discard(membership)
        member = membership.member
        member_id = member["id"]
        count = state.local.get(member_id, 0) - 1
        if count > 0:
            state.local[member_id] = count
        else:
            state.local.pop(member_id, None)
        if not state.watchers:
            del self._topics[topic]
            self._count(topic, -len(state.members))
            self._hub.add_subscriber(self)
        if count <= 0:
            gone = await self._record(topic, member, joined=False, last=not state.local)
            if gone and topic in self._topics:
                self._apply(topic, state, [], [member])

    def leave_soon(self, membership: Membership) -> None:
        """Schedule :meth:`leave` on the hub's loop, from any thread (a connection that ended)."""
        membership.close()
        runner = self._hub.runner

        async def leave() -> None:
            try:
                await self.leave(membership)
            except Exception:
                logger.exception("Leaving presence topic %r failed.", membership.topic)

        if runner.is_current():
            task = asyncio.get_running_loop().create_task(leave())
            _background.add(task)
            task.add_done_callback(_background.discard)
        else:
            runner.submit(leave())

    async def members(self, topic: str) -> list[Member]:
        """Return the members of ``topic``, as the store has them (on the hub's loop)."""
        state = self._topics.get(topic)
        if state is not None and state.loaded.done():
            return [{"id": mid, "info": info} for mid, info in state.members.items()]
        return await self.store.members(topic)

    # -- the work ----------------------------------------------------------

    async def _load(self, topic: str, state: _Topic) -> None:
        """Read the members of a topic newly joined here, after joining its namespace's group."""
        namespace = namespace_of(topic)
        try:
            self._hub.add_subscriber(self)
            if not await self._hub.joined(namespace, _JOIN_TIMEOUT):
                logger.warning(
                    "Not in the group of %r yet: presence on %r may miss changes.", namespace, topic
                )
            found = await self.store.members(topic)
        except Exception:
            logger.exception("Reading the members of %r failed; starting from none.", topic)
            found = []
        before = len(state.members)
        state.members = {member["id"]: member["info"] for member in found}
        if self._topics.get(topic) is state:
            self._count(topic, len(state.members) - before)
        early, state.early = state.early, []
        state.loaded.set_result(None)
        for joins, leaves in early:
            self._apply(topic, state, joins, leaves)

    def _apply(self, topic: str, state: _Topic, joins: list[Member], leaves: list[Member]) -> None:
        """Change the mirror; tell the topic's connections what changed."""
        members = state.members
        joined = []
        for member in joins:
            if member.get("id") not in members:
                members[member["id"]] = member.get("info")
                joined.append({"id": member["id"], "info": member.get("info")})
        left = []
        for member in leaves:
            member_id = member.get("id")
            if member_id in members and member_id not in state.local:
                left.append({"id": member_id, "info": members.pop(member_id)})
        if joined or left:
            if self._topics.get(topic) is state:
                self._count(topic, len(joined) - len(left))
            for watcher in list(state.watchers):
                watcher.diff(joined, left)

    def _count(self, topic: str, change: int) -> None:
        """Add ``change`` to the members counted in ``topic``'s namespace; report the sum."""
        if not change:
            return
        namespace = namespace_of(topic)
        count = self._counts.get(namespace, 0) + change
        if count:
            self._counts[namespace] = count
        else:
            self._counts.pop(namespace, None)
        metrics.presence_members(namespace, count)

    def _lock_here(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _record(
        self, topic: str, member: Member, *, joined: bool, last: bool = False
    ) -> bool:
        """Tell the store, in order; dispatch the event when the topic gained or lost the member.

        Return whether it did (the member is new on the topic, or gone from it).
        """
        change = Change(joined, topic, member, last)
        change.future = asyncio.get_running_loop().create_future()
        self._changes.append(change)
        async with self._lock_here():
            # Whoever holds the lock records every change queued so far, in
            # order: a crowd joining costs a few round trips, not one each.
            if not change.future.done():
                await self._flush()
        return change.future.result()

    async def _flush(self) -> None:
        """Record the queued changes and announce those that changed a topic (lock held)."""
        changes, self._changes = self._changes, []
        if not changes:
            return
        try:
            results = await self.store.apply(self._hub.origin, changes)
        except Exception:
            logger.exception("Recording presence changes failed.")
            results = [False] * len(changes)
        for change, changed in zip(changes, results, strict=True):
            if changed:
                suffix = JOINED if change.joined else LEFT
                await self._announce(change.topic, change.member, suffix)
            if change.future is not None and not change.future.done():
                change.future.set_result(changed)

    async def _announce(self, topic: str, member: Member, suffix: str) -> None:
        event = Event(topic + suffix, {"topic": topic, "member": member})
        try:
            await self._hub.dispatcher.adispatch(event)
        except Exception:
            logger.exception("Dispatching %r failed.", event.name)

    def _start_heartbeat(self) -> None:
        if not isinstance(self.store, RedisStore):
            return  # one process: nobody else to tell, nobody to find dead
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while True:
            timeout = float(events_settings.PRESENCE_TIMEOUT)
            # A process is given up after 3/4 of the timeout without a
            # heartbeat, and found by the next heartbeat of another, at most
            # 1/8 later: its members are gone within the timeout, while a
            # live process whose loop is busy has six beats' worth of slack.
            await asyncio.sleep(timeout / 8)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("The presence heartbeat failed (%r); trying again.", exc)

    async def beat(self) -> None:
        """Send one heartbeat; dispatch ``left`` for the members of processes found dead."""
        store = self.store
        timeout = float(events_settings.PRESENCE_TIMEOUT)
        async with self._lock_here():
            await self._flush()
            revived, left = await store.heartbeat(self._hub.origin, timeout)
            for topic, member in left:
                await self._announce(topic, member, LEFT)
            if revived:
                # Another process took this one for dead (a long pause):
                # its members come back.
                self._changes[:0] = [
                    Change(True, topic, {"id": member_id, "info": state.members.get(member_id)})
                    for topic, state in list(self._topics.items())
                    for member_id in state.local
                ]
                await self._flush()

    async def stop(self) -> None:
        """Stop the heartbeat and close the store's connections (on the hub's loop)."""
        task, self._heartbeat = self._heartbeat, None
        if task is not None:
            task.cancel()
        if self._store is not None:
            await self._store.close()


_background: set[asyncio.Task[None]] = set()


async def apresence(topic: str) -> list[Member]:
    """Return the members present on ``topic``: a list of ``{"id", "info"}``.

    Members of every process, as the store shared through Redis has them
    (or this process, with another channel layer).
    """
    from ._hub import get_hub

    validate_topic(topic)
    hub = get_hub()
    if not hub.runner.alive:
        await hub.attach(receive=False)
    return await hub.runner.run(lambda: hub.presence.members(topic), _READ_TIMEOUT)


def presence(topic: str) -> list[Member]:
    """Return the members present on ``topic`` (the sync twin of :func:`apresence`).

    Not on an event loop's thread: use ``await apresence(topic)`` there.
    """
    from ._hub import get_hub
    from ._loop import running_loop

    validate_topic(topic)
    if running_loop() is not None:
        raise RuntimeError("presence() cannot run on an event loop; use await apresence().")
    hub = get_hub()
    if not hub.runner.alive:
        hub.start_thread(receive=False)
    future = hub.runner.submit(hub.presence.members(topic))
    if future is None:
        raise RuntimeError("The hub's event loop is not running.")
    return future.result(_READ_TIMEOUT)
