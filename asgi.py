"""ASGI entry point for the demo project: ``daphne asgi:application`` (or uvicorn, hypercorn)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

# Set up Django (apps, settings) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402
from django.urls import path  # noqa: E402

from channels_events import HubMiddleware  # noqa: E402
from consumers.events import BrowserEventStream  # noqa: E402
from consumers.example import OrderFeed  # noqa: E402

websocket_routes = [
    path("ws/events/", BrowserEventStream.as_asgi()),
    path("ws/orders/", OrderFeed.as_asgi()),
]

# HubMiddleware runs this process's hub on the server's loop, so listeners
# and websockets here hear events dispatched in other processes: from
# lifespan.startup under uvicorn or hypercorn, from the first connection
# under daphne (which sends no lifespan events).
application = HubMiddleware(
    ProtocolTypeRouter(
        {
            # The demo serves its own static files (the JS client) when DEBUG is on.
            "http": ASGIStaticFilesHandler(django_asgi_app) if settings.DEBUG else django_asgi_app,
            "websocket": AllowedHostsOriginValidator(
                AuthMiddlewareStack(URLRouter(websocket_routes))
            ),
        }
    )
)
