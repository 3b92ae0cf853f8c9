"""To others: events that skip the websocket connection whose request caused them.

A browser's page changes something over HTTP and already shows the change;
the event that the change dispatches should reach every other connection
(other tabs of the same user included), not that one. The JS client sends
its connection id (``welcome.connection``) in the :data:`HEADER` of its
requests; :class:`ToOthersMiddleware` reads it, and every event published
while the request is handled carries that id in ``skip_connections``. The
ids travel with the event between processes, beside its envelope, and the
connection with that id, on whichever process, does not get the frame.
Code that knows a connection id does the same with :func:`to_others`.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from collections.abc import Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from .exceptions import InvalidConnectionId

__all__ = [
    "HEADER",
    "ToOthersMiddleware",
    "is_connection_id",
    "skipped_connections",
    "to_others",
]

#: The HTTP header that names the connection a request comes from.
HEADER = "X-Channels-Events-Connection"
_META_KEY = "HTTP_" + HEADER.upper().replace("-", "_")
_CONNECTION_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

_skipped: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "channels_events_skipped", default=frozenset()
)


def is_connection_id(value: object) -> bool:
    """Return whether ``value`` looks like a connection id: 1-64 of ``[A-Za-z0-9_.-]``."""
    return isinstance(value, str) and _CONNECTION_ID.fullmatch(value) is not None


def skipped_connections() -> frozenset[str]:
    """Return the connection ids that events published now must skip."""
    return _skipped.get()


@contextlib.contextmanager
def to_others(connection_id: str) -> Iterator[None]:
    """Make events dispatched inside the block skip the connection ``connection_id``.

    The id is the ``connection`` of the connection's ``welcome`` frame.
    Blocks nest: events skip every connection named by the blocks around
    them. Model events published on commit skip the connections named when
    they were dispatched. Raises InvalidConnectionId for a malformed id.
    """
    if not is_connection_id(connection_id):
        raise InvalidConnectionId(
            f"{connection_id!r} is not a connection id; expected 1-64 letters, digits, "
            "'_', '.' or '-' (the 'connection' of a welcome frame)."
        )
    token = _skipped.set(_skipped.get() | {connection_id})
    try:
        yield
    finally:
        _skipped.reset(token)


class ToOthersMiddleware:
    """Django middleware: events dispatched while handling a request skip its connection.

    Add ``"channels_events.ToOthersMiddleware"`` to ``MIDDLEWARE``. A request
    whose ``X-Channels-Events-Connection`` header holds a connection id
    (the JS client's ``events.fetch`` sends it) is handled inside
    :func:`to_others`; a missing or malformed header changes nothing.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        """Handle ``request``, skipping the connection it names."""
        if self.is_async:
            return self._acall(request)
        with _skipping(request):
            return self.get_response(request)

    async def _acall(self, request: Any) -> Any:
        # Sync views run in a thread with a copy of this context: the
        # events they dispatch see the id too.
        with _skipping(request):
            return await self.get_response(request)


@contextlib.contextmanager
def _skipping(request: Any) -> Iterator[None]:
    value = request.META.get(_META_KEY)
    if not is_connection_id(value):
        yield
        return
    with to_others(value):
        yield
