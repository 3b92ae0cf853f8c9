"""The connection policy: who may subscribe to what, receive which event, emit which name.

Three settings name the policy functions by dotted path; each may be a plain
function or an ``async def``:

- ``SUBSCRIBE_POLICY(scope, namespace, pattern) -> bool | dict``: may this
  connection subscribe to ``pattern`` (whose namespace is ``namespace``)? A
  true value allows it and a false one refuses it, as before; a dict allows
  it under a filter of the policy's own, in the syntax of a client's
  ``where`` (``{"fields.owner": user.pk}``), which every event must meet on
  top of the client's ``where`` (``_filters.py``): the client can narrow it,
  never widen it. An empty dict allows with no filter; a malformed one is
  an error, logged and taken as a refusal.
- ``RECEIVE_POLICY(scope, event) -> bool``: may this connection receive this
  event (a row-level filter, applied per connection and per event)?
- ``EMIT_POLICY(scope, name, payload) -> bool``: may this connection emit it?
- ``PRESENCE_POLICY(scope, topic) -> {"id": str, "info": JSON} | None``: may
  this connection join ``topic``, and as which member?

With no subscribe, emit or presence policy, nothing is allowed: the stream is closed by
default (PROTOCOL.md section 7). With no receive policy, a connection
receives every event its accepted subscriptions match. Sync policies run on the event loop, so they
must not block (no database queries); use ``async def`` and
``database_sync_to_async`` for those.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from ._conf import events_settings, on_change
from ._events import Event
from ._filters import Filter, parse_filter

__all__ = ["Policy", "get_policy"]

Scope = dict[str, Any]


def _load(path: str | None, setting: str) -> Callable[..., Any] | None:
    if path is None:
        return None
    if callable(path):
        return path
    try:
        func = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(
            f"CHANNELS_EVENTS[{setting!r}] = {path!r} cannot be imported: {exc}"
        ) from exc
    if not callable(func):
        raise ImproperlyConfigured(f"CHANNELS_EVENTS[{setting!r}] = {path!r} is not callable.")
    return func  # type: ignore[no-any-return]


async def _ask(func: Callable[..., Any], *args: Any) -> bool:
    if iscoroutinefunction(func):
        return bool(await func(*args))
    return bool(func(*args))


class Policy:
    """Hold the policy functions named in settings, imported once."""

    def __init__(self) -> None:
        self.subscribe = _load(events_settings.SUBSCRIBE_POLICY, "SUBSCRIBE_POLICY")
        self.receive = _load(events_settings.RECEIVE_POLICY, "RECEIVE_POLICY")
        self.emit = _load(events_settings.EMIT_POLICY, "EMIT_POLICY")
        self.presence = _load(events_settings.PRESENCE_POLICY, "PRESENCE_POLICY")
        self.receive_is_async = self.receive is not None and iscoroutinefunction(self.receive)

    async def may_subscribe(self, scope: Scope, namespace: str, pattern: str) -> bool:
        """Return whether ``scope`` may subscribe to ``pattern`` in ``namespace``."""
        return await self.subscribe_filter(scope, namespace, pattern) is not None

    async def subscribe_filter(self, scope: Scope, namespace: str, pattern: str) -> Filter | None:
        """Return the filter the subscribe policy sets (empty for none), or None if it refuses.

        Raise InvalidFilter when the policy returns a malformed filter.
        """
        func = self.subscribe
        if func is None:
            return None
        answer = func(scope, namespace, pattern)
        if iscoroutinefunction(func):
            answer = await answer
        if isinstance(answer, Mapping):
            return parse_filter(answer)
        return Filter({}) if answer else None

    async def may_emit(self, scope: Scope, name: str, payload: dict[str, Any]) -> bool:
        """Return whether ``scope`` may emit an event named ``name``."""
        return self.emit is not None and await _ask(self.emit, scope, name, payload)

    async def member(self, scope: Scope, topic: str) -> Any:
        """Return the presence policy's answer for ``scope`` joining ``topic`` (None: refused)."""
        if self.presence is None:
            return None
        if iscoroutinefunction(self.presence):
            return await self.presence(scope, topic)
        return self.presence(scope, topic)

    def may_receive_now(self, scope: Scope, event: Event) -> bool | Awaitable[bool]:
        """Return the sync receive verdict, or an awaitable when the policy is async."""
        if self.receive is None:
            return True
        if self.receive_is_async:
            return _ask(self.receive, scope, event)
        return bool(self.receive(scope, event))


_policy: Policy | None = None


def get_policy() -> Policy:
    """Return the policy of the current settings, loading it on first use."""
    global _policy
    policy = _policy
    if policy is None:
        policy = _policy = Policy()
    return policy


def _forget_policy() -> None:
    # A connection keeps the policy it started with; new ones load the new settings.
    global _policy
    _policy = None


on_change(_forget_policy)
