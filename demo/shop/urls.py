"""URLs of the shop dashboard and its order pages."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("orders/", views.order_list, name="order-list"),
    path("orders/new/", views.order_create, name="order-create"),
    path("orders/<int:pk>/", views.order_detail, name="order-detail"),
    path("orders/<int:pk>/advance/", views.order_advance, name="order-advance"),
    path("orders/<int:pk>/delete/", views.order_delete, name="order-delete"),
]
