"""Websocket frames: JSON in and out, each event encoded once per process.

The envelope of an event is encoded once, and each distinct list of matching
subscription ids gives one frame text, shared by every connection it goes to.
"""

from __future__ import annotations

import logging

from ._conf import events_settings
from ._events import Event
from ._json import encode, parse
from ._names import ClientPattern

__all__ = ["event_frame", "peek_id", "single_frame"]

logger = logging.getLogger("channels_events.consumers")


def peek_id(text: str | None) -> str | None:
    """Return the ``id`` of a frame, if it is a small JSON object that has a string one."""
    if text is None or len(text) > events_settings.MAX_FRAME_BYTES:
        return None
    try:
        message = parse(text)
    except (ValueError, RecursionError):
        return None
    sid = message.get("id") if isinstance(message, dict) else None
    return sid if isinstance(sid, str) else None


def event_frame(event: Event, ids: tuple[str, ...]) -> str:
    # Connections whose matching subscription ids are the same (typically
    # all of them) share one frame per event.
    frames: dict[tuple[str, ...], str] | None = event.__dict__.get("_frames")
    if frames is None:
        frames = event.__dict__["_frames"] = {}
    text = frames.get(ids)
    if text is None:
        text = frames[ids] = (
            '{"type":"event","subscriptions":'
            + encode(list(ids))
            + ',"event":'
            + event.encoded
            + "}"
        )
    return text


def single_frame(event: Event, candidate: tuple[str, ClientPattern]) -> str | None:
    """Return the frame for a connection with one subscription in the event's namespace.

    None when the subscription does not match, or when the event cannot be
    encoded (logged, and remembered for this subscription).
    """
    verdicts: dict[tuple[str, ClientPattern], str | None] | None = event.__dict__.get("_single")
    if verdicts is None:
        verdicts = event.__dict__["_single"] = {}
    try:
        return verdicts[candidate]
    except KeyError:
        pass
    sid, pattern = candidate
    text = None
    if pattern.matches(event.name):
        try:
            text = event_frame(event, (sid,))
        except Exception:
            logger.exception("Event %r could not be encoded; not sent.", event.name)
    verdicts[candidate] = text
    return text
