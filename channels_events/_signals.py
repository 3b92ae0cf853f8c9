"""Turn any Django signal into events."""

from __future__ import annotations

import datetime
import decimal
import logging
import uuid
from collections.abc import Callable, Collection, Mapping
from typing import Any

from django.db import models
from django.dispatch import Signal

from ._dispatcher import Dispatcher, get_dispatcher
from ._events import Event
from ._json import PRIMITIVE_TYPES, json_safe
from ._names import validate_name
from ._payloads import SecretNames, hides_pk, secret_names, without_secrets

__all__ = ["OMITTED", "plain_items", "plain_value", "signal_to_event"]

logger = logging.getLogger("channels_events")

SignalHook = Callable[..., "str | Event | None"]

#: What :func:`plain_value` returns for a value that is not plain data.
OMITTED: Any = object()


def plain_value(value: Any, secret: SecretNames | None = None) -> Any:
    """Return ``value`` made JSON-safe if it is plain data, else :data:`OMITTED`.

    Plain data is str, numbers, bools, None, dates and times, decimals, UUIDs
    and lists or dicts of those; a model instance counts as its pk (unless
    its primary key looks secret). Other objects (a request, a user) are
    not: their text form can carry secrets (a query string with a token).
    Keys that look secret are taken out of dicts at any depth.
    """
    if secret is None:
        secret = secret_names()
    if isinstance(value, models.Model):
        return OMITTED if hides_pk(type(value)) else json_safe(value.pk)
    if _is_plain(value):
        return without_secrets(json_safe(value), secret)
    return OMITTED


def plain_items(values: Mapping[str, Any], skip: Collection[str] = ()) -> dict[str, Any]:
    """Keep the items whose values are plain data and whose names do not look secret."""
    secret = secret_names()
    payload = {}
    for key, value in values.items():
        if key in skip or secret(key):
            continue
        found = plain_value(value, secret)
        if found is not OMITTED:
            payload[key] = found
    return payload


def _is_plain(value: Any) -> bool:
    if type(value) in PRIMITIVE_TYPES or isinstance(
        value, (datetime.date, datetime.time, datetime.timedelta, decimal.Decimal, uuid.UUID)
    ):
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def signal_to_event(
    signal: Signal,
    name: str | type[Event] | None = None,
    hook: SignalHook | None = None,
    sender: Any = None,
    *,
    dispatcher: Dispatcher | None = None,
) -> Callable[[], bool]:
    """Dispatch an event each time ``signal`` is sent (by ``sender``, if given).

    With ``name`` (an event name or an Event subclass), each send dispatches
    that event: a name gets the signal's keyword arguments, made JSON-safe,
    as its payload; an Event subclass is built from the arguments that match
    its fields. With ``hook``, ``hook(sender, **kwargs)`` decides: it returns a
    name, an Event, or None to dispatch nothing. A model ``instance`` argument
    travels as ``event.instance``, for in-process listeners only.

    Connecting the same signal, sender and name (or hook) again does nothing
    more. Return a function that disconnects it.
    """
    if not isinstance(signal, Signal):
        raise TypeError(f"signal_to_event() needs a django.dispatch.Signal, got {signal!r}.")
    if (name is None) == (hook is None):
        raise TypeError("signal_to_event() needs exactly one of name= and hook=.")
    if isinstance(name, str):
        validate_name(name)
    elif name is not None and not (
        isinstance(name, type) and issubclass(name, Event) and name._fixed_name
    ):
        raise TypeError(f"name must be an event name or an Event subclass with a name: {name!r}.")
    if hook is not None and not callable(hook):
        raise TypeError(f"hook must be callable, got {hook!r}.")

    def build(result: str | type[Event] | Event, kwargs: dict[str, Any]) -> Event:
        if isinstance(result, Event):
            return result
        if isinstance(result, type) and issubclass(result, Event):
            return result(**{f: kwargs[f] for f in result._fields if f in kwargs})
        if isinstance(result, str):
            return Event(result, plain_items(kwargs, skip=("signal", "instance")))
        raise TypeError(f"A signal hook must return an event name, an Event or None: {result!r}.")

    def receiver(sender: Any, **kwargs: Any) -> None:
        target = dispatcher or get_dispatcher()
        try:
            result = hook(sender, **kwargs) if hook is not None else name
            if result is None:
                return
            event = build(result, kwargs)
        except Exception:
            # Whoever sent the signal (a login, a request) must not fail
            # because its event could not be built.
            if target.strict:
                raise
            logger.exception("signal_to_event could not build an event for %r.", signal)
            return
        if event.instance is None and "instance" in kwargs:
            event.instance = kwargs["instance"]
        target.dispatch(event)

    uid = ("channels_events.signal_to_event", id(signal), id(sender), str(name), id(hook))
    signal.connect(receiver, sender=sender, weak=False, dispatch_uid=uid)

    def disconnect() -> bool:
        return signal.disconnect(sender=sender, dispatch_uid=uid)

    return disconnect
