"""Which channel layer the demo runs on: chosen in settings, told by the page and shop_simulate.

``DEMO_CHANNEL_LAYER`` chooses, when a process starts:

- ``auto`` (the default): Redis at ``REDIS_URL`` if a Redis server answers
  there, the in-memory layer otherwise;
- ``redis``: Redis at ``REDIS_URL``, whether or not it answers yet;
- ``memory``: the in-memory layer.

``REDIS_URL`` defaults to ``redis://127.0.0.1:6379/0``. On the in-memory
layer a process hears only its own events: changes made by ``shop_simulate``
or any other process never reach the server's pages.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
CHOICES = ("auto", "redis", "memory")
# Long enough for a Redis on this machine or the local network, short enough
# not to hold up every manage.py command when none runs.
PROBE_TIMEOUT = 0.5


def shown_url(url: str) -> str:
    """Return ``url`` without its user name and password, fit to show on a page."""
    parts = urlsplit(url)
    if parts.hostname is None:
        return f"{parts.scheme}://{parts.path}"  # unix:///path/to/redis.sock
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def redis_problem(url: str) -> str | None:
    """Return why Redis at ``url`` cannot be used now, or None if it answers a PING."""
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=PROBE_TIMEOUT, socket_timeout=PROBE_TIMEOUT
        )
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as exc:
        return f"no Redis answered at {shown_url(url)}: {str(exc).rstrip('.')}"
    return None


@dataclass(frozen=True)
class LayerChoice:
    """The layer settings chose (``redis`` or ``memory``), why, and how to get Redis if need be."""

    kind: str
    redis_url: str
    reason: str
    fix: str = ""


def choose(environ: Mapping[str, str]) -> LayerChoice:
    """Choose the layer from ``DEMO_CHANNEL_LAYER`` and ``REDIS_URL`` in ``environ``."""
    wanted = environ.get("DEMO_CHANNEL_LAYER", "").strip().lower() or "auto"
    url = environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    shown = shown_url(url)
    if wanted not in CHOICES:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"DEMO_CHANNEL_LAYER must be one of {', '.join(CHOICES)}, got {wanted!r}."
        )
    if wanted == "redis":
        return LayerChoice("redis", url, "DEMO_CHANNEL_LAYER=redis")
    if wanted == "memory":
        fix = (
            f"Unset DEMO_CHANNEL_LAYER, start Redis at {shown} (redis-server), "
            "then restart the demo server."
        )
        return LayerChoice("memory", url, "DEMO_CHANNEL_LAYER=memory", fix)
    if importlib.util.find_spec("channels_redis") is None:
        fix = "Install it (pip install -e '.[demo]'), start Redis, then restart the demo server."
        return LayerChoice("memory", url, "channels-redis is not installed", fix)
    problem = redis_problem(url)
    if problem is None:
        return LayerChoice("redis", url, f"Redis answered at {shown}")
    fix = (
        f"Start Redis at {shown} (redis-server), or point REDIS_URL at yours, then "
        "restart the demo server: it uses Redis whenever one answers when it starts "
        "(DEMO_CHANNEL_LAYER=redis insists on it)."
    )
    return LayerChoice("memory", url, problem, fix)


@dataclass(frozen=True)
class Layer:
    """The layer the hub of this process uses, as the page and shop_simulate tell it."""

    backend: str
    in_memory: bool
    address: str
    choice: LayerChoice | None

    @property
    def label(self) -> str:
        """Return a short name: ``in-memory``, the Redis URL (no password), or the backend."""
        if self.in_memory:
            return "in-memory"
        return self.address or self.backend


def current() -> Layer:
    """Return the layer of this process's hub, from the settings in force."""
    from channels.layers import InMemoryChannelLayer
    from django.conf import settings
    from django.utils.module_loading import import_string

    alias = settings.CHANNELS_EVENTS.get("CHANNEL_LAYER", "default")
    config: dict[str, Any] = settings.CHANNEL_LAYERS[alias]
    backend = import_string(config["BACKEND"])
    hosts = config.get("CONFIG", {}).get("hosts") or []
    address = shown_url(hosts[0]) if hosts and isinstance(hosts[0], str) else ""
    return Layer(
        backend=config["BACKEND"],
        in_memory=issubclass(backend, InMemoryChannelLayer),
        address=address,
        choice=getattr(settings, "DEMO_LAYER_CHOICE", None),
    )
