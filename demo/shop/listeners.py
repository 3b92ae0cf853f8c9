"""The events a request of this process causes, so that its answer can carry them.

The page that made a request does not get its events over its websocket
(to others): the views answer with their envelopes, collected here, and the
page applies them and marks them as its own ("this page") in its log.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from channels_events import Event, listen

_caused: ContextVar[list[dict[str, Any]] | None] = ContextVar("demo_shop_caused", default=None)


@contextmanager
def recording_events() -> Iterator[list[dict[str, Any]]]:
    """Yield a list of the envelopes of the order events dispatched in the block, in order."""
    envelopes: list[dict[str, Any]] = []
    token = _caused.set(envelopes)
    try:
        yield envelopes
    finally:
        _caused.reset(token)


# remote=False: an event from another process was not caused by this request.
@listen(r"shop::Order::(created|updated|deleted)", remote=False)
def record(event: Event) -> None:
    """Note the envelope of an order event dispatched inside ``recording_events()``."""
    envelopes = _caused.get()
    if envelopes is not None:
        envelopes.append(event.envelope)
