"""ASGI entry point for the demo project: ``daphne asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")

# Set up Django (apps, settings) before importing anything that touches models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from channels_events.hub import HubMiddleware  # noqa: E402

# HubMiddleware starts this process's hub on daphne's loop at the first
# connection, so listeners here hear events dispatched in other processes.
application = HubMiddleware(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            # "websocket": routes to the consumers in consumers/ go here.
        }
    )
)
