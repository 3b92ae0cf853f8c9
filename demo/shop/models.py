"""The demo's one model."""

from __future__ import annotations

from django.db import models

#: The order of statuses an order moves through.
STATUSES = ["new", "paid", "shipped", "delivered"]


class Order(models.Model):
    number = models.CharField(max_length=20, unique=True)
    customer = models.CharField(max_length=100)
    status = models.CharField(
        max_length=20, choices=[(s, s.title()) for s in STATUSES], default="new"
    )
    total = models.DecimalField(max_digits=10, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Order {self.number}"

    def next_status(self) -> str | None:
        """Return the status after this one, or None when delivered."""
        index = STATUSES.index(self.status)
        return STATUSES[index + 1] if index + 1 < len(STATUSES) else None
