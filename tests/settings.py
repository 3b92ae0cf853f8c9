"""Django settings for the channels-events test suite.

``CHANNELS_EVENTS_TEST_DB`` picks the database: ``sqlite`` (default, in-memory) or
``postgres`` (127.0.0.1:5432, user ``postgres``).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured

SECRET_KEY = "channels-events-test-secret-key"
DEBUG = False
USE_TZ = True

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "channels_events",
    "tests.testapp",
    # The Tasks backport's database backend: its table exists in the test
    # database (tests/test_tasks.py runs workers on it). TASKS is left
    # unset here, so task listeners declared in this process run through
    # the default ImmediateBackend.
    "django_tasks",
    "django_tasks_db",
]

_TEST_DB = os.environ.get("CHANNELS_EVENTS_TEST_DB", "sqlite").strip().lower() or "sqlite"

DATABASES: dict[str, dict[str, Any]]
if _TEST_DB == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": ":memory:",
        }
    }
elif _TEST_DB == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "channels_events",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": "5432",
        }
    }
else:
    raise ImproperlyConfigured(
        f"CHANNELS_EVENTS_TEST_DB must be 'sqlite' or 'postgres', got {_TEST_DB!r}"
    )

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CHANNELS_EVENTS: dict[str, Any] = {}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
