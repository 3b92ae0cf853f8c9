from __future__ import annotations

import os

from django.apps import AppConfig


class E2eAppConfig(AppConfig):
    name = "tests.e2e_app"
    label = "e2e_app"

    def ready(self) -> None:
        """Publish ``shop::Order::*`` events for every save of ``tests.testapp.models.Order``."""
        from channels_events import observe
        from tests.testapp.models import Order

        observe(Order, namespace="shop")
        if os.environ.get("CE_E2E_TRACE_FILE"):
            # A listener here, so that remote delivery shows in the trace.
            from channels_events import connect

            connect(lambda event: None, r"shop::Order::created", dispatch_uid="e2e-traced")
