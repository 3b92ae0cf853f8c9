"""The events a request of this process causes, so that its answer can name them.

An envelope does not say which process dispatched it. The dashboard's event
log marks the events its own requests caused ("this page"), from the ids the
views answer with, collected here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from channels_events import Event, listen

_caused: ContextVar[list[str] | None] = ContextVar("demo_shop_caused", default=None)


@contextmanager
def recording_events() -> Iterator[list[str]]:
    """Yield a list of the ids of the order events dispatched in the block, in order."""
    ids: list[str] = []
    token = _caused.set(ids)
    try:
        yield ids
    finally:
        _caused.reset(token)


# remote=False: an event from another process was not caused by this request.
@listen(r"shop::Order::(created|updated|deleted)", remote=False)
def record(event: Event) -> None:
    """Note the id of an order event dispatched inside ``recording_events()``."""
    ids = _caused.get()
    if ids is not None:
        ids.append(event.id)
