"""Django settings for the processes that ``bench/fanout.py`` starts.

The daphne servers and the publisher share them. ``bench/fanout.py`` sets:

- ``FANOUT_REDIS_URL``: the Redis server and database of the run;
- ``FANOUT_PREFIX``: the channel layer's key prefix, unique to the run; the
  floor server's pub/sub channel is ``<prefix>:floor``;
- ``FANOUT_LAYER``: ``core`` (``RedisChannelLayer``, the default) or
  ``pubsub`` (``RedisPubSubChannelLayer``).
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "channels-events-fanout-bench"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "channels",
    "channels_events",
]

DATABASES: dict[str, dict[str, Any]] = {}

FANOUT_REDIS_URL = os.environ.get("FANOUT_REDIS_URL", "redis://127.0.0.1:6379/4")
FANOUT_PREFIX = os.environ.get("FANOUT_PREFIX", "fanout")
FANOUT_FLOOR_CHANNEL = f"{FANOUT_PREFIX}:floor"

LAYER_BACKENDS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": LAYER_BACKENDS[os.environ.get("FANOUT_LAYER", "core")],
        "CONFIG": {"hosts": [FANOUT_REDIS_URL], "prefix": FANOUT_PREFIX},
    }
}

CHANNELS_EVENTS: dict[str, Any] = {
    # Every connection may subscribe to namespace "bench" and nothing else.
    "SUBSCRIBE_POLICY": "bench.fanout_app.may_subscribe",
    # FANOUT_METRICS=off: the channels_events_nometrics server of --metrics both.
    "METRICS": os.environ.get("FANOUT_METRICS", "on") != "off",
    # With metrics on, the operations page's stats namespace is set up too,
    # with nobody watching: what a closed page costs is in the same figure.
    "OPS_NAMESPACE": "ops" if os.environ.get("FANOUT_METRICS", "on") != "off" else None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
