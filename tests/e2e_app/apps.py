from __future__ import annotations

from django.apps import AppConfig


class E2eAppConfig(AppConfig):
    name = "tests.e2e_app"
    label = "e2e_app"

    def ready(self) -> None:
        """Publish ``shop::Order::*`` events for every save of ``tests.testapp.models.Order``."""
        from channels_events import observe
        from tests.testapp.models import Order

        observe(Order, namespace="shop")
