"""Settings for the channels-events demo project (development use only)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from demo.layer import choose

BASE_DIR = Path(__file__).resolve().parent


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = _env_flag("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-demo-key-do-not-use-in-production")
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "channels_events",
    "demo.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Events a page's own requests cause skip that page's connection (to others).
    "channels_events.ToOthersMiddleware",
]

ROOT_URLCONF = "demo.urls"
ASGI_APPLICATION = "asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DEMO_DB_PATH") or BASE_DIR / "db.sqlite3",
    }
}

# Redis when one answers at REDIS_URL (or DEMO_CHANNEL_LAYER=redis), else the
# in-memory layer, which the page and shop_simulate warn about: demo/layer.py.
DEMO_LAYER_CHOICE = choose(os.environ)
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if DEMO_LAYER_CHOICE.kind == "redis":
    _REDIS = {
        "hosts": [DEMO_LAYER_CHOICE.redis_url],
        "prefix": os.environ.get("REDIS_PREFIX", "asgi"),
    }
    CHANNEL_LAYERS = {
        # For Channels consumers of your own.
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": _REDIS},
        # The hub's own layer: one Redis read per event, however many
        # websockets a process serves (docs/processes.md: "Which Redis layer").
        "events": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": _REDIS},
    }
else:
    # One process only: manage.py check says so (channels_events.I001), and so
    # do the page and shop_simulate.
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CHANNELS_EVENTS: dict[str, Any] = {
    "CHANNEL_LAYER": "events" if DEMO_LAYER_CHOICE.kind == "redis" else "default",
    # Browsers may subscribe to namespace "shop" and nothing else.
    "SUBSCRIBE_POLICY": "demo.policy.can_subscribe",
    # The stats stream of the operations page (/ops/, staff only).
    "OPS_NAMESPACE": "ops",
    # Who is watching the dashboard: users by name, visitors as guests.
    "PRESENCE_POLICY": "demo.policy.watcher",
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
