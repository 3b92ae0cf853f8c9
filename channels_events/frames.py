"""Websocket frames: JSON in and out, each event encoded once per process.

The envelope of an event is encoded once, and each distinct list of matching
subscription ids gives one frame text, shared by every connection it goes to.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from .conf import events_settings
from .events import Event
from .names import ClientPattern
from .outbox import envelope_of

__all__ = ["encode", "encoded_envelope", "event_frame", "parse", "peek_id", "single_frame"]

logger = logging.getLogger("channels_events.consumers")

# ASCII-only output is valid UTF-8 whatever the strings hold (even lone
# surrogates a client sent as escapes); NaN and infinities are not JSON.
_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"))
#: Encode a JSON frame (ASCII only, no NaN).
encode = _JSON.encode


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse(text: str) -> Any:
    """Parse a client frame; NaN and infinities are refused, as JSON has none."""
    return json.loads(text, parse_constant=_reject_constant)


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
            + encoded_envelope(event)
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


def encoded_envelope(event: Event) -> str:
    """Return the event's envelope as JSON, encoded once per event per process."""
    encoded: str | None = event.__dict__.get("_encoded")
    if encoded is None:
        encoded = event.__dict__["_encoded"] = encode(envelope_of(event))
    return encoded
