"""Django settings for the processes of ``tests/test_tasks.py``: a dispatcher and its workers.

The test suite's settings with the database and the Tasks backend shared by
the processes of one test:

- ``CE_TASKS_DB``: ``sqlite:<path of a file>`` or ``postgres:<database name>``
  (127.0.0.1:5432, user ``postgres``);
- ``CE_TASKS_LOG``: the file task listeners append what they saw to, one
  JSON object a line (``tests/tasks_listeners.py``);
- ``CE_TASKS_RELEASE``: a file whose appearance lets the slow listener finish;
- ``CE_TASKS_TRACE_FILE`` (optional): record the process's OpenTelemetry
  spans there (``tests/tracefile.py``).

The Tasks backend is the ``django-tasks-db`` database backend, with queues
``default`` and ``slow``; the channel layer is off (events stay in the
process). The ``channels_events`` logger writes to stderr.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from tests.settings import *  # noqa: F403
from tests.settings import INSTALLED_APPS as _BASE_APPS

_kind, _, _name = os.environ.get("CE_TASKS_DB", "").partition(":")
if _kind == "sqlite" and _name:
    DATABASES: dict[str, dict[str, Any]] = {
        # A busy worker holds SQLite's lock for a moment: wait for it.
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _name,
            "OPTIONS": {"timeout": 30},
        }
    }
elif _kind == "postgres" and _name:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": _name,
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
else:
    raise ImproperlyConfigured(
        "CE_TASKS_DB must be 'sqlite:<path>' or 'postgres:<database>', got "
        f"{os.environ.get('CE_TASKS_DB')!r}"
    )

INSTALLED_APPS = [*_BASE_APPS, "tests.tasks_app"]

TASKS = {
    "default": {
        "BACKEND": "django_tasks_db.DatabaseBackend",
        "QUEUES": ["default", "slow"],
    }
}

CHANNELS_EVENTS: dict[str, Any] = {"CHANNEL_LAYER": None}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"channels_events": {"handlers": ["stderr"], "level": "INFO"}},
}

if os.environ.get("CE_TASKS_TRACE_FILE"):
    from tests.tracefile import install as _install_tracing

    _install_tracing(os.environ["CE_TASKS_TRACE_FILE"])
