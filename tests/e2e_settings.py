"""Django settings for the daphne processes of ``tests/test_e2e.py``.

The demo project's settings (routing, ``ALLOWED_HOSTS``, subscribe policy)
with the database, the channel layer and the observed test model taken from
the environment:

- ``CE_E2E_DB``: path of a SQLite file shared by the processes of one test;
- ``CE_E2E_REDIS_URL``: the Redis server of the ``channels_redis`` core layer;
- ``CE_E2E_PREFIX``: the layer's key prefix, unique per test;
- ``CE_E2E_PLAIN_HOSTS``: ``1`` to give the layer the bare URL, exactly as
  ``demo/settings.py`` does, instead of a host with a ``socket_timeout``;
- ``CE_E2E_PRESENCE_TIMEOUT``: ``PRESENCE_TIMEOUT`` in seconds (30 unless given);
- ``CE_E2E_HUB_LAYER``: ``pubsub`` to give the hub a layer of its own, a
  ``RedisPubSubChannelLayer`` under the alias ``events``, as the demo does
  (consumers keep the core layer); otherwise the hub uses the core layer;
- ``CE_E2E_BUFFER_BYTES``: ``BUFFER_BYTES``, when a test needs another.

Unlike the demo, clients may ``emit`` events of namespace ``shop``, join
presence topics of ``shop`` as ``?member=<id>`` says, and ``POST /e2e/poke/``
dispatches ``shop::poked`` (for to-others).

redis-py 8 gives connections a 5 s ``socket_timeout`` by default, the same as
the 5 s ``BZPOPMIN`` that ``channels_redis`` blocks in when it receives, so
with the bare URL an idle receive fails with ``redis.exceptions.TimeoutError``
(see ``test_idle_websocket_survives_demo_layer_config`` in test_e2e.py). The
host below allows reads longer than that block.
"""

from __future__ import annotations

import os
from typing import Any

from demo.settings import *  # noqa: F403
from demo.settings import CHANNELS_EVENTS as _DEMO_EVENTS
from demo.settings import INSTALLED_APPS as _DEMO_APPS

# CE_E2E_DEBUG=1: serve static files (the JS client), as the demo does in development.
DEBUG = os.environ.get("CE_E2E_DEBUG") == "1"

INSTALLED_APPS = [*_DEMO_APPS, "tests.testapp", "tests.e2e_app"]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CE_E2E_DB") or ":memory:",
    }
}

_REDIS_URL = os.environ.get("CE_E2E_REDIS_URL", "redis://127.0.0.1:6379/0")
_HOST: str | dict[str, Any]
if os.environ.get("CE_E2E_PLAIN_HOSTS") == "1":
    _HOST = _REDIS_URL
else:
    _HOST = {"address": _REDIS_URL, "socket_timeout": 30}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [_HOST],
            "prefix": os.environ.get("CE_E2E_PREFIX", "cetest-e2e"),
        },
    }
}

# Emits in shop let a test make events from a websocket, as fast as a browser can.
CHANNELS_EVENTS = dict(
    _DEMO_EVENTS,
    CHANNEL_LAYER="default",
    EMIT_POLICY="tests.e2e_app.policy.can_emit",
    PRESENCE_POLICY="tests.e2e_app.policy.member",
    PRESENCE_TIMEOUT=float(os.environ.get("CE_E2E_PRESENCE_TIMEOUT") or 30),
)

if os.environ.get("CE_E2E_BUFFER_BYTES"):
    CHANNELS_EVENTS["BUFFER_BYTES"] = int(os.environ["CE_E2E_BUFFER_BYTES"])

ROOT_URLCONF = "tests.e2e_app.urls"

if os.environ.get("CE_E2E_HUB_LAYER") == "pubsub":
    CHANNEL_LAYERS["events"] = {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [_REDIS_URL], "prefix": os.environ.get("CE_E2E_PREFIX", "cetest-e2e")},
    }
    CHANNELS_EVENTS["CHANNEL_LAYER"] = "events"

# CE_E2E_TRACE_FILE: record this process's OpenTelemetry spans there (tests/tracefile.py).
if os.environ.get("CE_E2E_TRACE_FILE"):
    from tests.tracefile import install as _install_tracing

    _install_tracing(os.environ["CE_E2E_TRACE_FILE"])
