"""The demo's shop: orders whose changes appear live on the dashboard."""

from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "demo.shop"
    label = "shop"
    default_auto_field = "django.db.models.BigAutoField"
