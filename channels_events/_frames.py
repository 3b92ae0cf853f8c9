"""Websocket frame text: event frames made once per process, and the id a reply echoes.

The envelope of an event is encoded once (``Event.encoded``), and each
distinct list of matching subscription ids gives one frame text, shared by
every connection it goes to.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from ._events import Event
from ._filters import Filter
from ._json import encode, parse
from ._names import ClientPattern
from ._presence import is_presence_event
from .exceptions import EventTooLarge

__all__ = [
    "MAX_ID_LENGTH",
    "PEEK_LIMIT",
    "Subscription",
    "event_frame",
    "filter_matches",
    "is_message_id",
    "peek_reply_id",
    "reply_id",
    "single_frame",
    "subscription_matches",
]

logger = logging.getLogger("channels_events.consumers")

#: The longest id a client may give a message (PROTOCOL.md section 4).
MAX_ID_LENGTH = 64
#: The longest frame whose id a ``rate_limited`` answer looks for: refusing a
#: flood must cost less than serving it, so big frames are not parsed.
PEEK_LIMIT = 2048

#: One subscription of a connection: its id, its pattern and its filter (or None).
Subscription: TypeAlias = tuple[str, ClientPattern, Filter | None]


def is_message_id(value: Any) -> bool:
    """Return whether ``value`` is an id a client may give a message: a str of 1-64 characters."""
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH


def reply_id(message: Any) -> str | None:
    """Return the id that replies to ``message`` echo, if any.

    A request's ``id`` is echoed when it is a valid id (:func:`is_message_id`),
    except an ``emit``'s: its replies never carry a request id, so that
    ``emitted.id`` has one meaning, the new event's id, and an emit is
    answered by position instead.
    """
    if not isinstance(message, dict) or message.get("type") == "emit":
        return None
    sid = message.get("id")
    return sid if is_message_id(sid) else None


def peek_reply_id(text: str | None) -> str | None:
    """Return :func:`reply_id` of a frame not otherwise handled, if it is small JSON."""
    if text is None or len(text) > PEEK_LIMIT:
        return None
    try:
        return reply_id(parse(text))
    except (ValueError, RecursionError):
        return None


def subscription_matches(entry: Subscription, event: Event) -> bool:
    """Return whether ``event`` matches a subscription's pattern and, if it has one, its filter."""
    _sid, pattern, where = entry
    return pattern.matches(event.name) and (where is None or filter_matches(where, event))


def filter_matches(where: Filter, event: Event) -> bool:
    """Return whether the payload of ``event``, as it travels, meets ``where``."""
    try:
        payload = event.envelope["payload"]
    except Exception:
        # An event that cannot be encoded is never sent (event_frame below).
        return False
    return where.matches(payload)


def event_frame(event: Event, ids: tuple[str, ...]) -> str | None:
    """Return the ``event`` frame listing subscriptions ``ids``; None if it cannot be encoded.

    Connections whose matching subscription ids are the same (typically all
    of them) share one frame text per event. An event that cannot be
    encoded is logged once and never sent.
    """
    frames: dict[tuple[str, ...], str | None] | None = event.__dict__.get("_frames")
    if frames is None:
        frames = event.__dict__["_frames"] = {}
    try:
        return frames[ids]
    except KeyError:
        pass
    if is_presence_event(event.name):
        # Browsers see presence through ``join`` only, where the presence
        # policy decides, never through a subscription to the namespace.
        frames[ids] = None
        return None
    try:
        encoded = event.encoded
    except EventTooLarge as exc:
        # From another process with a larger limit: one line, not a traceback.
        if "_unencodable" not in event.__dict__:
            event.__dict__["_unencodable"] = True
            logger.error("Event %r not sent to websockets: %s", event.name, exc)
        frames[ids] = None
        return None
    except Exception:
        # A payload that cannot be encoded costs only its own event.
        if "_unencodable" not in event.__dict__:
            event.__dict__["_unencodable"] = True
            logger.exception("Event %r could not be encoded; not sent.", event.name)
        frames[ids] = None
        return None
    text = frames[ids] = (
        '{"type":"event","subscriptions":' + encode(list(ids)) + ',"event":' + encoded + "}"
    )
    return text


def single_frame(event: Event, candidate: Subscription) -> str | None:
    """Return the frame for a connection with one subscription in the event's namespace.

    None when the subscription does not match, or when the event cannot be
    encoded. The verdict is kept on the event for every
    connection with the same subscription (id, pattern and filter: filters
    with the same conditions are equal).
    """
    verdicts: dict[Subscription, str | None] | None = event.__dict__.get("_single")
    if verdicts is None:
        verdicts = event.__dict__["_single"] = {}
    try:
        return verdicts[candidate]
    except KeyError:
        pass
    text = event_frame(event, (candidate[0],)) if subscription_matches(candidate, event) else None
    verdicts[candidate] = text
    return text
