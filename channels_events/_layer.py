"""The channel layer the hub uses, the history beside it, and group names, as settings say.

:class:`LayerLink` resolves the ``CHANNEL_LAYER`` alias (or the hub's own)
to a layer and its history on first use, and again after settings change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._conf import events_settings, on_change
from ._history import History, history_for

__all__ = ["BATCH_TYPE", "EVENT_TYPE", "LayerLink", "group_name"]

#: The channel-layer message types of PROTOCOL.md section 3.
EVENT_TYPE = "channels_events.event"
BATCH_TYPE = "channels_events.events"


def group_name(namespace: str) -> str:
    """Return the channel-layer group of a namespace."""
    return f"{events_settings.GROUP_PREFIX}.{namespace}"


def _keep(history: History) -> None:
    """Do nothing with a replaced history (see :meth:`LayerLink.abandon`)."""


class LayerLink:
    """Hold the hub's channel layer and history; let go of them when settings change.

    ``on_replaced(history)`` is called with a history that settings replaced,
    so its owner can close its connections on the loop that opened them.
    """

    def __init__(self, alias: str | None, on_replaced: Callable[[History], None]) -> None:
        self._alias = alias
        self._on_replaced = on_replaced
        self._resolved = False
        self._layer: Any = None
        self._history: History | None = None
        on_change(self.reset)

    @property
    def alias(self) -> str | None:
        """Return the alias in use: the hub's own, else the ``CHANNEL_LAYER`` setting."""
        return self._alias or events_settings.CHANNEL_LAYER

    def _resolve(self) -> None:
        from channels.layers import get_channel_layer

        alias = self.alias
        self._layer = get_channel_layer(alias) if alias else None
        self._history = (
            history_for(alias, int(events_settings.HISTORY_SIZE)) if self._layer else None
        )
        self._resolved = True

    @property
    def layer(self) -> Any:
        """Return the channel layer, or None when publication is off."""
        if not self._resolved:
            self._resolve()
        return self._layer

    @property
    def history(self) -> History | None:
        """Return where published events are kept for catching up, or None."""
        if not self._resolved:
            self._resolve()
        return self._history

    @property
    def known_off(self) -> bool:
        """Return whether the layer was resolved and there is none (no call made)."""
        return self._resolved and self._layer is None

    def abandon(self) -> History | None:
        """Stop following settings and return the history, which the caller must keep.

        A forked child abandons its parent's link: closing the parent's
        connections from the child would break them for the parent.
        """
        self._on_replaced = _keep
        return self._history

    def reset(self) -> None:
        """Forget the layer and history; the next use resolves them again."""
        replaced = self._history
        self._resolved = False
        self._layer = None
        self._history = None
        if replaced is not None:
            self._on_replaced(replaced)
