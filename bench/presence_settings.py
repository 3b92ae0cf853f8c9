"""Django settings for the daphne processes that ``bench/presence.py`` starts.

``bench.fanout_settings`` (the run's Redis and key prefix), with a presence
policy that admits ``?member=<id>`` connections, and ``PRESENCE_TIMEOUT`` from
``PRESENCE_BENCH_TIMEOUT``.
"""

from __future__ import annotations

import os

from bench.fanout_settings import *  # noqa: F403
from bench.fanout_settings import CHANNELS_EVENTS as _FANOUT_EVENTS

CHANNELS_EVENTS = dict(
    _FANOUT_EVENTS,
    PRESENCE_POLICY="bench.presence.member",
    PRESENCE_TIMEOUT=float(os.environ.get("PRESENCE_BENCH_TIMEOUT") or 8),
)
