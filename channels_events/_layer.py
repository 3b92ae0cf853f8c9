"""The channel layer the hub uses, the history beside it, and group names, as settings say.

:class:`LayerLink` resolves the ``CHANNEL_LAYER`` alias (or the hub's own)
to a layer and its history on first use, and again after settings change.
:func:`redis_hosts` reads which Redis servers a ``channels_redis`` layer's
settings name, for messages that must say where a layer is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ._conf import events_settings, on_change
from ._history import History, history_for

__all__ = [
    "BATCH_TYPE",
    "EVENT_TYPE",
    "SKIP_KEY",
    "LayerLink",
    "RedisHost",
    "group_name",
    "redis_hosts",
]

#: The channel-layer message types of PROTOCOL.md section 3.
EVENT_TYPE = "channels_events.event"
BATCH_TYPE = "channels_events.events"
#: The key of a message that maps event ids to the connections they skip (``to_others``).
SKIP_KEY = "skip"


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
            history_for(
                alias, int(events_settings.HISTORY_SIZE), int(events_settings.HISTORY_BYTES)
            )
            if self._layer
            else None
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


# What channels_redis connects to when a layer names no hosts.
_DEFAULT_HOST = ("localhost", 6379)


@dataclass(frozen=True)
class RedisHost:
    """One Redis server of a ``channels_redis`` layer, as the layer's settings give it."""

    #: Where, with any credentials left out: ``host:port``, ``unix:/path`` or the sentinels.
    address: str
    #: Whether the host sets a ``socket_timeout``, in its options or in its URL.
    timeout_given: bool
    #: That ``socket_timeout`` in seconds; None for no time-out.
    socket_timeout: float | None


def redis_hosts(alias: str) -> list[RedisHost] | None:
    """Return the Redis servers of ``CHANNEL_LAYERS[alias]``; None if it is no channels_redis layer.

    Hosts are read as channels_redis reads them: a URL, a ``(host, port)``
    pair, or a dict of connection options (``address``, ``host`` and
    ``port``, or ``sentinels`` and ``master_name``).
    """
    from django.conf import settings

    layers = getattr(settings, "CHANNEL_LAYERS", None) or {}
    config = layers.get(alias) if isinstance(layers, dict) else None
    if not isinstance(config, dict) or not str(config.get("BACKEND", "")).startswith(
        "channels_redis."
    ):
        return None
    options = config.get("CONFIG") or {}
    hosts = options.get("hosts") if isinstance(options, dict) else None
    if not hosts:
        hosts = [_DEFAULT_HOST]
    elif isinstance(hosts, (str, bytes)):
        hosts = [hosts]
    return [_redis_host(entry) for entry in hosts]


def _redis_host(entry: Any) -> RedisHost:
    if isinstance(entry, dict):
        options = dict(entry)
    elif isinstance(entry, (tuple, list)) and len(entry) >= 2:
        options = {"host": entry[0], "port": entry[1]}
    else:
        options = {"address": entry}
    timeout_given = "socket_timeout" in options
    timeout = options.get("socket_timeout")
    address = options.get("address")
    if address is not None:
        if isinstance(address, bytes):
            address = address.decode(errors="replace")
        url = urlsplit(str(address))
        where = f"unix:{url.path}" if url.scheme == "unix" else _netloc(url.netloc)
        # redis-py lets the URL's query override the options.
        query = parse_qs(url.query)
        if "socket_timeout" in query:
            timeout_given = True
            timeout = query["socket_timeout"][-1]
    elif "sentinels" in options:
        sentinels = ", ".join(
            f"{s[0]}:{s[1]}" if isinstance(s, (tuple, list)) and len(s) >= 2 else str(s)
            for s in options["sentinels"] or []
        )
        where = f"sentinels {sentinels} (master {options.get('master_name')!r})"
    else:
        where = f"{options.get('host', _DEFAULT_HOST[0])}:{options.get('port', _DEFAULT_HOST[1])}"
    return RedisHost(where, timeout_given, _seconds(timeout))


def _netloc(netloc: str) -> str:
    """Return ``host:port`` of a URL's network location, without user and password."""
    hostport = netloc.rpartition("@")[2] or _DEFAULT_HOST[0]
    if hostport.endswith("]") or ":" not in hostport:  # no port: [::1] or a bare name
        return f"{hostport}:{_DEFAULT_HOST[1]}"
    return hostport


def _seconds(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
