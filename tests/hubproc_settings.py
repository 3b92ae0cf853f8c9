"""Django settings for the processes that ``tests/hubproc.py`` runs.

The test suite's settings, with the channel layer, the database and a few
``CHANNELS_EVENTS`` keys taken from the environment:

- ``CE_HUB_LAYER``: ``core`` (``RedisChannelLayer``) or ``pubsub``
  (``RedisPubSubChannelLayer``);
- ``CE_HUB_REDIS_URL``: the Redis server; ``CE_HUB_PREFIX``: the layer's key
  prefix, unique per test so that concurrent tests never share groups;
- ``CE_HUB_DB``: path of a SQLite file shared by the processes of one test;
- ``CE_HUB_LOCAL_NAMESPACES``: comma-separated ``LOCAL_NAMESPACES``;
- ``CE_HUB_FLUSH_TIMEOUT``: ``FLUSH_TIMEOUT`` in seconds.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tests.settings import *  # noqa: F403
from tests.settings import CHANNELS_EVENTS as _BASE_EVENTS

LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}

_layer = os.environ.get("CE_HUB_LAYER", "core")
if _layer not in LAYER_BACKENDS:
    raise ImproperlyConfigured(
        f"CE_HUB_LAYER must be one of {sorted(LAYER_BACKENDS)}, got {_layer!r}"
    )

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYER_BACKENDS[_layer],
        "CONFIG": {
            "hosts": [os.environ.get("CE_HUB_REDIS_URL", "redis://127.0.0.1:6379/0")],
            "prefix": os.environ.get("CE_HUB_PREFIX", "cetest-hubproc"),
        },
    }
}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CE_HUB_DB") or ":memory:",
    }
}

CHANNELS_EVENTS: dict[str, Any] = dict(_BASE_EVENTS)
_local = os.environ.get("CE_HUB_LOCAL_NAMESPACES", "")
if _local:
    CHANNELS_EVENTS["LOCAL_NAMESPACES"] = [ns for ns in _local.split(",") if ns]
if os.environ.get("CE_HUB_FLUSH_TIMEOUT"):
    CHANNELS_EVENTS["FLUSH_TIMEOUT"] = float(os.environ["CE_HUB_FLUSH_TIMEOUT"])
