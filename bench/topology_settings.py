"""Settings for the demo's processes in a ``bench/topology.py`` topology.

The demo's own settings, with the channel layers ``bench/topology.py`` chose,
from the environment:

- ``TOPOLOGY_HOSTS``: the ``hosts`` list of both channel layers, as JSON: one
  Sentinel entry (``{"master_name": ..., "sentinels": [[host, port], ...]}``)
  or several Redis URLs (a sharded layer);
- ``TOPOLOGY_PREFIX``: the layers' key prefix;
- ``TOPOLOGY_HISTORY``: the history size, events per namespace (1000 unless set).
"""

from __future__ import annotations

import json
import os
from typing import Any

# The demo's settings probe REDIS_URL unless told which layer to take;
# everything they say about the layer is replaced below.
os.environ.setdefault("DEMO_CHANNEL_LAYER", "memory")

from demo.settings import *  # noqa: F403
from demo.settings import CHANNELS_EVENTS as DEMO_CHANNELS_EVENTS

DEBUG = False

_HOSTS: list[Any] = json.loads(os.environ["TOPOLOGY_HOSTS"])
_CONFIG = {"hosts": _HOSTS, "prefix": os.environ.get("TOPOLOGY_PREFIX", "topology")}
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": _CONFIG},
    "events": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": _CONFIG},
}

CHANNELS_EVENTS = {
    **DEMO_CHANNELS_EVENTS,
    "CHANNEL_LAYER": "events",
    "HISTORY_SIZE": int(os.environ.get("TOPOLOGY_HISTORY", "1000")),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
